package sink

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// stallingRegistry answers no request: each waits for its context to end,
// after saying on entered that the sink is starting.
type stallingRegistry struct{ entered chan struct{} }

func (r stallingRegistry) SchemaByID(ctx context.Context, _ int) (sr.Schema, error) {
	r.signal()
	<-ctx.Done()
	return sr.Schema{}, ctx.Err()
}

func (r stallingRegistry) SchemaByVersion(ctx context.Context, _ string, _ int) (sr.SubjectSchema, error) {
	r.signal()
	<-ctx.Done()
	return sr.SubjectSchema{}, ctx.Err()
}

func (r stallingRegistry) signal() {
	select {
	case r.entered <- struct{}{}:
	default:
	}
}

// TestStopWhileStartingIsClean stops a sink while it starts, before it
// joins its group: Run returns nil, as for a stop between batches, so that
// `replicator sink` exits 0 on SIGTERM whenever it arrives. It once
// reported the read model as failed when the stop came while the sink read
// the table's columns or the schemas.
func TestStopWhileStartingIsClean(t *testing.T) {
	t.Parallel()
	m := customerModel("profile")
	newSink := func(t *testing.T, storeURL string, reg schemaRegistry) *Sink {
		s, err := New(Config{Model: m, StoreURL: storeURL, Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Registry: reg})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return s
	}
	t.Run("while reading the schemas", func(t *testing.T) {
		reg := stallingRegistry{entered: make(chan struct{}, 1)}
		s := newSink(t, sqliteStore().fresh(t), reg)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		select {
		case <-reg.entered:
		case err := <-done:
			t.Fatalf("Run returned before it read the schemas: %v", err)
		case <-time.After(testTimeout):
			t.Fatal("the sink did not read the schemas")
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after a stop while it read the schemas: %v, want nil", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Run did not return after the stop")
		}
		if got := s.State(); got != StateStopped {
			t.Errorf("state %v, want %v", got, StateStopped)
		}
	})
	for _, k := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run("before the "+k.name+" store answers", func(t *testing.T) {
			s := newSink(t, k.fresh(t), stallingRegistry{entered: make(chan struct{}, 1)})
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := s.Run(ctx); err != nil {
				t.Fatalf("Run stopped before it started: %v, want nil", err)
			}
		})
	}
}
