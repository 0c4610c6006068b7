package pipeline

import (
	"bytes"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/source"
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
