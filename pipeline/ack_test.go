package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

var errBroker = errors.New("broker says no")

// A change made of one record is acknowledged once, when that record is.
func TestAckOneRecord(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	full := accountsTable()
	full.Identity, full.IdentityFull = nil, true
	tests := []struct {
		name    string
		c       *source.Change
		wantNil bool // tombstone
	}{
		{name: "insert", c: change(table, source.OpInsert, accountRow(1, 1), nil)},
		{name: "snapshot", c: change(table, source.OpSnapshot, accountRow(1, 1), nil)},
		{name: "update", c: change(table, source.OpUpdate, accountRow(1, 2), nil)},
		{name: "update same key identity full", c: change(full, source.OpUpdate, accountRow(1, 2), accountRow(1, 1))},
		{name: "delete", c: change(table, source.OpDelete, nil, keyOnly(1)), wantNil: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeProducer{}
			p := New(newEntities(t, table, "accounts"), fake)
			var ack countAck
			if err := p.handle(t.Context(), tt.c, &ack); err != nil {
				t.Fatalf("handle: %v", err)
			}
			recs := fake.produced()
			if len(recs) != 1 {
				t.Fatalf("records: got %d, want 1", len(recs))
			}
			if got := recs[0].r.Value == nil; got != tt.wantNil {
				t.Errorf("tombstone: got %v, want %v", got, tt.wantNil)
			}
			if n := ack.count(); n != 0 {
				t.Fatalf("acks before Kafka acknowledged: got %d, want 0", n)
			}
			fake.complete(0, nil)
			if n := ack.count(); n != 1 {
				t.Errorf("acks after Kafka acknowledged: got %d, want 1", n)
			}
			if err := p.Flush(t.Context()); err != nil {
				t.Errorf("Flush: got %v, want nil", err)
			}
		})
	}
}

// A key change is a tombstone of the old key, then the record of the new
// key, and is acknowledged once, after both, in whichever order Kafka
// acknowledges them (they may sit on different partitions).
func TestAckKeyChangeAfterBothRecords(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	for _, tt := range []struct {
		name  string
		order [2]int
	}{
		{"tombstone acknowledged first", [2]int{0, 1}},
		{"record acknowledged first", [2]int{1, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeProducer{}
			p := New(newEntities(t, table, "accounts"), fake)
			var ack countAck
			if err := p.handle(t.Context(), change(table, source.OpUpdate, accountRow(2, 2), keyOnly(1)), &ack); err != nil {
				t.Fatalf("handle: %v", err)
			}
			recs := fake.produced()
			if len(recs) != 2 {
				t.Fatalf("records: got %d, want 2", len(recs))
			}
			oldKey, err := p.entities[0].Mapping.AppendKey(mapping.AppendConfluentHeader(nil, keySchemaID), keyOnly(1))
			if err != nil {
				t.Fatal(err)
			}
			if tomb := recs[0].r; tomb.Value != nil || !bytes.Equal(tomb.Key, oldKey) {
				t.Errorf("first record: got key %x value %x, want the tombstone of key %x", tomb.Key, tomb.Value, oldKey)
			}
			if rec := recs[1].r; rec.Value == nil || headers(t, rec)[cdc.HeaderOp] != "u" {
				t.Errorf("second record: got value %x op %q, want the new record with op u", rec.Value, headers(t, rec)[cdc.HeaderOp])
			}

			fake.complete(tt.order[0], nil)
			if n := ack.count(); n != 0 {
				t.Fatalf("acks after one of two records: got %d, want 0", n)
			}
			fake.complete(tt.order[1], nil)
			if n := ack.count(); n != 1 {
				t.Errorf("acks after both records: got %d, want 1", n)
			}
		})
	}
}

// Many key changes whose records are acknowledged concurrently, from two
// goroutines as two partitions would: each change exactly once. Run with
// -race: it covers the reuse of pairAck values.
func TestAckKeyChangesConcurrently(t *testing.T) {
	t.Parallel()
	const n = 2000
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)
	acks := make([]countAck, n)
	for i := range n {
		c := change(table, source.OpUpdate, accountRow(int64(2*i+1), 2), keyOnly(int64(2*i)))
		if err := p.handle(t.Context(), c, &acks[i]); err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
		if i%50 == 49 { // complete in waves, so pairAck values get reused
			completeConcurrently(fake)
		}
	}
	completeConcurrently(fake)
	for i := range acks {
		if got := acks[i].count(); got != 1 {
			t.Fatalf("change %d: got %d acks, want 1", i, got)
		}
	}
}

// completeConcurrently acknowledges every record not yet acknowledged:
// tombstones (even positions) and records (odd) from two goroutines.
func completeConcurrently(f *fakeProducer) {
	f.mu.Lock()
	pending := f.sent
	f.sent = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	for parity := range 2 {
		wg.Go(func() {
			for i := parity; i < len(pending); i += 2 {
				pending[i].promise(pending[i].r, nil)
			}
		})
	}
	wg.Wait()
}

// A failed record is never acknowledged: not alone, not as half of a key
// change. The failure stops the pipeline: Handle and Flush return it.
func TestProduceFailureStopsThePipeline(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	for _, tt := range []struct {
		name     string
		c        *source.Change
		outcomes []error // per record
	}{
		{"record fails", change(table, source.OpInsert, accountRow(1, 1), nil), []error{errBroker}},
		{"key change, tombstone fails", change(table, source.OpUpdate, accountRow(2, 2), keyOnly(1)), []error{errBroker, nil}},
		{"key change, record fails", change(table, source.OpUpdate, accountRow(2, 2), keyOnly(1)), []error{nil, errBroker}},
		{"key change, both fail", change(table, source.OpUpdate, accountRow(2, 2), keyOnly(1)), []error{errBroker, errBroker}},
		// Context errors while the run goes on are failures, not a stop:
		// a dial timeout, a canceled request inside the client.
		{"timeout", change(table, source.OpInsert, accountRow(1, 1), nil), []error{fmt.Errorf("%w: dial: %w", errBroker, context.DeadlineExceeded)}},
		{"canceled, run alive", change(table, source.OpInsert, accountRow(1, 1), nil), []error{fmt.Errorf("%w: %w", errBroker, context.Canceled)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeProducer{}
			p := New(newEntities(t, table, "accounts"), fake)
			var ack countAck
			if err := p.handle(t.Context(), tt.c, &ack); err != nil {
				t.Fatalf("handle: %v", err)
			}
			for i, err := range tt.outcomes {
				fake.complete(i, err)
			}
			if n := ack.count(); n != 0 {
				t.Errorf("acks of the failed change: got %d, want 0", n)
			}
			if err := p.Err(); !errors.Is(err, errBroker) {
				t.Errorf("Err: got %v, want %v", err, errBroker)
			}
			var later countAck
			err := p.handle(t.Context(), change(table, source.OpInsert, accountRow(3, 1), nil), &later)
			if !errors.Is(err, errBroker) {
				t.Errorf("later handle: got %v, want %v", err, errBroker)
			}
			if got, want := len(fake.produced()), len(tt.outcomes); got != want {
				t.Errorf("records: got %d, want %d (nothing after the failure)", got, want)
			}
			if err := p.Flush(t.Context()); !errors.Is(err, errBroker) {
				t.Errorf("Flush: got %v, want %v", err, errBroker)
			}
		})
	}
}

// Flush must not report success while a promise has yet to run. kgo's
// Flush does not wait for records that failed before they were buffered
// (the fake models that): their promises run later, on another goroutine,
// and the failure they carry is what Flush has to return.
func TestFlushWaitsForEveryPromise(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)
	var ack countAck
	if err := p.handle(t.Context(), change(table, source.OpInsert, accountRow(1, 1), nil), &ack); err != nil {
		t.Fatalf("handle: %v", err)
	}

	done, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Flush(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a promise outstanding and a canceled context: got %v, want %v", err, context.Canceled)
	}

	go fake.complete(0, errBroker)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := p.Flush(ctx); !errors.Is(err, errBroker) {
		t.Fatalf("Flush: got %v, want %v", err, errBroker)
	}
	if n := ack.count(); n != 0 {
		t.Errorf("acks: got %d, want 0", n)
	}
}

// Against real kgo: a record larger than the producer's buffer fails before
// it is buffered, its promise runs on a kgo goroutine, and Flush returns
// at once. Flush still has to report the failure, every time.
func TestFlushReportsFailureBeforeBuffering(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 1, nil)
	table := accountsTable()
	cfg := broker.ProducerConfig{BatchMaxBytes: 1024, MaxBufferedBytes: 1024}
	cl := newClient(t, b.Addr(), &cfg)

	big := accountRow(1, 1)
	big[colNote] = strings.Repeat("x", 4096)
	for i := range 50 {
		p := New(newEntities(t, table, topic), cl)
		var ack countAck
		if err := p.handle(t.Context(), change(table, source.OpInsert, big, nil), &ack); err != nil {
			t.Fatalf("round %d: handle: %v", i, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		err := p.Flush(ctx)
		cancel()
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("round %d: Flush: got %v, want %v", i, err, kerr.MessageTooLarge)
		}
		if n := ack.count(); n != 0 {
			t.Fatalf("round %d: acks: got %d, want 0", i, n)
		}
	}
}

// A record the broker refuses for good (larger than the topic's
// max.message.bytes: MessageTooLarge, not retried) is never acknowledged;
// Flush, Err and every later Handle return the failure, and nothing more is
// produced.
func TestBrokerRejectsRecord(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	table := accountsTable()
	big := accountRow(2, 2)
	big[colNote] = strings.Repeat("x", 4096)

	for _, tt := range []struct {
		name    string
		c       *source.Change
		records int64 // the change makes
	}{
		{"insert", change(table, source.OpInsert, big, nil), 1},
		{"key change", change(table, source.OpUpdate, big, keyOnly(1)), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topic := topicName(t)
			ensureTopic(t, b.Addr(), topic, 1, map[string]string{"max.message.bytes": "1024"})
			cl := newClient(t, b.Addr(), &broker.ProducerConfig{})
			p := New(newEntities(t, table, topic), cl)
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()

			var first, failed, later countAck
			if err := p.handle(ctx, change(table, source.OpInsert, accountRow(1, 1), nil), &first); err != nil {
				t.Fatalf("handle first: %v", err)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatalf("Flush after the first change: %v", err)
			}
			if n := first.count(); n != 1 {
				t.Fatalf("acks of the first change: got %d, want 1", n)
			}
			before := endOffsetSum(t, b.Addr(), topic)

			if err := p.handle(ctx, tt.c, &failed); err != nil {
				t.Fatalf("handle the oversized change: got %v, want nil (the failure is asynchronous)", err)
			}
			err := p.Flush(ctx)
			if !errors.Is(err, kerr.MessageTooLarge) || !strings.Contains(err.Error(), topic) {
				t.Fatalf("Flush: got %v, want %v naming topic %s", err, kerr.MessageTooLarge, topic)
			}
			if n := failed.count(); n != 0 {
				t.Errorf("acks of the rejected change: got %d, want 0", n)
			}
			if err := p.Err(); !errors.Is(err, kerr.MessageTooLarge) {
				t.Errorf("Err: got %v, want %v", err, kerr.MessageTooLarge)
			}
			if err := p.handle(ctx, change(table, source.OpInsert, accountRow(3, 1), nil), &later); !errors.Is(err, kerr.MessageTooLarge) {
				t.Errorf("handle after the failure: got %v, want %v", err, kerr.MessageTooLarge)
			}
			if err := p.Flush(ctx); !errors.Is(err, kerr.MessageTooLarge) {
				t.Errorf("second Flush: got %v, want %v", err, kerr.MessageTooLarge)
			}
			if n := later.count(); n != 0 {
				t.Errorf("acks of the change after the failure: got %d, want 0", n)
			}
			// The record is refused; at most the key change's tombstone
			// (in a batch of its own) got in.
			after := endOffsetSum(t, b.Addr(), topic)
			if added := after - before; added > tt.records-1 {
				t.Errorf("records written after the failure: got %d, want at most %d", added, tt.records-1)
			}
		})
	}
}

// Acknowledgements through a real client: a key change is acknowledged
// once, after Kafka has both records.
func TestAckThroughKafka(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 6, nil)
	table := accountsTable()
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	changes := []*source.Change{
		change(table, source.OpInsert, accountRow(1, 1), nil),
		change(table, source.OpUpdate, accountRow(2, 2), keyOnly(1)),
		change(table, source.OpDelete, nil, keyOnly(2)),
	}
	acks := make([]countAck, len(changes))
	for i, c := range changes {
		if err := p.handle(ctx, c, &acks[i]); err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for i := range acks {
		if n := acks[i].count(); n != 1 {
			t.Errorf("change %d (%v): got %d acks, want 1", i, changes[i].Op, n)
		}
	}
	recs := consume(t, b.Addr(), topic, 4)
	var tombstones int
	for _, r := range recs {
		if r.Value == nil {
			tombstones++
		}
	}
	if tombstones != 2 {
		t.Errorf("tombstones: got %d, want 2 (old key of the key change, the delete)", tombstones)
	}
}

var _ producer = (*kgo.Client)(nil)
