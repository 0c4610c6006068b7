package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const sinkOnly = `
read_models:
  - name: customer_profile
    store: sqlite://./data/read.db
    table: "Customer Profile"
    key: customer_id
    sources:
      - entity: customers
        key: id
        owner: true
        columns: {customer_id: id, "Display Name": name, tier: {field: tier, type: "VARCHAR(10)"}}
      - entity: loyalty_accounts
        key: [customer_id]
        columns: {points: points}
`

func TestLoadSinkOnly(t *testing.T) {
	t.Parallel()
	cfg, err := LoadSink(writeConfig(t, sinkOnly), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []ReadModel{{
		Name: "customer_profile", Store: "sqlite://./data/read.db", Table: "Customer Profile",
		Key: []string{"customer_id"}, OnError: OnErrorStop, DeadLetterTopic: "customer_profile.dlq", RebuildGCPercent: DefaultRebuildGCPercent,
		Sources: []ReadModelSource{
			{Entity: "customers", Topic: "customers", Key: []string{"id"}, Owner: true, Columns: []ReadModelColumn{
				{Name: "customer_id", Field: "id"}, {Name: "Display Name", Field: "name"}, {Name: "tier", Field: "tier", Type: "VARCHAR(10)"}}},
			{Entity: "loyalty_accounts", Topic: "loyalty_accounts", Key: []string{"customer_id"}, Columns: []ReadModelColumn{{Name: "points", Field: "points"}}},
		},
	}}
	if !reflect.DeepEqual(cfg.ReadModels, want) {
		t.Errorf("got %+v\nwant %+v", cfg.ReadModels, want)
	}
	// run still needs its source and entities.
	if _, err := Load(writeConfig(t, sinkOnly), nil); err == nil || !strings.Contains(err.Error(), KeySourceURL) || !strings.Contains(err.Error(), KeyEntities) {
		t.Errorf("Load of a sink-only file: got %v, want errors naming %s and %s", err, KeySourceURL, KeyEntities)
	}
}

func TestReadModelEntityTopic(t *testing.T) {
	t.Parallel()
	cfg, err := Load(writeConfig(t, minimal+`
  - table: customers
    topic: crm.customers
read_models:
  - name: m
    store: postgres://u@localhost/read
    key: id
    sources:
      - entity: customers
        key: id
      - topic: explicit.topic
        entity: ignored
        key: id
        columns: {x: x}
      - entity: not_an_entity
        key: id
        columns: {y: y}
`), nil)
	if err == nil || !strings.Contains(err.Error(), "exactly one source must be owner") {
		t.Fatalf("got %v, want the owner error", err)
	}
	cfg, err = Load(writeConfig(t, minimal+`
  - table: customers
    topic: crm.customers
read_models:
  - name: m
    store: postgres://u@localhost/read
    key: id
    sources:
      - entity: customers
        key: id
        owner: true
      - topic: explicit.topic
        entity: ignored
        key: id
        columns: {x: x}
      - entity: not_an_entity
        key: id
        columns: {y: y}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range cfg.ReadModels[0].Sources {
		got = append(got, s.Topic)
	}
	if want := []string{"crm.customers", "explicit.topic", "not_an_entity"}; !reflect.DeepEqual(got, want) {
		t.Errorf("topics: got %v, want %v", got, want)
	}
}

func TestReadModelErrors(t *testing.T) {
	t.Parallel()
	_, err := LoadSink(writeConfig(t, `
read_models:
  - name: "bad name"
    store: oracle://x/y
    key: [id, id]
    on_error: ignore
    colour: blue
    sources:
      - entity: a
        key: id
        owner: true
        columns: {id: other, v: {field: v, typ: int}, w: [1]}
      - entity: b
        key: [id, extra]
        owner: true
        columns: {v: v2, points: ""}
  - name: m2
    store: mysql://root@127.0.0.1:3306
    key: id
    sources: []
`), nil)
	if err == nil {
		t.Fatal("got nil, want errors")
	}
	for _, want := range []string{
		"read_models[0].colour: unknown key",
		"read_models[0].sources[0].columns.v.typ: unknown key",
		"read_models[0].sources[0].columns.w: want a field name",
		`read_models[0].name: "bad name"`,
		"read_models[0].store: \"oracle://x/y\": scheme \"oracle\"",
		`read_models[0].key: column "id" listed twice`,
		`read_models[0].on_error: "ignore" is not one of stop, dead_letter`,
		"read_models[0].sources[0].key: lists 1 field(s)",
		`read_models[0].sources[1].columns.v: column "v" is already written by read_models[0].sources[0]`,
		"read_models[0].sources[1].columns.points: the record field is missing",
		"read_models[0].sources: exactly one source must be owner: true",
		"read_models[1].store: \"mysql://root@127.0.0.1:3306\" names no database",
		"read_models[1].sources: at least one source is required",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q; got:\n%v", want, err)
		}
	}
}

func TestReadModelKeyColumnField(t *testing.T) {
	t.Parallel()
	_, err := LoadSink(writeConfig(t, `
read_models:
  - name: m
    store: sqlite:///tmp/x.db
    key: id
    sources:
      - entity: a
        key: id
        columns: {id: other}
`), nil)
	if want := `read_models[0].sources[0].columns.id: is key column "id": it must be field "id" as in read_models[0].sources[0].key, not "other"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestLoadSinkNeedsReadModels(t *testing.T) {
	t.Parallel()
	_, err := LoadSink(writeConfig(t, "kafka:\n  brokers: [127.0.0.1:9092]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "read_models: at least one read model is required") {
		t.Errorf("got %v, want read_models required", err)
	}
}

// TestReadModelStoreFromEnvironment: a store URL names its password as
// ${VAR}, so the secret stays out of the file; an unset variable is an
// error naming the key and the variable, and the password is never shown.
func TestReadModelStoreFromEnvironment(t *testing.T) {
	t.Setenv("REPLICATOR_TEST_READ_DB_PASSWORD", "s3cr$t")
	const file = `
read_models:
  - name: m
    store: postgres://app:${REPLICATOR_TEST_READ_DB_PASSWORD}@db.internal:5432/read
    key: id
    sources:
      - entity: customers
        key: id
        columns: {id: id}
`
	cfg, err := LoadSink(writeConfig(t, file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.ReadModels[0].Store, "postgres://app:s3cr$t@db.internal:5432/read"; got != want {
		t.Errorf("store: got %q, want %q", got, want)
	}
	if red := cfg.ReadModels[0].RedactedStore(); strings.Contains(red, "s3cr") {
		t.Errorf("RedactedStore shows the password: %q", red)
	}

	unset := strings.ReplaceAll(file, "REPLICATOR_TEST_READ_DB_PASSWORD", "REPLICATOR_TEST_UNSET_VARIABLE")
	_, err = LoadSink(writeConfig(t, unset), nil)
	if err == nil || !strings.Contains(err.Error(), "read_models[0].store") || !strings.Contains(err.Error(), "REPLICATOR_TEST_UNSET_VARIABLE") {
		t.Errorf("unset variable: got %v, want an error naming read_models[0].store and the variable", err)
	}
}

// A user's collisions: two read models writing one table of one store,
// columns that differ only in case where the store ignores case, a
// dead-letter topic that is an entity topic (poison records written among
// its records, and for the read model's own source consumed again), a
// dead-letter topic longer than Kafka allows.
func TestReadModelCollisions(t *testing.T) {
	t.Parallel()
	_, err := LoadSink(writeConfig(t, `
read_models:
  - name: a
    store: sqlite://./read.db
    table: profile
    key: id
    on_error: dead_letter
    dead_letter_topic: customers
    sources:
      - entity: customers
        key: id
        columns: {Name: name, name: nickname}
  - name: b
    store: sqlite://./read.db
    table: PROFILE
    key: id
    on_error: dead_letter
    dead_letter_topic: orders
    sources:
      - entity: customers
        key: id
        columns: {ID: id}
  - name: c
    store: postgres://u@localhost/read
    table: profile
    key: id
    on_error: dead_letter
    dead_letter_topic: `+strings.Repeat("d", 250)+`
    sources:
      - entity: orders
        key: id
        columns: {Name: name, name: nickname}
`), nil)
	if err == nil {
		t.Fatal("got nil, want errors")
	}
	for _, want := range []string{
		`read_models[0].dead_letter_topic: "customers" is an entity topic (read_models[0].sources[0])`,
		`read_models[0].sources[0].columns.name: column "name" and column "Name" are one column in this store`,
		`read_models[1].table: "PROFILE" in the same store is already the table of read_models[0] (a)`,
		`read_models[1].dead_letter_topic: "orders" is an entity topic (read_models[2].sources[0])`,
		`read_models[1].sources[0].columns.ID: column "ID" and column "id" are one column in this store`,
		`read_models[2].dead_letter_topic: "dddd`,
		`is not a legal Kafka topic name (1-249 letters`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q; got:\n%v", want, err)
		}
	}
	// PostgreSQL keeps the case of quoted names, and a table of the same
	// name in another store is another table.
	for _, notWant := range []string{"read_models[2].table", "read_models[2].sources[0].columns"} {
		if strings.Contains(err.Error(), notWant) {
			t.Errorf("errors name %s; got:\n%v", notWant, err)
		}
	}
}

// A dead-letter topic may not be one of Kafka's internal topics (names
// starting with __) nor the embedded registry's schemas topic: poison
// records written there would corrupt them.
func TestReadModelDeadLetterReservedTopics(t *testing.T) {
	t.Parallel()
	for _, topic := range []string{"__consumer_offsets", "__transaction_state", "__anything", "_replicator_schemas"} {
		t.Run(topic, func(t *testing.T) {
			t.Parallel()
			_, err := LoadSink(writeConfig(t, `
read_models:
  - name: m
    store: sqlite://./read.db
    key: id
    on_error: dead_letter
    dead_letter_topic: `+topic+`
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`), nil)
			want := `read_models[0].dead_letter_topic: "` + topic + `" is `
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "name another topic") {
				t.Fatalf("got %v, want an error containing %q and the fix", err, want)
			}
		})
	}
	// One underscore is an ordinary name.
	if _, err := LoadSink(writeConfig(t, `
read_models:
  - name: m
    store: sqlite://./read.db
    key: id
    on_error: dead_letter
    dead_letter_topic: _m_dlq
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`), nil); err != nil {
		t.Errorf("dead_letter_topic _m_dlq: got %v, want accepted", err)
	}
}

func TestReadModelGiveUpAfter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, value string
		want        time.Duration
		wantErr     string
	}{
		{name: "unset", value: "", want: 0},
		{name: "zero", value: "give_up_after: 0", want: 0},
		{name: "minutes", value: "give_up_after: 10m", want: 10 * time.Minute},
		{name: "zero seconds", value: "give_up_after: 0s", want: 0},
		{name: "negative", value: "give_up_after: -5s", wantErr: `read_models[0].give_up_after: "-5s" is not 0s (keep trying) or a duration from 1s to 8760h`},
		{name: "no unit", value: "give_up_after: 30", wantErr: `read_models[0].give_up_after: "30" is not 0s`},
		{name: "too short", value: "give_up_after: 500ms", wantErr: `read_models[0].give_up_after: "500ms" is not 0s`},
		{name: "too long", value: "give_up_after: 9000h", wantErr: `read_models[0].give_up_after: "9000h" is not 0s`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, ok := loadOneReadModel(t, c.value, c.wantErr)
			if !ok {
				return
			}
			if got := cfg.GiveUpAfter; got != c.want {
				t.Errorf("GiveUpAfter: got %v, want %v", got, c.want)
			}
		})
	}
}

func TestReadModelRebuildGCPercent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, value string
		want        int
		wantErr     string
	}{
		{name: "unset", value: "", want: DefaultRebuildGCPercent},
		{name: "zero leaves it alone", value: "rebuild_gc_percent: 0", want: 0},
		{name: "set", value: "rebuild_gc_percent: 150", want: 150},
		{name: "too high", value: "rebuild_gc_percent: 1001", wantErr: `read_models[0].rebuild_gc_percent: "1001" must be a whole number from 0 to 1000`},
		{name: "negative", value: "rebuild_gc_percent: -1", wantErr: `read_models[0].rebuild_gc_percent: "-1" must be a whole number from 0 to 1000`},
		{name: "not a number", value: "rebuild_gc_percent: lots", wantErr: `read_models[0].rebuild_gc_percent: "lots" must be`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, ok := loadOneReadModel(t, c.value, c.wantErr)
			if !ok {
				return
			}
			if got := cfg.RebuildGCPercent; got != c.want {
				t.Errorf("RebuildGCPercent: got %d, want %d", got, c.want)
			}
		})
	}
}

// loadOneReadModel loads a sink config of one read model with line added
// to it. With wantErr set it checks the load fails saying so and returns
// false; otherwise the load must succeed.
func loadOneReadModel(t *testing.T, line, wantErr string) (ReadModel, bool) {
	t.Helper()
	cfg, err := LoadSink(writeConfig(t, `
read_models:
  - name: m
    store: sqlite://./read.db
    key: id
    `+line+`
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`), nil)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("got %v, want an error containing %q", err, wantErr)
		}
		return ReadModel{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg.ReadModels[0], true
}

// TestStoreURLPasswordNeedsEncoding: a ${NAME} whose value holds a
// character a URL gives a meaning to ('#' here: the rest is a fragment)
// leaves a store URL without a host; the error says to percent-encode the
// password, and shows it in no form.
func TestStoreURLPasswordNeedsEncoding(t *testing.T) {
	t.Setenv("REPLICATOR_TEST_READ_DB_PASSWORD", "hunter#2")
	_, err := LoadSink(writeConfig(t, `
read_models:
  - name: m
    store: mysql://app:${REPLICATOR_TEST_READ_DB_PASSWORD}@db.internal:3306/read
    key: id
    sources:
      - entity: customers
        key: id
        columns: {id: id}
`), nil)
	if err == nil || !strings.Contains(err.Error(), "read_models[0].store") || !strings.Contains(err.Error(), "percent-encoded (%23") {
		t.Errorf("got %v, want an error naming read_models[0].store and saying to percent-encode the password", err)
	}
	if err != nil && strings.Contains(err.Error(), "hunter") {
		t.Errorf("the error shows the password: %v", err)
	}
}
