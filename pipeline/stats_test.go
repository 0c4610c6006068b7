package pipeline

import (
	"context"
	"errors"
	"testing"

	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Stats counts records by entity and the op header they carry (a key
// change is a tombstone and an update), those in flight, acknowledged and
// refused.
func TestStatsCountRecords(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	prod := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), prod)
	var ack countAck
	for _, c := range []*source.Change{
		change(table, source.OpSnapshot, accountRow(1, 1), nil),
		change(table, source.OpInsert, accountRow(2, 1), nil),
		change(table, source.OpUpdate, accountRow(2, 2), nil),
		change(table, source.OpUpdate, accountRow(3, 2), keyOnly(2)), // key change: tombstone + record
		change(table, source.OpDelete, nil, keyOnly(3)),
	} {
		if err := p.handle(t.Context(), c, &ack); err != nil {
			t.Fatal(err)
		}
	}
	got := p.Stats()
	want := OpCounts{Snapshot: 1, Insert: 1, Update: 2, Delete: 2}
	if len(got.Records) != 1 || got.Records[0] != want || got.InFlight != 6 || got.Acknowledged != 0 {
		t.Fatalf("after handing over: got %+v, want records %+v, 6 in flight, 0 acknowledged", got, want)
	}
	for i := range 5 {
		prod.complete(i, nil)
	}
	prod.complete(5, errors.New("broker says no"))
	got = p.Stats()
	if got.InFlight != 0 || got.Acknowledged != 5 || got.ProduceErrors != 1 || got.Records[0] != want {
		t.Errorf("after the promises: got %+v, want 0 in flight, 5 acknowledged, 1 produce error, records %+v", got, want)
	}
}

// gateProducer blocks every Produce after the first until released, as
// kgo does with a full buffer.
type gateProducer struct {
	fakeProducer
	entered chan struct{}
	release chan struct{}
}

func (g *gateProducer) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if len(g.produced()) > 0 {
		g.entered <- struct{}{}
		<-g.release
	}
	g.fakeProducer.Produce(ctx, r, promise)
}

// Back-pressure is the time a Produce waited with the buffer full; below
// the buffer limit nothing is timed.
func TestStatsBackPressure(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	prod := &gateProducer{entered: make(chan struct{}), release: make(chan struct{})}
	p := New(newEntities(t, table, "accounts"), prod, WithBufferLimit(1))
	var ack countAck
	if err := p.handle(t.Context(), change(table, source.OpInsert, accountRow(1, 1), nil), &ack); err != nil {
		t.Fatal(err)
	}
	if bp := p.Stats().BackPressure; bp != 0 {
		t.Fatalf("back-pressure %v below the buffer limit, want 0", bp)
	}
	done := make(chan error, 1)
	go func() {
		done <- p.handle(context.Background(), change(table, source.OpInsert, accountRow(2, 1), nil), &ack)
	}()
	<-prod.entered // Produce is blocked: the buffer is full
	close(prod.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if bp := p.Stats().BackPressure; bp <= 0 {
		t.Errorf("back-pressure %v after a blocked Produce, want > 0", bp)
	}
}
