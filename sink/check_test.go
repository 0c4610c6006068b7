package sink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCheck reports what would stop a read model, without writing: a
// missing topic, a needed field the topic lacks, an existing table without
// a column; and notes a table still to be created.
func TestCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.topic("customers", customersKey, customersValue)
	store := sqliteStore().fresh(t)
	cfg := func(m ReadModel) Config {
		return Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}
	}
	notes, problems := Check(t.Context(), cfg(customerModel("profile")))
	if len(problems) != 0 || len(notes) != 1 || !strings.Contains(notes[0], `table "profile" does not exist yet`) {
		t.Errorf("fresh store: got notes %q problems %v, want one note that the table will be created", notes, problems)
	}
	bad := customerModel("profile")
	bad.Sources[0].Columns = append(bad.Sources[0].Columns, Column{Name: "email", Field: "email"})
	bad.Sources = append(bad.Sources, Source{Topic: "nope", Key: []string{"id"}})
	_, problems = Check(t.Context(), cfg(bad))
	all := fmt.Sprint(problems)
	for _, want := range []string{"topic nope does not exist", `column "email" reads field "email", which its records lack`} {
		if !strings.Contains(all, want) {
			t.Errorf("problems %v lack %q", problems, want)
		}
	}
	// The owner's row key must be its topic key: a tombstone carries
	// nothing else.
	byName := customerModel("profile")
	byName.Sources[0].Key = []string{"name"}
	byName.Sources[0].Columns = byName.Sources[0].Columns[1:]
	_, problems = Check(t.Context(), cfg(byName))
	if want := `key field "name" is not a field of its key record (fields: id): the owner's row key must come from its topic key`; !strings.Contains(fmt.Sprint(problems), want) {
		t.Errorf("problems %v lack %q", problems, want)
	}
	db, _, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE profile (customer_id INTEGER PRIMARY KEY, display_name TEXT)`); err != nil {
		t.Fatal(err)
	}
	_, problems = Check(t.Context(), cfg(customerModel("profile")))
	if want := `table "profile" exists but lacks column(s) "tier"`; !strings.Contains(fmt.Sprint(problems), want) {
		t.Errorf("problems %v lack %q", problems, want)
	}
	// A column that does not fit: check says what the sink would.
	if _, err := db.Exec(`DROP TABLE profile; CREATE TABLE profile (customer_id INTEGER PRIMARY KEY, display_name TEXT, tier TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	_, problems = Check(t.Context(), cfg(customerModel("profile")))
	if want := `table "profile" column "tier": found NOT NULL, expected nullable: its field is nullable`; !strings.Contains(fmt.Sprint(problems), want) {
		t.Errorf("problems %v lack %q", problems, want)
	}
}

// TestCheckLag: a read model whose last commit is older than its topic's
// delete.retention.ms while records it has not read exist may have missed
// tombstones; check says so and names rebuild.
func TestCheckLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	retention := "60000"
	adm := kadm.NewClient(e.cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": ptr("compact"), "delete.retention.ms": &retention}, "customers"); err != nil {
		t.Fatal(err)
	}
	w := &topicW{e: e, name: "customers"}
	w.keyID, w.key = e.register("customers-key", customersKey)
	w.valueID, w.value = e.register("customers-value", customersValue)
	url := sqliteStore().fresh(t)
	w.put(cust(1, "a", nil))
	r := e.start(customerModel("profile"), url)
	r.waitRecords(t, 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	db, d, err := openStore(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &store{db: db, d: d}
	w.put(cust(2, "b", nil)) // unread by the stopped read model
	lags, err := CheckLag(ctx, adm, st, "profile", []string{"customers"}, time.Now())
	if err != nil || len(lags) != 0 {
		t.Fatalf("just after a commit: got %v, %v; want no lag", lags, err)
	}
	lags, err = CheckLag(ctx, adm, st, "profile", []string{"customers"}, time.Now().Add(2*time.Minute))
	if err != nil || len(lags) != 1 {
		t.Fatalf("two minutes later (retention 1m): got %v, %v; want one lagging partition", lags, err)
	}
	msg := lags[0].String()
	for _, want := range []string{"read model profile may have missed tombstones on customers partition 0", "delete.retention.ms (1m0s)", "1 record(s) are unread", "replicator rebuild --read-model profile"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
}

func ptr(s string) *string { return &s }
