//go:build e2e

package e2e

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestGracefulStopUnderLoad: SIGTERM while changes stream in is a clean
// stop (exit status 0), however many records the producer holds at that
// moment and even while the stream waits for room in the producer's
// buffer: it delivers what it handed over, confirms what is acknowledged,
// and a restart carries on to a topic that converges to the table. A small
// buffer keeps the stream under back-pressure while it catches up after
// each restart; a one-second linger keeps records buffered.
func TestGracefulStopUnderLoad(t *testing.T) {
	mw := startMixedWorkload(t, "  linger: 1s\n  max_buffered_records: 200\n")

	const target = 150_000
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g, gctx, written := mw.write(ctx, 2, target, 60*time.Millisecond)

	rng := rand.New(rand.NewPCG(3, 9))
	stops := 0
	for stops < 4 || written.Load() < target && gctx.Err() == nil {
		p := startReplicator(t, "run", "--config", mw.cfgPath)
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

	mw.assertConverged(t)
}
