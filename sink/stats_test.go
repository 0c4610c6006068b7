package sink

import (
	"testing"
)

// A batch the store rejects is applied again record by record, one
// transaction each; it still counts as one batch (what a user reads in
// replicator_sink_batches_total), and once as split.
func TestStatsCountABatchOnceWhenSplit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	m := customerModel("profile")
	m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
	m.Sources[0].Columns[1].Type = `VARCHAR(100) CHECK (display_name <> 'reject me')`
	// Six records on one partition before the sink starts: one poll.
	w.put(cust(1, "ann", nil))
	w.put(cust(2, "reject me", nil))
	for id := int64(3); id <= 6; id++ {
		w.put(cust(id, "bo", nil))
	}
	store := sqliteStore().fresh(t)
	r := e.start(m, store)
	r.waitRecords(t, 6)
	wantRows(t, store, "profile", profileCols, "1|ann|NULL", "3|bo|NULL", "4|bo|NULL", "5|bo|NULL", "6|bo|NULL")
	got := r.s.Stats()
	if got.Batches != 1 || got.Split != 1 || got.Records != 6 || got.DeadLettered != 1 {
		t.Errorf("stats %+v: got %d batches, %d split, %d records, %d dead-lettered; want 1, 1, 6, 1", got, got.Batches, got.Split, got.Records, got.DeadLettered)
	}
}
