package pipeline

import (
	"bytes"
	"context"
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runChanges hands changes to a pipeline producing to topic on addr
// through a real client, flushes, and returns the topic's n records in
// offset order (topic must have one partition).
func runChanges(t *testing.T, addr string, ents []Entity, n int, changes ...*source.Change) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	p := New(ents, newClient(t, addr, &broker.ProducerConfig{}))
	for i, c := range changes {
		if err := p.Handle(ctx, c); err != nil {
			t.Fatalf("Handle change %d (%v): %v", i, c.Op, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	return consume(t, addr, ents[0].Mapping.Topic(), n)
}

// checkRecord checks an upsert record: framed key and value decoding to
// the row, and its headers.
func checkRecord(t *testing.T, r *kgo.Record, e *mapping.Entity, table *relation.Table, row []any, wantHeaders map[string]string) {
	t.Helper()
	if r.Topic != e.Topic() {
		t.Errorf("topic: got %q, want %q", r.Topic, e.Topic())
	}
	key := decodeFramed(t, "key", r.Key, keySchemaID, e.KeySchema())
	if want := rowMap(table, row, "id"); !sameMap(key, want) {
		t.Errorf("key: got %v, want %v", key, want)
	}
	if r.Value == nil {
		t.Fatalf("value: got a tombstone, want a record")
	}
	value := decodeFramed(t, "value", r.Value, valueSchemaID, e.ValueSchema())
	if want := rowMap(table, row); !sameMap(value, want) {
		t.Errorf("value:\ngot  %v\nwant %v", value, want)
	}
	checkHeaders(t, r, wantHeaders)
}

func checkHeaders(t *testing.T, r *kgo.Record, want map[string]string) {
	t.Helper()
	got := headers(t, r)
	if len(got) != len(want) {
		t.Errorf("headers: got %v, want %v", got, want)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("header %q: got %q (present %v), want %q", k, g, ok, w)
		}
	}
}

func wantHeaders(op string, withXID bool) map[string]string {
	h := map[string]string{cdc.HeaderOp: op, cdc.HeaderLSN: testLSNText, cdc.HeaderCommitTime: testCommitTimeText}
	if withXID {
		h[cdc.HeaderXID] = "4711"
	}
	return h
}

func TestHandleUpsertRecord(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	full := accountsTable()
	full.Identity, full.IdentityFull = nil, true

	nulls := accountRow(3, 1)
	for _, i := range []int{colBalance, colNote, colAvatar, colScore, colBirthday} {
		nulls[i] = nil
	}

	tests := []struct {
		name    string
		table   *relation.Table
		op      source.Op
		row     []any
		old     []any
		wantOp  string
		wantXID bool
	}{
		{name: "insert", op: source.OpInsert, row: accountRow(1, 1), wantOp: "c", wantXID: true},
		{name: "insert with nulls", op: source.OpInsert, row: nulls, wantOp: "c", wantXID: true},
		{name: "snapshot has no xid", op: source.OpSnapshot, row: accountRow(2, 1), wantOp: "r"},
		{name: "update without old tuple", op: source.OpUpdate, row: accountRow(4, 2), wantOp: "u", wantXID: true},
		// REPLICA IDENTITY FULL sends the whole old row with every update;
		// the key did not change, so there is no tombstone.
		{name: "update with same key under identity full", table: full, op: source.OpUpdate,
			row: accountRow(5, 2), old: accountRow(5, 1), wantOp: "u", wantXID: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			table := tt.table
			if table == nil {
				table = accountsTable()
			}
			topic := topicName(t)
			ensureTopic(t, b.Addr(), topic, 1, nil)
			ents := newEntities(t, table, topic)
			recs := runChanges(t, b.Addr(), ents, 1, change(table, tt.op, tt.row, tt.old))
			checkRecord(t, recs[0], ents[0].Mapping, table, tt.row, wantHeaders(tt.wantOp, tt.wantXID))
		})
	}
}

func TestHandleDeleteIsTombstone(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	full := accountsTable()
	full.Identity, full.IdentityFull = nil, true

	tests := []struct {
		name  string
		table *relation.Table
		old   []any
	}{
		{name: "identity default sends the key", table: accountsTable(), old: keyOnly(9)},
		{name: "identity full sends the row", table: full, old: accountRow(9, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topic := topicName(t)
			ensureTopic(t, b.Addr(), topic, 1, nil)
			recs := runChanges(t, b.Addr(), newEntities(t, tt.table, topic), 2,
				change(tt.table, source.OpInsert, accountRow(9, 1), nil),
				change(tt.table, source.OpDelete, nil, tt.old),
			)
			rec, tomb := recs[0], recs[1]
			if !bytes.Equal(tomb.Key, rec.Key) {
				t.Errorf("tombstone key: got %x, want the record's key %x", tomb.Key, rec.Key)
			}
			if tomb.Value != nil {
				t.Errorf("tombstone value: got %x, want nil", tomb.Value)
			}
			checkHeaders(t, tomb, wantHeaders("d", true))
		})
	}
}

func TestHandleKeyChange(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	table := accountsTable()
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 1, nil)

	newRow := accountRow(2, 2)
	ents := newEntities(t, table, topic)
	recs := runChanges(t, b.Addr(), ents, 3,
		change(table, source.OpInsert, accountRow(1, 1), nil),
		change(table, source.OpUpdate, newRow, keyOnly(1)),
	)
	old, tomb, rec := recs[0], recs[1], recs[2]

	if !bytes.Equal(tomb.Key, old.Key) {
		t.Errorf("tombstone key: got %x, want the old key's record key %x", tomb.Key, old.Key)
	}
	if tomb.Value != nil {
		t.Errorf("tombstone value: got %x, want nil", tomb.Value)
	}
	checkHeaders(t, tomb, wantHeaders("d", true))
	checkRecord(t, rec, ents[0].Mapping, table, newRow, wantHeaders("u", true))
}

// The source reuses its Change and may reuse row slices: nothing the
// pipeline hands to the producer may alias them.
func TestHandleDoesNotKeepTheChange(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)

	row := accountRow(1, 1)
	c := change(table, source.OpUpdate, row, keyOnly(7))
	if err := p.Handle(t.Context(), c); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	want := make([][]byte, 0, 2)
	for _, s := range fake.produced() {
		want = append(want, append(append([]byte(nil), s.r.Key...), s.r.Value...))
	}

	// What the source does next: overwrite the change and its rows.
	*c = source.Change{Op: source.OpDelete, Table: table, LSN: 1}
	row[colID], row[colEmail] = int64(99), "changed"
	row[colAvatar].([]byte)[0] = 0

	got := fake.produced()
	if len(got) != 2 {
		t.Fatalf("records: got %d, want 2 (tombstone, record)", len(got))
	}
	for i, s := range got {
		if kv := append(append([]byte(nil), s.r.Key...), s.r.Value...); !bytes.Equal(kv, want[i]) {
			t.Errorf("record %d changed after Handle returned: got %x, want %x", i, kv, want[i])
		}
		if h := headers(t, s.r); h[cdc.HeaderLSN] != testLSNText {
			t.Errorf("record %d lsn header after Handle returned: got %q, want %q", i, h[cdc.HeaderLSN], testLSNText)
		}
	}
}

// A row given as text makes the same record as the same row given as
// values, and the source may reuse the text once Handle returns.
func TestHandleTextRowMatchesValues(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)
	text := accountText(42, 7)
	if err := p.Handle(t.Context(), textChange(table, text)); err != nil {
		t.Fatalf("Handle text: %v", err)
	}
	if err := p.Handle(t.Context(), change(table, source.OpSnapshot, accountRow(42, 7), nil)); err != nil {
		t.Fatalf("Handle values: %v", err)
	}
	for _, v := range text {
		clear(v) // what the source does with its batch buffers next
	}
	got := fake.produced()
	if len(got) != 2 {
		t.Fatalf("records: got %d, want 2", len(got))
	}
	fromText, fromValues := got[0].r, got[1].r
	if !bytes.Equal(fromText.Key, fromValues.Key) || !bytes.Equal(fromText.Value, fromValues.Value) {
		t.Errorf("record from text: key %x value %x; from values: key %x value %x",
			fromText.Key, fromText.Value, fromValues.Key, fromValues.Value)
	}
	checkHeaders(t, fromText, wantHeaders("r", false))
}
