package pipeline

import (
	"context"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReconcile: on a real broker, Reconcile tombstones exactly the keys
// whose latest record from before since is live and that have no record
// since: rows the republish did not find (5 to 8) and records produced by
// hand, without an lsn header or with one that is no LSN (98, 99); not a
// key deleted before (3), republished (the others) or changed since (4).
// Its tombstones say op d, the reconcile's LSN and the republish id; it is
// acknowledged once, after them; a record of a later change lands after
// its key's tombstone (5). A small bucket bound makes it split its bucket
// files, and it leaves nothing in the spill directory.
func TestReconcile(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	spillDir := t.TempDir()
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}),
		WithLiveKeys(topicKeys(t, b.Addr())), WithSpillDir(spillDir))
	p.spillBytes = 64 // the topic's keys take about 400 bytes: split
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	before, since := testLSN, testLSN+0x1000
	var acks countAck
	handle := func(c *source.Change, lsn pglogrepl.LSN, republish string) {
		t.Helper()
		c.LSN, c.Republish = lsn, republish
		if err := p.handle(ctx, c, &acks); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	for id := int64(1); id <= 20; id++ {
		handle(change(table, source.OpInsert, accountRow(id, 1), nil), before, "")
	}
	handle(change(table, source.OpDelete, nil, keyOnly(3)), before, "")

	e := &p.entities[0]
	hand := newClient(t, b.Addr(), &broker.ProducerConfig{})
	for id, lsn := range map[int64]string{98: "not an LSN", 99: ""} {
		key, err := p.key(e, change(table, source.OpDelete, nil, keyOnly(id)), keyOnly(id))
		if err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: topic, Key: key, Value: []byte("by hand")}
		if lsn != "" {
			r.Headers = []kgo.RecordHeader{{Key: cdc.HeaderLSN, Value: []byte(lsn)}}
		}
		if err := hand.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce key %d by hand: %v", id, err)
		}
	}

	const id = "r1"
	for k := int64(1); k <= 20; k++ {
		if k == 3 || k == 4 || (k >= 5 && k <= 8) {
			continue
		}
		handle(change(table, source.OpSnapshot, accountRow(k, 2), nil), since, id)
	}
	handle(change(table, source.OpUpdate, accountRow(4, 3), nil), since+0x100, "")

	rc := change(table, source.OpDelete, nil, nil)
	rc.LSN, rc.Republish = since+0x200, id
	var reconcileAck countAck
	if err := p.reconcile(ctx, rc, since, &reconcileAck); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	handle(change(table, source.OpInsert, accountRow(5, 4), nil), since+0x300, "")
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := reconcileAck.count(); got != 1 {
		t.Errorf("reconcile acks: got %d, want 1", got)
	}
	if got := acks.count(); got != 20+1+14+1+1 {
		t.Errorf("change acks: got %d, want 37", got)
	}

	var records []*kgo.Record
	_, err := broker.ReadToEnd(ctx, topicKeys(t, b.Addr()).opts, topic, nil, func(r *kgo.Record) error {
		records = append(records, r)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	// 20 inserts, a delete, 2 by hand, 14 republished, an update, the
	// tombstones of 6 orphans, an insert.
	if want := 20 + 1 + 2 + 14 + 1 + 6 + 1; len(records) != want {
		t.Errorf("records on the topic: got %d, want %d", len(records), want)
	}
	keyID := func(k []byte) int64 {
		t.Helper()
		return decodeFramed(t, "key", k, keySchemaID, e.Mapping.KeySchema())["id"].(int64)
	}
	latest := map[int64]*kgo.Record{}
	reconciled := map[int64]bool{}
	for _, r := range records {
		k := keyID(r.Key)
		latest[k] = r
		h := headers(t, r)
		if r.Value != nil || h[cdc.HeaderRepublish] != id {
			continue
		}
		reconciled[k] = true
		if h[cdc.HeaderOp] != "d" || h[cdc.HeaderLSN] != rc.LSN.String() {
			t.Errorf("key %d: reconcile tombstone with op %q and lsn %q, want d and %s", k, h[cdc.HeaderOp], h[cdc.HeaderLSN], rc.LSN)
		}
	}
	if got, want := slices.Sorted(maps.Keys(reconciled)), []int64{5, 6, 7, 8, 98, 99}; !slices.Equal(got, want) {
		t.Errorf("keys tombstoned by the reconcile: got %v, want %v", got, want)
	}
	for k, r := range latest {
		gone := k == 3 || (k >= 6 && k <= 8) || k >= 98
		if (r.Value == nil) != gone {
			t.Errorf("key %d: latest record has a value: %v, want %v", k, r.Value != nil, !gone)
		}
	}
	if len(latest) != 22 {
		t.Errorf("keys on the topic: got %d, want 22", len(latest))
	}
	left, err := os.ReadDir(spillDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("the spill directory holds %d entries after the reconcile, want none", len(left))
	}
}
