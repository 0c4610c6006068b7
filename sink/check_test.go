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
	// A rebuild's table left beside the live one (a rebuild killed before
	// its swap) is a note, naming the read model and the way to remove it.
	if _, err := db.Exec(`CREATE TABLE profile__rebuild (customer_id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	notes, _ = Check(t.Context(), cfg(customerModel("profile")))
	if want := `table "profile__rebuild" is a rebuild's: a rebuild of read model profile runs now, or one ended before its swap`; !strings.Contains(fmt.Sprint(notes), want) {
		t.Errorf("notes %q lack %q", notes, want)
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
	for _, want := range []string{"read model profile may have missed tombstones on customers partition 0", "1 unread record offset(s) (1 to 1) were written longer ago than the topic's delete.retention.ms (1m0s)", "replicator rebuild --read-model profile"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}

	// What counts is the age of the records not read, not the time since
	// the last commit. A read model that committed a moment ago (here: at
	// the time it is checked) but is still behind records older than the
	// retention, as a running one can be, may have missed tombstones.
	later := time.Now().Add(2 * time.Minute)
	setCommitted := func(at time.Time) {
		t.Helper()
		if _, err := db.ExecContext(ctx, `UPDATE replicator_sink_offsets SET updated_at = ? WHERE read_model = 'profile'`, at.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	setCommitted(later)
	lags, err = CheckLag(ctx, adm, st, "profile", []string{"customers"}, later)
	if err != nil || len(lags) != 1 || lags[0].Recent != 2 {
		t.Fatalf("committed just now, behind a record two minutes old (retention 1m): got %+v, %v; want one lagging partition, offsets 1 to 1 old", lags, err)
	}
	// And one stopped long ago whose unread records are all recent has
	// missed nothing: a tombstone among them is kept a retention long.
	setCommitted(time.Now().Add(-time.Hour))
	lags, err = CheckLag(ctx, adm, st, "profile", []string{"customers"}, time.Now())
	if err != nil || len(lags) != 0 {
		t.Fatalf("stopped an hour ago, its unread record written a moment ago: got %v, %v; want no lag", lags, err)
	}
}

func ptr(s string) *string { return &s }

// TestCheckKeyTypes: a non-owner's row-key field of another type than the
// owner's key column would never find the owner's rows (its values hash
// differently): check and the sink refuse it, naming both fields and
// types. An int into a long key finds them (both are integers) and is
// accepted; a long into an int key is not (it may not fit).
func TestCheckKeyTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cw := e.topic("customers", customersKey, customersValue)
	const intCustomersKey = `{"type":"record","name":"icustomers_key","fields":[{"name":"id","type":"int"}]}`
	const intCustomersValue = `{"type":"record","name":"icustomers","fields":[{"name":"id","type":"int"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null}]}`
	e.topic("icustomers", intCustomersKey, intCustomersValue)
	loyaltyOf := func(typ string) string {
		return `{"type":"record","name":"loyalty","fields":[{"name":"account_id","type":"long"},{"name":"customer_id","type":` + typ + `},{"name":"points","type":["null","long"],"default":null}]}`
	}
	e.topic("loyalty_str", loyaltyKey, loyaltyOf(`["null","string"]`))
	lw := e.topic("loyalty_int", loyaltyKey, loyaltyOf(`"int"`))
	e.topic("loyalty_long", loyaltyKey, loyaltyOf(`"long"`))
	model := func(owner, other string) ReadModel {
		m := profileModel()
		m.Sources[0].Topic, m.Sources[1].Topic = owner, other
		return m
	}
	store := sqliteStore().fresh(t)
	cfg := Config{StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}
	for _, c := range []struct {
		name, owner, other string
		want               string // "" accepted
	}{
		{"string into long", "customers", "loyalty_str", `source topic loyalty_str: row-key field "customer_id" is an Avro string, but key column "customer_id" is an Avro long (64 bits) (from field "id" of the owner, topic customers)`},
		{"long into int", "icustomers", "loyalty_long", `source topic loyalty_long: row-key field "customer_id" is an Avro long (64 bits), but key column "customer_id" is an Avro int (32 bits) (from field "id" of the owner, topic icustomers)`},
		{"int into long", "customers", "loyalty_int", ""},
		{"long into long", "customers", "loyalty_long", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := cfg
			cfg.Model = model(c.owner, c.other)
			// A store of its own: a refused case's stop, recorded in
			// its store, is a problem of the read model there.
			cfg.StoreURL = sqliteStore().fresh(t)
			_, problems := Check(t.Context(), cfg)
			all := fmt.Sprint(problems)
			switch {
			case c.want == "" && len(problems) != 0:
				t.Errorf("got problems %v, want none", problems)
			case c.want != "" && !strings.Contains(all, c.want):
				t.Errorf("got problems %v, want one containing %q", problems, c.want)
			}
			if c.want == "" {
				return
			}
			// The sink refuses to start, naming the read model.
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Bounded: without the check the sink would run on.
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			err = s.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), "read model profile: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Run: got %v, want the read model named and %q", err, c.want)
			}
		})
	}
	// The accepted int field finds the owner's long-keyed rows.
	cw.put(cust(1, "ann", nil))
	lw.put(map[string]any{"account_id": int64(10)}, map[string]any{"account_id": int64(10), "customer_id": int32(1), "points": int64(100)})
	r := e.start(model("customers", "loyalty_int"), store)
	r.waitRecords(t, 2)
	wantRows(t, store, "profile", []string{"customer_id", "display_name", "points"}, "1|ann|100")
}
