package sink

import (
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/cdc"
	"github.com/twmb/franz-go/pkg/kgo"
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
	at := time.Now()
	w.produce(stamped(t, w, 1, "ann", at))
	w.produce(stamped(t, w, 2, "reject me", at))
	for id := int64(3); id <= 6; id++ {
		w.produce(stamped(t, w, id, "bo", at))
	}
	store := sqliteStore().fresh(t)
	obs := &recordingObserver{}
	r := e.start(m, store, func(c *Config) { c.Observer = obs })
	r.waitRecords(t, 6)
	wantRows(t, store, "profile", profileCols, "1|ann|NULL", "3|bo|NULL", "4|bo|NULL", "5|bo|NULL", "6|bo|NULL")
	got := r.s.Stats()
	if got.Batches != 1 || got.Split != 1 || got.Records != 6 || got.DeadLettered != 1 {
		t.Errorf("stats %+v: got %d batches, %d split, %d records, %d dead-lettered; want 1, 1, 6, 1", got, got.Batches, got.Split, got.Records, got.DeadLettered)
	}
	// Commit → visible: once per record written, record by record; not
	// for the dead-lettered one, which never became visible.
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.visible) != 5 {
		t.Errorf("observed %d commit → visible times (%v), want 5: one per written record", len(obs.visible), obs.visible)
	}
}

// stamped is customer id's record with a commit_ts header of at.
func stamped(t *testing.T, w *topicW, id int64, name string, at time.Time) *kgo.Record {
	t.Helper()
	k, v := cust(id, name, nil)
	return &kgo.Record{Topic: w.name, Key: frame(t, w.keyID, w.key, k), Value: frame(t, w.valueID, w.value, v),
		Headers: []kgo.RecordHeader{{Key: cdc.HeaderCommitTime, Value: []byte(at.UTC().Format(cdc.CommitTimeLayout))}}}
}

// recordingObserver keeps what the sink tells its observer.
type recordingObserver struct {
	mu      sync.Mutex
	visible []time.Duration
}

func (o *recordingObserver) ObserveBatch(int, time.Duration) {}

func (o *recordingObserver) ObserveVisible(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.visible = append(o.visible, d)
}

// The observer hears, per applied record that carries a commit_ts header,
// how long after that commit its batch committed in the store; a record
// without the header (another producer's) is applied and not counted.
func TestObserverHearsFreshness(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	old := time.Now().Add(-time.Hour)
	before := time.Now()
	w.produce(stamped(t, w, 1, "ann", old))
	w.produce(stamped(t, w, 2, "bo", before))
	w.put(cust(3, "cy", nil)) // no commit_ts
	obs := &recordingObserver{}
	store := sqliteStore().fresh(t)
	r := e.start(customerModel("profile"), store, func(c *Config) { c.Observer = obs })
	r.waitRecords(t, 3)
	elapsed := time.Since(before)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.visible) != 2 {
		t.Fatalf("observed %d freshness values (%v), want 2: one per record with a commit_ts header", len(obs.visible), obs.visible)
	}
	if d := obs.visible[0]; d < time.Hour || d > time.Hour+elapsed {
		t.Errorf("record committed an hour ago: observed %v, want between 1h and 1h+%v", d, elapsed)
	}
	if d := obs.visible[1]; d < 0 || d > elapsed {
		t.Errorf("record committed just before: observed %v, want between 0 and %v", d, elapsed)
	}
}
