package sink

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestTwoProcessesShareAGroup runs two sinks of one read model (one
// consumer group) while records are produced, stops one mid-stream, and
// checks that the survivor takes over its partitions: the table converges
// and the records committed by both add up to exactly the records
// produced (a batch applied twice would count twice).
func TestTwoProcessesShareAGroup(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	m := customerModel("profile")
	a := e.start(m, store)
	b := e.start(m, store)
	const keys, rounds = 60, 10
	produced := int64(0)
	for round := 0; round < rounds; round++ {
		for k := int64(1); k <= keys; k++ {
			key, val := cust(k, fmt.Sprintf("r%d", round), nil)
			w.produce(&kgo.Record{Topic: "customers", Partition: int32(k % 3), Key: frame(t, w.keyID, w.key, key), Value: frame(t, w.valueID, w.value, val)})
			produced++
		}
		if round == rounds/2 {
			if err := a.stop(); err != nil {
				t.Fatalf("first sink: %v", err)
			}
		}
	}
	var want []string
	for k := 1; k <= keys; k++ {
		want = append(want, fmt.Sprintf("%d|r%d", k, rounds-1))
	}
	deadline := time.Now().Add(testTimeout)
	for a.s.Stats().Records+b.s.Stats().Records < produced {
		if time.Now().After(deadline) {
			t.Fatalf("the two sinks committed %d+%d records within %v, want %d", a.s.Stats().Records, b.s.Stats().Records, testTimeout, produced)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantRows(t, store, "profile", []string{"customer_id", "display_name"}, want...)
	if err := b.stop(); err != nil {
		t.Fatalf("second sink: %v", err)
	}
	if got := a.s.Stats().Records + b.s.Stats().Records; got != produced {
		t.Errorf("committed %d+%d = %d records, want exactly %d (nothing applied twice)", a.s.Stats().Records, b.s.Stats().Records, got, produced)
	}
	if b.s.Stats().Records == 0 {
		t.Errorf("the second sink committed nothing: it never took over a partition")
	}
}

// TestReadModelsShareASQLiteFile runs two read models on one SQLite file
// at once: their transactions contend for the file's lock, which must be
// waited for and retried, never taken for a poison record.
func TestReadModelsShareASQLiteFile(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	cw := e.topic("customers", customersKey, customersValue)
	lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
	plain := customerModel("plain")
	plain.OnError, plain.DeadLetterTopic = DeadLetter, "plain.dlq"
	profile := profileModel()
	profile.OnError, profile.DeadLetterTopic = DeadLetter, "profile.dlq"
	a := e.start(plain, store)
	b := e.start(profile, store)
	const n = 200
	var wantPlain, wantProfile []string
	for i := int64(1); i <= n; i++ {
		cw.put(cust(i, fmt.Sprint("c", i), nil))
		lw.put(acct(1000+i, i, i))
		wantPlain = append(wantPlain, fmt.Sprintf("%d|c%d", i, i))
		wantProfile = append(wantProfile, fmt.Sprintf("%d|c%d|%d", i, i, i))
	}
	a.waitRecords(t, n)
	b.waitRecords(t, 2*n)
	wantRows(t, store, "plain", []string{"customer_id", "display_name"}, wantPlain...)
	wantRows(t, store, "profile", []string{"customer_id", "display_name", "points"}, wantProfile...)
	if d := a.s.Stats().DeadLettered + b.s.Stats().DeadLettered; d != 0 {
		t.Errorf("%d records dead-lettered, want 0: lock contention is not a poison record", d)
	}
}

// TestConcurrentStartsOnOneStore starts read models on one PostgreSQL
// database at once: their creations of the sink's tables race, and every
// one must start.
func TestConcurrentStartsOnOneStore(t *testing.T) {
	t.Parallel()
	store := postgresStore(t).fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "a", nil))
	var rs []*running
	for i := 0; i < 6; i++ {
		rs = append(rs, e.start(customerModel(fmt.Sprint("m", i)), store))
	}
	for _, r := range rs {
		r.waitRecords(t, 1)
	}
}

// TestGroupOffsetsCommittedAtMostOnceASecond: the group's offsets (for lag
// tools only) are committed at most once a second however many batches
// commit in the store, not once per batch, and catch up with the store
// when the sink stops.
func TestGroupOffsetsCommittedAtMostOnceASecond(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	var mu sync.Mutex
	commits := 0
	e.kc.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kc.KeepControl()
		mu.Lock()
		commits++
		mu.Unlock()
		return nil, nil, false // counted, then handled by the broker
	})
	w := e.topic("customers", customersKey, customersValue)
	r := e.start(customerModel("profile"), store)
	const batches = 30
	start := time.Now()
	for k := int64(1); k <= batches; k++ {
		key, val := cust(k, "x", nil)
		w.produce(&kgo.Record{Topic: "customers", Partition: int32(k % 3), Key: frame(t, w.keyID, w.key, key), Value: frame(t, w.valueID, w.value, val)})
		r.waitRecords(t, k) // one batch each
	}
	elapsed := time.Since(start)
	mu.Lock()
	during := commits
	mu.Unlock()
	if limit := int(elapsed/time.Second) + 2; during > limit {
		t.Errorf("group offset commits during %d batches in %v: got %d, want at most %d (one a second)", batches, elapsed.Round(time.Millisecond), during, limit)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	got, err := kadm.NewClient(e.cl).FetchOffsets(ctx, "replicator-sink-profile")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	got.Each(func(o kadm.OffsetResponse) { total += o.At })
	if total != batches {
		t.Errorf("group offsets after the stop: sum %d, want %d (every record produced, one per record)", total, batches)
	}
}
