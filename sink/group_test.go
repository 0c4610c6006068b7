package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
