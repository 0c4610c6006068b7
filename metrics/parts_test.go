package metrics

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/registry"
)

// A poller that cannot reach PostgreSQL counts the failures and keeps
// going: metrics never stop replication.
func TestSlotPollerFailureIsCounted(t *testing.T) {
	t.Parallel()
	calls := make(chan struct{}, 10)
	p := NewSlotPoller(func(context.Context) (*pgx.Conn, error) {
		select {
		case calls <- struct{}{}:
		default:
		}
		return nil, errors.New("connection refused")
	}, "replicator", 0, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-calls:
	case <-time.After(30 * time.Second):
		t.Fatal("the poller did not poll within 30s")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok, errs := p.Last(); errs >= 1 {
			if ok {
				t.Error("Last reports a status although every poll failed")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed poll was not counted within 30s")
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v, want nil after the stop", err)
	}
}

// TestSlotPollerForgetsAfterAFailure: once a poll fails, Last no longer
// reports the slot it read before: a slot gauge frozen at its last value
// (active 1, the WAL retained then) would lie for as long as the poll
// fails. The slot metrics are absent instead and the error count grows.
func TestSlotPollerForgetsAfterAFailure(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	ctx := t.Context()
	if err := pg.Exec(ctx, `SELECT pg_create_logical_replication_slot('polled', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	refuse := false
	p := NewSlotPoller(func(ctx context.Context) (*pgx.Conn, error) {
		if refuse {
			return nil, errors.New("connection refused")
		}
		return pgx.Connect(ctx, pg.DSN("postgres"))
	}, "polled", 0, slog.New(slog.DiscardHandler))

	conn := p.poll(ctx, nil)
	if conn == nil {
		t.Fatal("the first poll failed")
	}
	if st, ok, errs := p.Last(); !ok || !st.Exists || errs != 0 {
		t.Fatalf("after a good poll: got %+v, ok %v, %d errors; want the slot, ok, no error", st, ok, errs)
	}

	// The connection breaks and connecting again fails.
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	refuse = true
	if next := p.poll(ctx, conn); next != nil {
		t.Fatal("a failed poll kept its connection")
	}
	if next := p.poll(ctx, nil); next != nil {
		t.Fatal("a failed connect returned a connection")
	}
	if st, ok, errs := p.Last(); ok || errs != 2 {
		t.Errorf("after two failed polls: got %+v, ok %v, %d errors; want nothing reported and 2 errors", st, ok, errs)
	}
}

type fakeEvolver struct{ err error }

func (f fakeEvolver) Evolve(context.Context, string, string, registry.Level) (int, error) {
	return 1, f.err
}

func TestSchemaCounter(t *testing.T) {
	t.Parallel()
	var c SchemaCounter
	c.Add(4)
	if _, err := c.Wrap(fakeEvolver{}).Evolve(t.Context(), "s", "{}", registry.LevelFull); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wrap(fakeEvolver{err: errors.New("incompatible")}).Evolve(t.Context(), "s", "{}", registry.LevelFull); err == nil {
		t.Fatal("the wrapped registry's error was lost")
	}
	if got := c.Count(); got != 5 {
		t.Errorf("count %d, want 5 (4 at start-up, 1 successful registration)", got)
	}
}
