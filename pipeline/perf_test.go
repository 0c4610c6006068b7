package pipeline

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestHandleHeadersFollowEachTransaction: header values are formatted once
// per transaction and shared by its records (Pipeline.headers), so a change of
// another transaction, or of the same LSN with another commit time or XID,
// must get its own values, and the records already produced must keep
// theirs. Keys and values are encoded in a reused buffer: earlier records
// keep their bytes too.
func TestHandleHeadersFollowEachTransaction(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)

	t2 := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	changes := []*source.Change{
		change(table, source.OpInsert, accountRow(1, 1), nil),
		change(table, source.OpUpdate, accountRow(2, 1), nil), // same transaction
		{Op: source.OpInsert, Table: table, New: accountRow(3, 1), LSN: 0x20, CommitTime: t2, XID: 9},
		{Op: source.OpInsert, Table: table, New: accountRow(4, 1), LSN: 0x20, CommitTime: t2, XID: 10},
		{Op: source.OpInsert, Table: table, New: accountRow(5, 1), LSN: 0x20, CommitTime: t2.Add(time.Microsecond), XID: 10},
		{Op: source.OpDelete, Table: table, Old: keyOnly(5), LSN: 0x20, CommitTime: t2.Add(time.Microsecond), XID: 10},
		change(table, source.OpSnapshot, accountRow(6, 1), nil),
	}
	want := []map[string]string{
		wantHeaders("c", true),
		wantHeaders("u", true),
		{cdc.HeaderOp: "c", cdc.HeaderLSN: pglogrepl.LSN(0x20).String(), cdc.HeaderCommitTime: "2025-01-02T03:04:05.000006Z", cdc.HeaderXID: "9"},
		{cdc.HeaderOp: "c", cdc.HeaderLSN: "0/20", cdc.HeaderCommitTime: "2025-01-02T03:04:05.000006Z", cdc.HeaderXID: "10"},
		{cdc.HeaderOp: "c", cdc.HeaderLSN: "0/20", cdc.HeaderCommitTime: "2025-01-02T03:04:05.000007Z", cdc.HeaderXID: "10"},
		{cdc.HeaderOp: "d", cdc.HeaderLSN: "0/20", cdc.HeaderCommitTime: "2025-01-02T03:04:05.000007Z", cdc.HeaderXID: "10"},
		wantHeaders("r", false),
	}
	var kvs [][]byte
	for i, c := range changes {
		if err := p.Handle(t.Context(), c); err != nil {
			t.Fatalf("Handle %d: %v", i, err)
		}
		r := fake.produced()[i].r
		checkHeaders(t, r, want[i])
		kvs = append(kvs, append(append([]byte(nil), r.Key...), r.Value...))
	}
	for i, s := range fake.produced() {
		checkHeaders(t, s.r, want[i])
		if kv := append(append([]byte(nil), s.r.Key...), s.r.Value...); !bytes.Equal(kv, kvs[i]) {
			t.Errorf("record %d changed after later changes: got %x, want %x", i, kv, kvs[i])
		}
	}
}

// headerChange is a change of a one-row transaction with every header.
func headerChange(lsn pglogrepl.LSN) *source.Change {
	return &source.Change{Op: source.OpUpdate, LSN: lsn, XID: 4_000_000_000,
		CommitTime: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600)), Republish: "job-1"}
}

// TestChangeHeadersValues: the header values are what the topic's readers
// parse (cdc), whatever the LSN's digits.
func TestChangeHeadersValues(t *testing.T) {
	t.Parallel()
	for _, lsn := range []pglogrepl.LSN{0, 0x20, 0xABCDEF, 0x1_0000_0000, 0x9F_0A0B0C0D, 0xFFFFFFFF_FFFFFFFF} {
		c := headerChange(lsn)
		got := map[string]string{}
		for _, h := range changeHeaders(c) {
			got[h.Key] = string(h.Value)
		}
		want := map[string]string{cdc.HeaderOp: "u", cdc.HeaderLSN: lsn.String(), cdc.HeaderCommitTime: "2025-01-02T02:04:05.000006Z",
			cdc.HeaderXID: "4000000000", cdc.HeaderRepublish: "job-1"}
		if len(got) != len(want) {
			t.Errorf("LSN %s: got headers %v, want %v", lsn, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("LSN %s: header %s = %q, want %q", lsn, k, got[k], v)
			}
		}
	}
}

// TestChangeHeadersAllocations: a transaction of one row pays its headers on
// its one record, 10,000 times a second at the one-row rate: two
// allocations (the slice and one buffer for every value), not one per value.
func TestChangeHeadersAllocations(t *testing.T) {
	c := headerChange(0x1_0000_0020)
	if n := testing.AllocsPerRun(100, func() { changeHeaders(c) }); n > 2 {
		t.Errorf("changeHeaders: got %.0f allocations, want at most 2", n)
	}
}

// BenchmarkChangeHeaders is the cost of one transaction's headers.
func BenchmarkChangeHeaders(b *testing.B) {
	c := headerChange(0x1_0000_0020)
	c.Republish = ""
	b.ReportAllocs()
	for b.Loop() {
		changeHeaders(c)
	}
}

// acceptingProducer acknowledges every record at once, keeping nothing.
type acceptingProducer struct{}

func (acceptingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	promise(r, nil)
}
func (acceptingProducer) Flush(context.Context) error { return nil }

// TestHandleSnapshotRowAllocations: a snapshot or republish row costs no
// allocation of its own once encoded; its record and bytes are carved from
// blocks shared by many records (arena). A million-row republish made two
// per row before, most of the pipeline's garbage.
func TestHandleSnapshotRowAllocations(t *testing.T) {
	table := accountsTable()
	p := New(newEntities(t, table, topicName(t)), acceptingProducer{})
	text := accountText(42, 1)
	text[colAvatar] = nil // bytea is decoded into a value of its own
	c := textChange(table, text)
	var ack countAck
	if err := p.handle(t.Context(), c, &ack); err != nil { // headers, scratch buffer
		t.Fatalf("handle: %v", err)
	}
	n := testing.AllocsPerRun(1000, func() {
		if err := p.handle(t.Context(), c, &ack); err != nil {
			t.Fatalf("handle: %v", err)
		}
	})
	if n > 0.1 {
		t.Errorf("handle of a snapshot row: got %.2f allocations per row, want at most 0.1", n)
	}
}
