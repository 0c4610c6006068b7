package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/source"
)

// TestHeadersFollowEveryChange: records of consecutive changes share a
// header slice only while op, LSN, commit time and XID are all the same;
// any one difference gives the record its own headers.
func TestHeadersFollowEveryChange(t *testing.T) {
	table := accountsTable()
	fake := &fakeProducer{}
	p := New(newEntities(t, table, "accounts"), fake)
	base := change(table, source.OpInsert, accountRow(1, 1), nil)
	steps := []struct {
		name string
		mod  func(c *source.Change)
		want map[string]string
	}{
		{"first", func(*source.Change) {}, map[string]string{cdc.HeaderOp: "c", cdc.HeaderLSN: testLSNText, cdc.HeaderXID: "4711"}},
		{"same transaction", func(*source.Change) {}, map[string]string{cdc.HeaderOp: "c", cdc.HeaderLSN: testLSNText, cdc.HeaderXID: "4711"}},
		{"other op", func(c *source.Change) { c.Op = source.OpUpdate }, map[string]string{cdc.HeaderOp: "u", cdc.HeaderLSN: testLSNText}},
		{"other LSN", func(c *source.Change) { c.LSN++ }, map[string]string{cdc.HeaderOp: "u", cdc.HeaderLSN: (testLSN + 1).String()}},
		{"other XID", func(c *source.Change) { c.XID++ }, map[string]string{cdc.HeaderXID: "4712"}},
		{"other time", func(c *source.Change) { c.CommitTime = c.CommitTime.Add(time.Microsecond) },
			map[string]string{cdc.HeaderCommitTime: testCommitTime.Add(time.Microsecond).UTC().Format(cdc.CommitTimeLayout)}},
		{"snapshot, no XID", func(c *source.Change) { c.Op, c.XID = source.OpSnapshot, 0 }, map[string]string{cdc.HeaderOp: "r", cdc.HeaderXID: "", cdc.HeaderRepublish: ""}},
		{"republished", func(c *source.Change) { c.Republish = "req-1" }, map[string]string{cdc.HeaderOp: "r", cdc.HeaderRepublish: "req-1"}},
		{"other republish", func(c *source.Change) { c.Republish = "req-2" }, map[string]string{cdc.HeaderRepublish: "req-2"}},
		{"stream again", func(c *source.Change) { c.Op, c.Republish = source.OpUpdate, "" }, map[string]string{cdc.HeaderOp: "u", cdc.HeaderRepublish: ""}},
	}
	// Each step changes one thing of the previous change.
	c := *base
	for i, s := range steps {
		s.mod(&c)
		if err := p.Handle(context.Background(), &c); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := headers(t, fake.produced()[i].r)
		for k, v := range s.want {
			if got[k] != v {
				t.Errorf("%s: header %s = %q, want %q (all: %v)", s.name, k, got[k], v, got)
			}
		}
	}
}
