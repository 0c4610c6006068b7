//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"golang.org/x/sync/errgroup"
)

// TestGracefulStopUnderLoad: SIGTERM while changes stream in is a clean
// stop (exit status 0), however many records the producer holds at that
// moment and even while the stream waits for room in the producer's
// buffer: it delivers what it handed over, confirms what is acknowledged,
// and a restart carries on to a topic that converges to the table. A small
// buffer keeps the stream under back-pressure while it catches up after
// each restart; a one-second linger keeps records buffered.
func TestGracefulStopUnderLoad(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, killDDL)

	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
kafka:
  listen: %q
  partitions: 4
  linger: 1s
  max_buffered_records: 200
registry:
  listen: %q
entities:
  - table: items
  - table: lines
  - table: tags
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	const target = 150_000
	var written atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < 2; w++ {
		g.Go(func() error { return writeLoad(gctx, pg.DSN("postgres"), w, &written, target, 60*time.Millisecond) })
	}

	rng := rand.New(rand.NewPCG(3, 9))
	stops := 0
	for stops < 4 || written.Load() < target && gctx.Err() == nil {
		p := startReplicator(t, "run", "--config", cfgPath)
		waitOutput(t, p, "msg=streaming")
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited by itself (%v); output:\n%s", err, p.output.String())
		case <-time.After(time.Duration(300+rng.IntN(1200)) * time.Millisecond):
		}
		p.stop(t) // fails the test unless the exit is clean
		stops++
		t.Logf("stop %d after %d changes written", stops, written.Load())
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, conn, "replicator", p)
	assertMixedWorkloadConverged(t, conn, brokerAddr, "http://"+registryAddr)
	p.stop(t)
}
