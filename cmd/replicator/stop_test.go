package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/source"
)

// stopOnLine is the process's stderr that stops it (cancels its context,
// as SIGTERM does) when a line containing want is written: inside the log
// call, so the step after that line starts stopped.
type stopOnLine struct {
	mu   sync.Mutex // guards out
	out  bytes.Buffer
	want string
	stop context.CancelFunc
}

func (w *stopOnLine) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte(w.want)) {
		w.stop()
	}
	return w.out.Write(p)
}

func (w *stopOnLine) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String()
}

// TestRunStopDuringStartIsClean stops `replicator run` right after each
// step of its start (its log lines, in order), and of a republish it runs
// (the daemon side of `replicator republish`): every stop is a clean one,
// run returns nil (exit status 0). A context-canceled error of the step
// after (the publication, the slot, the snapshot, the embedded services,
// the registry, a republish's chunks) reported as a failure exits 1,
// which is how a SIGTERM during the start of `replicator sink` once
// failed CI.
func TestRunStopDuringStartIsClean(t *testing.T) {
	pg := pgtest.Start(t)
	for i, step := range []string{
		`msg="serving metrics"`,
		`msg="embedded Kafka broker listening"`,
		`msg="embedded schema registry listening"`,
		`msg="created publication"`,
		`msg="created replication slot"`,
		`msg="initial snapshot started"`,
		`msg="snapshot table read"`,
		`msg="initial snapshot complete"`,
		`msg=streaming`,
		// A republish with reconcile, requested once run streams.
		`msg="` + source.LogRepublishRequested + `"`,
		`msg="` + source.LogRepublishStarted + `"`,
		`msg="` + source.LogRepublishTableDone + `"`,
		`msg="` + source.LogReconciled + `"`,
	} {
		republish := strings.Contains(step, "republish") || strings.Contains(step, "reconcile")
		name, _, _ := strings.Cut(strings.Trim(strings.TrimPrefix(step, "msg="), `"`), ":")
		t.Run(name, func(t *testing.T) {
			// A database each: a publication and a slot of their own.
			dsn := newDatabase(t, pg, `CREATE TABLE items (id bigint PRIMARY KEY, name text);
				INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;`)
			slot := fmt.Sprintf("stop_%d", i)
			cfg := writeYAML(t, fmt.Sprintf(`
source: {url: %q, slot: %s}
data_dir: %q
kafka: {listen: %q}
registry: {listen: %q}
metrics: {listen: %q}
entities:
  - table: items
`, dsn, slot, t.TempDir(), closedAddr(t), closedAddr(t), closedAddr(t)))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stopCtx, stop := context.WithCancel(ctx)
			defer stop()
			out := &stopOnLine{want: step, stop: stop}
			done := make(chan error, 1)
			go func() { done <- run(stopCtx, []string{"run", "--config", cfg}, out, out) }()
			if republish {
				requestRepublish(t, stopCtx, out, cfg)
			}
			var err error
			select {
			case err = <-done:
			case <-ctx.Done():
				t.Fatalf("run did not return within 2 minutes; output:\n%s", out.String())
			}
			if stopCtx.Err() == nil {
				t.Fatalf("run returned (%v) without logging %s; output:\n%s", err, step, out.String())
			}
			if err != nil {
				t.Errorf("stopped after %s: run returned %v, want nil (a clean stop); output:\n%s", step, err, out.String())
			}
			dropSlot(t, dsn, slot)
		})
	}
}

// requestRepublish waits until the run logging to out streams, then
// requests a republish of every entity with reconcile, as `replicator
// republish --all --reconcile` does.
func requestRepublish(t *testing.T, ctx context.Context, out *stopOnLine, cfg string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "msg=streaming ") {
		select {
		case <-ctx.Done():
			t.Fatalf("run ended before it streamed; output:\n%s", out.String())
		case <-tick.C: // polling interval toward the run's deadline
		}
	}
	var req bytes.Buffer
	if err := run(ctx, []string{"republish", "--config", cfg, "--all", "--reconcile"}, &req, &req); err != nil {
		t.Fatalf("republish --all --reconcile: %v\n%s", err, req.String())
	}
}

// dropSlot drops replication slot name once its walsender has gone, if
// the slot exists: the test's cluster has room for few.
func dropSlot(t *testing.T, dsn, name string) {
	t.Helper()
	if !waitSlotReleased(t, dsn, name) {
		return
	}
	conn := pgtest.Connect(t, dsn)
	if _, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, name); err != nil {
		t.Fatalf("drop slot %s: %v", name, err)
	}
}

// waitSlotReleased waits until replication slot name is inactive and
// reports whether it exists. A replicator that returned has closed its
// replication connection, but PostgreSQL's walsender holds the slot until
// it has read the close and exited, a moment later on a loaded machine.
func waitSlotReleased(t *testing.T, dsn, name string) bool {
	t.Helper()
	conn := pgtest.Connect(t, dsn)
	deadline := time.Now().Add(time.Minute)
	for {
		var active *bool
		err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		if err != nil {
			t.Fatalf("look up slot %s: %v", name, err)
		}
		if !*active {
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s still active a minute after run returned", name)
		}
		time.Sleep(20 * time.Millisecond) // polling interval toward the deadline
	}
}

// TestSinkStopDuringStartIsClean is TestRunStopDuringStartIsClean for
// `replicator sink`: stopped right after each step of its start, it
// returns nil (exit status 0).
func TestSinkStopDuringStartIsClean(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	for _, step := range []string{
		`msg="serving metrics"`,
		`msg="created read-model table"`,
		`msg="partitions assigned`,
	} {
		t.Run(strings.Trim(strings.TrimPrefix(step, "msg="), `"`), func(t *testing.T) {
			cfg := sinkConfig(t, brokers, registryURL, "sqlite://"+filepath.Join(t.TempDir(), "read.db"), false)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			stopCtx, stop := context.WithCancel(ctx)
			defer stop()
			out := &stopOnLine{want: step, stop: stop}
			err := run(stopCtx, []string{"sink", "--config", cfg, "--metrics-listen", closedAddr(t)}, out, out)
			if ctx.Err() != nil {
				t.Fatalf("sink did not return within 2 minutes; output:\n%s", out.String())
			}
			if stopCtx.Err() == nil {
				t.Fatalf("sink returned (%v) without logging %s; output:\n%s", err, step, out.String())
			}
			if err != nil {
				t.Errorf("stopped after %s: sink returned %v, want nil (a clean stop); output:\n%s", step, err, out.String())
			}
		})
	}
}
