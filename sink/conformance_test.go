package sink

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	customersKey   = `{"type":"record","name":"customers_key","fields":[{"name":"id","type":"long"}]}`
	customersValue = `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null}]}`
	loyaltyKey     = `{"type":"record","name":"loyalty_key","fields":[{"name":"account_id","type":"long"}]}`
	loyaltyValue   = `{"type":"record","name":"loyalty","fields":[{"name":"account_id","type":"long"},{"name":"customer_id","type":"long"},{"name":"points","type":["null","long"],"default":null}]}`
)

// TestConformance runs one suite, unchanged, against every store.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range conformanceCases {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, sk.fresh(t))
				})
			}
		})
	}
}

var conformanceCases = []struct {
	name string
	run  func(t *testing.T, store string)
}{
	{"UpsertDelete", testUpsertDelete},
	{"PartialWritesBothOrders", testPartialWrites},
	{"NullRowKey", testNullRowKey},
	{"SchemaEvolution", testSchemaEvolution},
	{"KeySchemaNewID", testKeySchemaNewID},
	{"PoisonStop", testPoisonStop},
	{"PoisonDeadLetter", testPoisonDeadLetter},
	{"HostileNames", testHostileNames},
	{"OffsetsWithRows", testOffsetsWithRows},
	{"FencedByStoredOffsets", testFenced},
}

func customerModel(name string) ReadModel {
	return ReadModel{Name: name, Table: name, Key: []string{"customer_id"}, Sources: []Source{
		{Topic: "customers", Key: []string{"id"}, Owner: true, Columns: []Column{{Name: "customer_id", Field: "id"}, {Name: "display_name", Field: "name"}, {Name: "tier", Field: "tier"}}},
	}}
}

func cust(id int64, name string, tier any) (map[string]any, map[string]any) {
	return map[string]any{"id": id}, map[string]any{"id": id, "name": name, "tier": tier}
}

var profileCols = []string{"customer_id", "display_name", "tier"}

func testUpsertDelete(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", "gold"))
	w.put(cust(2, "bob", nil))
	w.put(cust(3, "cy", "silver"))
	w.put(cust(2, "bob2", "bronze")) // update, deduplicated within the batch
	w.del(map[string]any{"id": int64(3)})
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 5)
	wantRows(t, store, "profile", profileCols, "1|ann|gold", "2|bob2|bronze")
	w.put(cust(3, "cy again", nil)) // a deleted key comes back
	w.del(map[string]any{"id": int64(1)})
	r.waitRecords(t, 7)
	wantRows(t, store, "profile", profileCols, "2|bob2|bronze", "3|cy again|NULL")
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func profileModel() ReadModel {
	m := customerModel("profile")
	m.Sources = append(m.Sources, Source{Topic: "loyalty", Key: []string{"customer_id"}, Columns: []Column{{Name: "points", Field: "points"}}})
	return m
}

func acct(id, customer int64, points any) (map[string]any, map[string]any) {
	return map[string]any{"account_id": id}, map[string]any{"account_id": id, "customer_id": customer, "points": points}
}

func testPartialWrites(t *testing.T, store string) {
	e := newEnv(t)
	cw := e.topic("customers", customersKey, customersValue)
	lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
	r := e.start(profileModel(), store)
	cols := []string{"customer_id", "display_name", "points"}
	n := int64(0)
	step := func(f func()) { f(); n++ }

	// The other source before the owner, in separate batches.
	step(func() { lw.put(acct(10, 1, int64(100))) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols) // no owner, no row
	step(func() { cw.put(cust(1, "ann", nil)) })
	// The owner before the other source.
	step(func() { cw.put(cust(2, "bob", nil)) })
	r.waitRecords(t, n)
	step(func() { lw.put(acct(20, 2, int64(5))) })
	step(func() { cw.put(cust(3, "cy", nil)) })
	step(func() { lw.put(acct(30, 99, int64(7))) }) // its owner never comes
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|100", "2|bob|5", "3|cy|NULL")

	// Account 10 moves to customer 2: customer 1 is cleared; customer 2
	// shows the latest applied of its two accounts.
	step(func() { lw.put(acct(10, 2, int64(111))) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob|111", "3|cy|NULL")
	// Its tombstone (topic key only) clears it; account 20 shows again.
	step(func() { lw.del(map[string]any{"account_id": int64(10)}) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob|5", "3|cy|NULL")
	// The owner's tombstone deletes the row; its return is filled again.
	step(func() { cw.del(map[string]any{"id": int64(2)}) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "3|cy|NULL")
	step(func() { cw.put(cust(2, "bob back", nil)) })
	step(func() { cw.put(cust(99, "late owner", nil)) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob back|5", "3|cy|NULL", "99|late owner|7")
	// Everything in one batch, in both orders, converges too.
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lw.put(acct(40, 5, int64(1)))
	cw.put(cust(5, "eve", nil))
	cw.put(cust(6, "fay", nil))
	lw.put(acct(60, 6, int64(2)))
	lw.del(map[string]any{"account_id": int64(20)})
	r2 := e.start(profileModel(), store)
	r2.waitRecords(t, 5)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob back|NULL", "3|cy|NULL", "5|eve|1", "6|fay|2", "99|late owner|7")
}

// testNullRowKey: a non-owner record whose row-key field is null (a
// nullable foreign key set to NULL) belongs to no row: the row it wrote
// before is cleared, as by its tombstone, nothing is kept for it, and the
// read model goes on (not a poison record).
func testNullRowKey(t *testing.T, store string) {
	e := newEnv(t)
	cw := e.topic("customers", customersKey, customersValue)
	lw := e.topic("loyalty", loyaltyKey, `{"type":"record","name":"loyalty","fields":[{"name":"account_id","type":"long"},{"name":"customer_id","type":["null","long"],"default":null},{"name":"points","type":["null","long"],"default":null}]}`)
	r := e.start(profileModel(), store)
	cols := []string{"customer_id", "display_name", "points"}
	n := int64(0)
	step := func(f func()) { f(); n++ }
	sideRows := func() int {
		return len(rows(t, store, sideTable, "topic"))
	}
	step(func() { lw.put(acct(30, 0, nil)) }) // a row key, and no owner
	step(func() {
		lw.put(map[string]any{"account_id": int64(40)}, map[string]any{"account_id": int64(40), "customer_id": nil, "points": int64(9)})
	})
	step(func() { cw.put(cust(1, "ann", nil)) })
	step(func() { cw.put(cust(2, "bob", nil)) })
	step(func() { lw.put(acct(20, 1, int64(5))) })
	r.waitRecords(t, n)
	step(func() { lw.put(acct(10, 1, int64(100))) })
	step(func() { lw.put(acct(11, 2, int64(7))) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|100", "2|bob|7")
	// Account 10's customer is set to NULL: customer 1 shows account 20
	// again; account 11's too, in the same batch: customer 2 is cleared.
	step(func() {
		lw.put(map[string]any{"account_id": int64(10)}, map[string]any{"account_id": int64(10), "customer_id": nil, "points": int64(100)})
	})
	step(func() {
		lw.put(map[string]any{"account_id": int64(11)}, map[string]any{"account_id": int64(11), "customer_id": nil, "points": int64(7)})
	})
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|5", "2|bob|NULL")
	if got := sideRows(); got != 2 { // accounts 20 and 30
		t.Errorf("side table holds %d rows, want 2: a record of null row key is not kept", got)
	}
	// Account 11 comes back to customer 2.
	step(func() { lw.put(acct(11, 2, int64(8))) })
	r.waitRecords(t, n)
	wantRows(t, store, "profile", cols, "1|ann|5", "2|bob|8")
	if err := r.stop(); err != nil {
		t.Fatalf("Run: got %v, want no error: a null row key is no poison record", err)
	}
}

func testSchemaEvolution(t *testing.T, store string) {
	e := newEnv(t)
	v1 := `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}`
	v2 := `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null},{"name":"extra","type":"string","default":""}]}`
	v3 := `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"extra","type":"string","default":""}]}`
	w := e.topic("customers", customersKey, v1)
	w.put(map[string]any{"id": int64(1)}, map[string]any{"id": int64(1), "name": "old"})
	w.evolve(v2)
	w.put(map[string]any{"id": int64(2)}, map[string]any{"id": int64(2), "name": "new", "tier": "gold", "extra": "ignored"})
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 2)
	// The older record lacks tier: the reader's default (null); the
	// producer's added field extra is ignored.
	wantRows(t, store, "profile", profileCols, "1|old|NULL", "2|new|gold")
	w.evolve(v3) // tier is gone: the read model needs it
	w.put(map[string]any{"id": int64(3)}, map[string]any{"id": int64(3), "name": "newer", "extra": "x"})
	err := waitStopped(t, r)
	var se *SchemaError
	if !errors.As(err, &se) || se.Field != "tier" || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Run: got %v, want a SchemaError naming field tier as gone", err)
	}
	wantRows(t, store, "profile", profileCols, "1|old|NULL", "2|new|gold")
}

// testKeySchemaNewID: rows are matched by decoded key values, never by the
// key bytes, which carry the schema id. The key schemas are registered
// again under new ids (a doc added: the same fields, another text); then
// the owner's tombstone under the new id deletes a row written under the
// old one, its upsert under the new id updates the same row (no second
// one), and the other source's tombstone and move under the new id find
// the side rows its records wrote under the old id, clearing the right
// columns. Within one batch, a record and a tombstone of one key under
// the two ids are one key too.
func testKeySchemaNewID(t *testing.T, store string) {
	e := newEnv(t)
	cw := e.topic("customers", customersKey, customersValue)
	lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
	cols := []string{"customer_id", "display_name", "points"}
	cw.put(cust(1, "ann", nil))
	cw.put(cust(2, "bob", nil))
	cw.put(cust(3, "cy", nil))
	lw.put(acct(10, 1, int64(100)))
	lw.put(acct(20, 2, int64(200)))
	r := e.start(profileModel(), store)
	r.waitRecords(t, 5)
	wantRows(t, store, "profile", cols, "1|ann|100", "2|bob|200", "3|cy|NULL")

	oldCust, oldCustSchema, oldLoyalty := cw.keyID, cw.key, lw.keyID
	cw.evolveKey(`{"type":"record","name":"customers_key","doc":"registered again","fields":[{"name":"id","type":"long"}]}`)
	lw.evolveKey(`{"type":"record","name":"loyalty_key","doc":"registered again","fields":[{"name":"account_id","type":"long"}]}`)
	if cw.keyID == oldCust || lw.keyID == oldLoyalty {
		t.Fatalf("the key schemas with a doc got ids %d and %d, the same as before (%d, %d): the test needs new ids", cw.keyID, lw.keyID, oldCust, oldLoyalty)
	}
	cw.del(map[string]any{"id": int64(3)})
	cw.put(cust(2, "bob2", nil))
	lw.del(map[string]any{"account_id": int64(20)})
	r.waitRecords(t, 8)
	wantRows(t, store, "profile", cols, "1|ann|100", "2|bob2|NULL")
	// Account 10 (written under the old id) moves to customer 2.
	lw.put(acct(10, 2, int64(111)))
	r.waitRecords(t, 9)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob2|111")

	// One batch: customer 4 written under the old id and deleted under
	// the new one; customer 5 the other way round.
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	k4, v4 := cust(4, "dee", nil)
	cw.raw(frame(t, oldCust, oldCustSchema, k4), frame(t, cw.valueID, cw.value, v4))
	cw.del(k4)
	cw.put(cust(5, "eve", nil))
	cw.raw(frame(t, oldCust, oldCustSchema, map[string]any{"id": int64(5)}), nil)
	r2 := e.start(profileModel(), store)
	r2.waitRecords(t, 4)
	wantRows(t, store, "profile", cols, "1|ann|NULL", "2|bob2|111")
}

// waitStopped waits for a sink to stop by itself and returns its error.
func waitStopped(t *testing.T, r *running) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.stopWhenDone() }()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("the sink did not stop within %v", testTimeout)
		return nil
	}
}

func testPoisonStop(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", nil))
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 1)
	bad := w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}), Value: []byte("not avro")})
	w.put(cust(3, "cy", nil))
	err := waitStopped(t, r)
	var pe *PoisonError
	if !errors.As(err, &pe) || pe.Topic != "customers" || pe.Partition != bad.Partition || pe.Offset != bad.Offset {
		t.Fatalf("Run: got %v, want a PoisonError at customers/%d/%d", err, bad.Partition, bad.Offset)
	}
	for _, want := range []string{"topic customers", fmt.Sprintf("partition %d", bad.Partition), fmt.Sprintf("offset %d", bad.Offset), "Confluent wire-format header"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	wantRows(t, store, "profile", profileCols, "1|ann|NULL")
	// Offsets untouched: a restart meets the same record again.
	r2 := e.start(customerModel("profile"), store)
	err = waitStopped(t, r2)
	if !errors.As(err, &pe) || pe.Offset != bad.Offset {
		t.Fatalf("restart: got %v, want the same PoisonError at offset %d", err, bad.Offset)
	}
	wantRows(t, store, "profile", profileCols, "1|ann|NULL")
}

func testPoisonDeadLetter(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	m := customerModel("profile")
	m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
	// A value the store rejects: a CHECK constraint in the type override.
	m.Sources[0].Columns[1].Type = `VARCHAR(100) CHECK (display_name <> 'reject me')`
	w.put(cust(1, "ann", nil))
	w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}), Value: []byte("not avro")})
	var unknown []byte
	unknown = append(unknown, 0, 0, 0, 0x7f, 0x7f) // schema id 32639
	w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(3)}), Value: unknown})
	w.put(cust(4, "reject me", nil))
	w.put(cust(5, "eve", nil))
	r := e.start(m, store)
	r.waitRecords(t, 5)
	wantRows(t, store, "profile", profileCols, "1|ann|NULL", "5|eve|NULL")
	if got := r.s.Stats().DeadLettered; got != 3 {
		t.Errorf("dead-lettered %d records, want 3", got)
	}
	dlq := readTopic(t, e, "profile.dlq")
	if len(dlq) != 3 {
		t.Fatalf("dead-letter topic profile.dlq holds %d records, want 3", len(dlq))
	}
	// The dead-letter topic may have several partitions: order by the
	// source offset each record names.
	header := func(r *kgo.Record, k string) string {
		for _, h := range r.Headers {
			if h.Key == k {
				return string(h.Value)
			}
		}
		return ""
	}
	sort.Slice(dlq, func(i, j int) bool { return header(dlq[i], "replicator.offset") < header(dlq[j], "replicator.offset") })
	var causes []string
	for _, rec := range dlq {
		if c := header(rec, "replicator.error"); c != "" {
			causes = append(causes, c)
		}
	}
	want := []string{"Confluent wire-format header", "unknown to the registry", "rejected"}
	if len(causes) != 3 {
		t.Fatalf("dead-letter records carry %d replicator.error headers, want 3: %q", len(causes), causes)
	}
	for i, w := range want {
		if !strings.Contains(causes[i], w) {
			t.Errorf("dead-letter record %d: error %q lacks %q", i, causes[i], w)
		}
	}
	if string(dlq[0].Value) != "not avro" {
		t.Errorf("dead-letter record 0: value %q, want the raw bytes %q", dlq[0].Value, "not avro")
	}
}

// readTopic reads topic from its start to its end offsets: the records a
// finished sink produced to it, every one.
func readTopic(t *testing.T, e *env, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var out []*kgo.Record
	_, err := broker.ReadToEnd(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, topic, nil, func(r *kgo.Record) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatalf("read topic %s: %v", topic, err)
	}
	return out
}

func testHostileNames(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	table := "we\"ird `tab' le ü"
	m := ReadModel{Name: "hostile", Table: table, Key: []string{"kéy \"1\""}, Sources: []Source{
		{Topic: "customers", Key: []string{"id"}, Owner: true, Columns: []Column{{Name: "select", Field: "name"}, {Name: "a`b\"c'd", Field: "tier"}, {Name: "with space", Field: "name"}}},
	}}
	w.put(cust(1, "O'Brien \"the\" `x`", "tier; DROP TABLE x"))
	w.put(cust(2, "ünï", nil))
	r := e.start(m, store)
	r.waitRecords(t, 2)
	wantRows(t, store, table, []string{"kéy \"1\"", "select", "a`b\"c'd", "with space"},
		"1|O'Brien \"the\" `x`|tier; DROP TABLE x|O'Brien \"the\" `x`", "2|ünï|NULL|ünï")
	w.del(map[string]any{"id": int64(1)})
	r.waitRecords(t, 3)
	wantRows(t, store, table, []string{"kéy \"1\"", "select"}, "2|ünï")
}

func testOffsetsWithRows(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	for i := int64(1); i <= 10; i++ {
		w.put(cust(i, fmt.Sprint("v1-", i), nil))
	}
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 10)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 5; i++ {
		w.put(cust(i, fmt.Sprint("v2-", i), nil))
	}
	// A new process starts at the offsets stored with the rows: it reads
	// the 5 new records only, none of the 10 applied before.
	r2 := e.start(customerModel("profile"), store)
	r2.waitRecords(t, 5)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r2.s.Stats().Records; got != 5 {
		t.Errorf("the restarted sink consumed %d records, want 5 (the stored offsets are where it starts)", got)
	}
	var want []string
	for i := 1; i <= 10; i++ {
		v := "v1-"
		if i <= 5 {
			v = "v2-"
		}
		want = append(want, fmt.Sprintf("%d|%s%d", i, v, i))
	}
	wantRows(t, store, "profile", []string{"customer_id", "display_name"}, want...)
}

func testFenced(t *testing.T, store string) {
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "a", nil))
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 1)
	// Another process applies the next record of partition 0 and moves the
	// stored offset past it: this process must not apply it again.
	db, d, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := fmt.Sprintf("UPDATE %s SET next_offset = next_offset + 1 WHERE read_model = 'profile' AND topic = 'customers' AND part = 0", d.quote(offsetsTable))
	if _, err := db.ExecContext(t.Context(), q); err != nil {
		t.Fatal(err)
	}
	w.put(cust(2, "b", nil)) // offset 1: "applied" by the other process
	w.put(cust(3, "c", nil)) // offset 2
	deadline := time.Now().Add(testTimeout)
	for len(rows(t, store, "profile", "customer_id")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("row 3 did not appear within %v (stats %+v)", testTimeout, r.s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantRows(t, store, "profile", []string{"customer_id", "display_name"}, "1|a", "3|c")
	if r.s.Stats().Fenced < 1 {
		t.Errorf("stats %+v: want at least one fenced batch", r.s.Stats())
	}
}
