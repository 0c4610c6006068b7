package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

func topicKeys(t *testing.T, addr string) *TopicKeys {
	t.Helper()
	opts, err := broker.Config{Brokers: []string{addr}, ClientID: "pipeline-test"}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	return NewTopicKeys(opts...)
}

// TestTruncateTombstonesLiveKeys: every key whose latest record is a value
// gets a tombstone, acknowledged as one change; a record after the
// TRUNCATE follows its key's tombstone. Keys 3 (deleted) and 4 (moved to
// 40) had a value before, so they get a tombstone too, which changes
// nothing.
func TestTruncateTombstonesLiveKeys(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}), WithLiveKeys(topicKeys(t, b.Addr())))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var acks countAck
	handle := func(c *source.Change) {
		t.Helper()
		if err := p.handle(ctx, c, &acks); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	for id := int64(1); id <= 10; id++ {
		handle(change(table, source.OpInsert, accountRow(id, 1), nil))
	}
	handle(change(table, source.OpDelete, nil, keyOnly(3)))
	handle(change(table, source.OpUpdate, accountRow(40, 2), keyOnly(4)))

	var truncAck countAck
	tc := change(table, source.OpTruncate, nil, nil)
	if err := p.truncate(ctx, tc, &truncAck); err != nil {
		t.Fatalf("Truncate: %v", err)
	}
	handle(change(table, source.OpInsert, accountRow(1, 3), nil))
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := truncAck.count(); got != 1 {
		t.Errorf("truncate acks: got %d, want 1", got)
	}
	if got := acks.count(); got != 13 {
		t.Errorf("change acks: got %d, want 13", got)
	}
	// 10 inserts, a delete, a key change (2), 11 keys that had a value,
	// an insert.
	records := consume(t, b.Addr(), topic, 25)
	latest := map[string]*kgo.Record{}
	truncTombstones := 0
	for _, r := range records {
		latest[string(r.Key)] = r
		if op := headers(t, r)[cdc.HeaderOp]; r.Value == nil && op != "d" {
			t.Errorf("tombstone op header: got %q, want d", op)
		}
	}
	e := p.entities[0].Mapping
	for key, r := range latest {
		id := decodeFramed(t, "key", []byte(key), keySchemaID, e.KeySchema())["id"]
		switch {
		case id == int64(1):
			if r.Value == nil {
				t.Errorf("key 1: latest is a tombstone, want the row inserted after the TRUNCATE")
			}
		case r.Value != nil:
			t.Errorf("key %v: latest is a value, want a tombstone", id)
		default:
			truncTombstones++
		}
	}
	if len(latest) != 11 || truncTombstones != 10 {
		t.Errorf("keys: got %d (%d ending in a tombstone), want 11 (10)", len(latest), truncTombstones)
	}
}

// TestTruncateMemoryIsBounded: with thousands of keys, some updated and
// some deleted, a TRUNCATE remembering at most 50 keys still leaves every
// key's latest record a tombstone, acknowledged as one change, and never
// holds more than 50 keys (reading the whole set first held them all).
func TestTruncateMemoryIsBounded(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	const bound = 50
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}),
		WithLiveKeys(topicKeys(t, b.Addr())), WithTruncateDedupeKeys(bound))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var acks countAck
	const keys = 3000
	var changes int32
	for round := int32(1); round <= 2; round++ {
		for id := int64(1); id <= keys; id++ {
			c := change(table, source.OpInsert, accountRow(id, round), nil)
			if round == 2 {
				c = change(table, source.OpUpdate, accountRow(id, round), nil)
				if id%10 == 0 {
					c = change(table, source.OpDelete, nil, keyOnly(id))
				}
			}
			if err := p.handle(ctx, c, &acks); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			changes++
		}
	}
	var truncAck countAck
	if err := p.truncate(ctx, change(table, source.OpTruncate, nil, nil), &truncAck); err != nil {
		t.Fatalf("Truncate: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := truncAck.count(); got != 1 {
		t.Errorf("truncate acks: got %d, want 1", got)
	}
	if got := acks.count(); got != changes {
		t.Errorf("change acks: got %d, want %d", got, changes)
	}
	if p.truncatePeak > bound || p.truncatePeak == 0 {
		t.Errorf("keys held by the TRUNCATE: got at most %d, want 1..%d", p.truncatePeak, bound)
	}

	latest := map[string]bool{} // key → latest record has a value
	tombstones := 0
	_, err := broker.ReadToEnd(ctx, topicKeys(t, b.Addr()).opts, topic, nil, func(r *kgo.Record) error {
		latest[string(r.Key)] = r.Value != nil
		if r.Value == nil {
			tombstones++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	if len(latest) != keys {
		t.Errorf("keys on the topic: got %d, want %d", len(latest), keys)
	}
	for k, live := range latest {
		if live {
			t.Errorf("key %x: latest record is a value, want the TRUNCATE's tombstone", k)
		}
	}
	// The deletes' tombstones, then at least one per key (every key had a
	// value), at most one per record with a value (two per key).
	if got := tombstones - keys/10; got < keys || got > 2*keys {
		t.Errorf("TRUNCATE tombstones: got %d, want %d to %d", got, keys, 2*keys)
	}
}

func TestTruncateFailAndEmpty(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 1, nil)
	table := accountsTable()

	t.Run("fail", func(t *testing.T) {
		ents := newEntities(t, table, topic)
		ents[0].OnTruncate = TruncateFail
		ents[0].Spec.Name = "account"
		prod := &fakeProducer{}
		p := New(ents, prod, WithLiveKeys(topicKeys(t, b.Addr())))
		var ack countAck
		err := p.truncate(t.Context(), change(table, source.OpTruncate, nil, nil), &ack)
		for _, w := range []string{"TRUNCATE of public.accounts at LSN 0/16B3748", "on_truncate: fail", "entities[0].on_truncate: tombstone"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("got %v, want an error containing %q", err, w)
			}
		}
		if n := len(prod.produced()); n != 0 || ack.count() != 0 {
			t.Errorf("got %d records and %d acks, want none", n, ack.count())
		}
	})
	t.Run("empty topic", func(t *testing.T) {
		prod := &fakeProducer{}
		p := New(newEntities(t, table, topic), prod, WithLiveKeys(topicKeys(t, b.Addr())))
		var ack countAck
		if err := p.truncate(t.Context(), change(table, source.OpTruncate, nil, nil), &ack); err != nil {
			t.Fatalf("Truncate: %v", err)
		}
		if n := len(prod.produced()); n != 0 || ack.count() != 1 {
			t.Errorf("got %d records and %d acks, want none and 1", n, ack.count())
		}
	})
	t.Run("after an abandoned record", func(t *testing.T) {
		prod := &fakeProducer{}
		p := New(newEntities(t, table, topic), prod, WithLiveKeys(topicKeys(t, b.Addr())))
		p.abandoned.Store(true) // a stop gave up on a record before this TRUNCATE
		var ack countAck
		if err := p.truncate(t.Context(), change(table, source.OpTruncate, nil, nil), &ack); !errors.Is(err, errAbandoned) {
			t.Errorf("Truncate: got %v, want errAbandoned", err)
		}
		if n := len(prod.produced()); n != 0 || ack.count() != 0 {
			t.Errorf("got %d records and %d acks, want none: nothing is acknowledged after an abandoned record", n, ack.count())
		}
	})
	t.Run("stopping", func(t *testing.T) {
		prod := &fakeProducer{}
		p := New(newEntities(t, table, topic), prod, WithLiveKeys(topicKeys(t, b.Addr())))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var ack countAck
		if err := p.truncate(ctx, change(table, source.OpTruncate, nil, nil), &ack); !errors.Is(err, context.Canceled) {
			t.Errorf("Truncate: got %v, want context.Canceled", err)
		}
		if n := len(prod.produced()); n != 0 || ack.count() != 0 {
			t.Errorf("got %d records and %d acks, want none", n, ack.count())
		}
	})
	t.Run("no reader", func(t *testing.T) {
		p := New(newEntities(t, table, topic), &fakeProducer{})
		if err := p.truncate(t.Context(), change(table, source.OpTruncate, nil, nil), &countAck{}); err == nil || !strings.Contains(err.Error(), "cannot read topic") {
			t.Errorf("got %v, want an error saying the topic cannot be read", err)
		}
	})
}

// BenchmarkLiveKeys measures reading a topic's keys, what a TRUNCATE costs
// besides its tombstones: b.N rounds over 200,000 records of 100,000
// keys on 3 partitions of an in-process broker.
func BenchmarkLiveKeys(b *testing.B) {
	br := startBroker(b)
	topic := topicName(b)
	ensureTopic(b, br.Addr(), topic, 3, nil)
	table := accountsTable()
	p := New(newEntities(b, table, topic), newClient(b, br.Addr(), &broker.ProducerConfig{}))
	ctx := b.Context()
	const keys, records = 100_000, 200_000
	for i := range records {
		id := int64(i % keys)
		c := change(table, source.OpInsert, accountRow(id, int32(i)), nil)
		if i%10 == 9 {
			c = change(table, source.OpDelete, nil, keyOnly(id))
		}
		if err := p.handle(ctx, c, &countAck{}); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	opts, err := broker.Config{Brokers: []string{br.Addr()}}.ClientOptions()
	if err != nil {
		b.Fatal(err)
	}
	r := NewTopicKeys(opts...)
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := r.EachKey(ctx, topic, func([]byte, bool) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != records {
			b.Fatalf("records read: got %d, want %d", n, records)
		}
	}
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
