package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fitPlan is a plan without topics behind it: key columns, then columns
// of the owner (source 0) and of a non-owner (source 1, topic loyalty).
func fitPlan(table string, key []column, cols ...column) *plan {
	m := &ReadModel{Name: "fit", Table: table, Sources: []Source{{Topic: "customers", Owner: true}, {Topic: "loyalty"}}}
	p := &plan{model: m, owner: 0, sources: []sourcePlan{{topic: "customers"}, {topic: "loyalty"}}}
	for _, k := range key {
		m.Key = append(m.Key, k.name)
		k.source = -1
		p.columns = append(p.columns, k)
	}
	for _, c := range cols {
		p.sources[c.source].cols = append(p.sources[c.source].cols, len(p.columns))
		p.sources[c.source].fields = append(p.sources[c.source].fields, fieldRef{name: c.name})
		p.columns = append(p.columns, c)
	}
	return p
}

// TestFitAcceptsCreatedTables: every column type the sink creates fits
// its own check, so a table the sink created in an earlier run is used
// again (ensureTable a second time accepts it).
func TestFitAcceptsCreatedTables(t *testing.T) {
	t.Parallel()
	kinds := []fieldType{
		{kind: kindString}, {kind: kindInt}, {kind: kindLong}, {kind: kindFloat}, {kind: kindDouble}, {kind: kindBool},
		{kind: kindBytes}, {kind: kindDecimal, precision: 12, scale: 3}, {kind: kindUUID}, {kind: kindDate}, {kind: kindTime},
		{kind: kindTimestamp}, {kind: kindLocalTimestamp}, {kind: kindJSON},
		{kind: kindJSON, array: true, items: kindString}, {kind: kindJSON, array: true, items: kindInt}, {kind: kindJSON, array: true, items: kindLong},
		{kind: kindJSON, array: true, items: kindFloat}, {kind: kindJSON, array: true, items: kindDouble}, {kind: kindJSON, array: true, items: kindBool},
	}
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			db, d, err := openStore(sk.fresh(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			st := &store{db: db, d: d}
			for _, key := range []fieldType{{kind: kindLong}, {kind: kindString}, {kind: kindUUID}, {kind: kindBytes}, {kind: kindDecimal, precision: 10, scale: 0}} {
				var cols []column
				for i, k := range kinds {
					for src := 0; src < 2; src++ {
						k.nullable = src == 1 || i%2 == 0
						cols = append(cols, column{name: fmt.Sprintf("c%d s%d", i, src), typ: k, source: src})
					}
				}
				p := fitPlan(fmt.Sprintf("made %d", key.kind), []column{{name: "k", typ: key}}, cols...)
				if created, _, err := st.ensureTable(t.Context(), p); err != nil || !created {
					t.Fatalf("key %+v: create: %v, %v", key, created, err)
				}
				if created, _, err := st.ensureTable(t.Context(), p); err != nil || created {
					t.Errorf("key %+v: the sink's own table, checked: got created %v, %v; want it accepted", key, created, err)
				}
			}
		})
	}
}

// fitCase is an existing table and what the fit check says of it: the
// error's parts (none: accepted) and a note's.
type fitCase struct {
	name   string
	create string // with %s for the quoted table name
	want   []string
	note   string
}

// TestFitRefusesMisfits: a table the sink did not create is used when its
// columns hold the fields (extra columns and wider types are fine), and
// refused, naming table, column, found and expected and the fix, when a
// type is too narrow, a NOT NULL column may get a null, an extra column
// can never be filled, or the key is not what the upsert matches on.
func TestFitRefusesMisfits(t *testing.T) {
	t.Parallel()
	p := fitPlan("fit t", []column{{name: "id", typ: fieldType{kind: kindLong}}},
		column{name: "name", typ: fieldType{kind: kindString}, source: 0},
		column{name: "tier", typ: fieldType{kind: kindString, nullable: true}, source: 0},
		column{name: "amount", typ: fieldType{kind: kindDecimal, precision: 10, scale: 2, nullable: true}, source: 0},
		column{name: "at", typ: fieldType{kind: kindTimestamp, nullable: true}, source: 0},
		column{name: "points", typ: fieldType{kind: kindLong, nullable: true}, source: 1},
	)
	cases := map[string][]fitCase{
		"postgres": {
			{name: "fits", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier varchar(16), amount numeric(14,4), "at" timestamptz, points numeric, note text, made timestamptz NOT NULL DEFAULT now())`,
				note: `table "fit t" column "tier" is character varying(16): a value longer than 16 characters is refused`},
			{name: "unique index, surrogate key", create: `CREATE TABLE %s (rid bigserial PRIMARY KEY, id bigint NOT NULL UNIQUE, name text NOT NULL, tier text, amount numeric, "at" timestamptz, points bigint)`},
			{name: "narrow integer", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text, amount numeric(10,2), "at" timestamptz, points smallint)`,
				want: []string{`table "fit t" column "points": found type smallint, expected bigint or numeric with 19 integer digits to hold an Avro long (64 bits) exactly: ALTER TABLE "fit t" ALTER COLUMN "points" TYPE bigint`}},
			{name: "narrow decimal and no time zone", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text, amount numeric(10,3), "at" timestamp, points bigint)`,
				want: []string{`column "amount": found type numeric(10,3), expected numeric(10,2) or one with at least as many integer and fraction digits`, `column "at": found type timestamp without time zone, expected timestamptz`}},
			{name: "NOT NULL nullable field", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text NOT NULL, amount numeric, "at" timestamptz, points bigint)`,
				want: []string{`table "fit t" column "tier": found NOT NULL, expected nullable: its field is nullable: ALTER TABLE "fit t" ALTER COLUMN "tier" DROP NOT NULL`}},
			{name: "NOT NULL non-owner", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text, amount numeric, "at" timestamptz, points bigint NOT NULL)`,
				want: []string{`column "points": found NOT NULL, expected nullable: it is written by source topic loyalty, which is not the owner`}},
			{name: "extra NOT NULL", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text, amount numeric, "at" timestamptz, points bigint, note text NOT NULL)`,
				want: []string{`table "fit t" column "note" is NOT NULL without a default, and the sink does not write it`}},
			{name: "other key", create: `CREATE TABLE %s (id bigint NOT NULL, name text PRIMARY KEY, tier text, amount numeric, "at" timestamptz, points bigint)`,
				want: []string{`table "fit t": found primary key ("name") and no unique index on exactly the read model's key ("id")`}},
			{name: "partial unique", create: `CREATE TABLE %s (id bigint NOT NULL, name text NOT NULL, tier text, amount numeric, "at" timestamptz, points bigint); CREATE UNIQUE INDEX ON %[1]s (id) WHERE id > 0`,
				want: []string{`found no primary key and no unique index on exactly the read model's key ("id")`}},
			{name: "missing column", create: `CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, tier text, amount numeric, points bigint)`,
				want: []string{`table "fit t" exists but lacks column(s) "at"`}},
		},
		"mysql": {
			{name: "fits", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name longtext NOT NULL, tier varchar(16), amount decimal(14,4), `at` datetime(6), points decimal(20,0), note text, made datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4",
				note: "table `fit t` column `tier` is varchar(16): a value longer than 16 characters is refused"},
			{name: "unique index, surrogate key", create: "CREATE TABLE %s (rid bigint AUTO_INCREMENT PRIMARY KEY, id bigint NOT NULL UNIQUE, name longtext NOT NULL, tier longtext, amount decimal(10,2), `at` datetime(6), points bigint) CHARACTER SET utf8mb4"},
			{name: "narrow integer", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name longtext NOT NULL, tier longtext, amount decimal(10,2), `at` datetime(6), points int) CHARACTER SET utf8mb4",
				want: []string{"table `fit t` column `points`: found type int(11), expected bigint (signed) or decimal with 19 integer digits to hold an Avro long (64 bits) exactly: ALTER TABLE `fit t` MODIFY `points` bigint NULL"}},
			{name: "seconds only, latin1", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name longtext CHARACTER SET latin1 NOT NULL, tier longtext, amount decimal(10,2), `at` datetime, points bigint) CHARACTER SET utf8mb4",
				want: []string{"column `at`: found type datetime, expected datetime(6)", "column `name`: found type longtext, expected longtext, or varchar or another text type in character set utf8mb4 (found latin1)"}},
			{name: "NOT NULL non-owner", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name longtext NOT NULL, tier longtext, amount decimal(10,2), `at` datetime(6), points bigint NOT NULL) CHARACTER SET utf8mb4",
				want: []string{"column `points`: found NOT NULL, expected nullable: it is written by source topic loyalty, which is not the owner: a row exists before that source writes it, and its tombstone clears it: ALTER TABLE `fit t` MODIFY `points` bigint(20) NULL"}},
			{name: "extra NOT NULL", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name longtext NOT NULL, tier longtext, amount decimal(10,2), `at` datetime(6), points bigint, note longtext NOT NULL) CHARACTER SET utf8mb4",
				want: []string{"column `note` is NOT NULL without a default"}},
			{name: "other unique", create: "CREATE TABLE %s (id bigint PRIMARY KEY, name varchar(100) NOT NULL UNIQUE, tier longtext, amount decimal(10,2), `at` datetime(6), points bigint) CHARACTER SET utf8mb4",
				want: []string{"table `fit t`: unique index `name` on (`name`) is not on the read model's key (`id`): INSERT … ON DUPLICATE KEY UPDATE would update the row it collides with"}},
			{name: "prefix key", create: "CREATE TABLE %s (id bigint NOT NULL, name longtext NOT NULL, tier longtext, amount decimal(10,2), `at` datetime(6), points bigint, PRIMARY KEY (id, name(10))) CHARACTER SET utf8mb4",
				want: []string{"found primary key (`id`, `name`) and no unique index on exactly the read model's key (`id`)"}},
		},
		"sqlite": {
			{name: "fits", create: `CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier VARCHAR(16), amount TEXT, "at" TEXT, points BIGINT, note, made TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)`},
			{name: "unique index", create: `CREATE TABLE %s (id INTEGER NOT NULL UNIQUE, name TEXT NOT NULL, tier TEXT, amount TEXT, "at" TEXT, points INTEGER)`},
			{name: "numeric affinity for a decimal", create: `CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier TEXT, amount DECIMAL(10,2), "at" TEXT, points REAL)`,
				want: []string{`table "fit t" column "amount": found type DECIMAL(10,2), expected TEXT (NUMERIC affinity would turn text that looks like a number into one) to hold an Avro decimal(10,2) exactly: SQLite cannot change a column's type`,
					`column "points": found type REAL, expected INTEGER`}},
			{name: "NOT NULL nullable field", create: `CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier TEXT NOT NULL, amount TEXT, "at" TEXT, points INTEGER)`,
				want: []string{`column "tier": found NOT NULL, expected nullable: its field is nullable: SQLite cannot drop NOT NULL`}},
			{name: "composite key", create: `CREATE TABLE %s (id INTEGER NOT NULL, name TEXT NOT NULL, tier TEXT, amount TEXT, "at" TEXT, points INTEGER, PRIMARY KEY (id, name))`,
				want: []string{`found primary key ("id", "name") and no unique index on exactly the read model's key ("id")`}},
			{name: "extra NOT NULL", create: `CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier TEXT, amount TEXT, "at" TEXT, points INTEGER, note TEXT NOT NULL)`,
				want: []string{`column "note" is NOT NULL without a default`}},
		},
	}
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases[sk.name] {
				t.Run(c.name, func(t *testing.T) {
					db, d, err := openStore(sk.fresh(t))
					if err != nil {
						t.Fatal(err)
					}
					defer db.Close()
					create := strings.ReplaceAll(c.create, "%[1]s", d.quote(p.model.Table))
					for _, stmt := range strings.Split(fmt.Sprintf(strings.Replace(create, "%s", "%[1]s", 1), d.quote(p.model.Table)), "; ") {
						if _, err := db.Exec(stmt); err != nil {
							t.Fatalf("%s: %v", stmt, err)
						}
					}
					st := &store{db: db, d: d}
					_, _, err = st.ensureTable(t.Context(), p)
					if len(c.want) == 0 && err != nil {
						t.Errorf("got %v, want the table accepted", err)
					}
					if len(c.want) > 0 && err == nil {
						t.Errorf("got the table accepted, want %q", c.want)
					}
					for _, w := range c.want {
						if err != nil && !strings.Contains(err.Error(), w) {
							t.Errorf("got %v\nwant it to say %q", err, w)
						}
					}
					// check reports the same, and the notes.
					desc, err := d.describe(t.Context(), db, p.model.Table)
					if err != nil {
						t.Fatal(err)
					}
					notes, problems := fitTable(d, p, desc)
					if fmt.Sprint(errors.Join(problems...)) != fmt.Sprint(func() error { _, _, err := st.ensureTable(t.Context(), p); return err }()) {
						t.Errorf("check's problems %v differ from the sink's refusal", problems)
					}
					if c.note != "" && !strings.Contains(strings.Join(notes, "\n"), c.note) {
						t.Errorf("notes %q lack %q", notes, c.note)
					}
				})
			}
		})
	}
}

// TestHolds pins the compatibility tables' decisions that the tables
// above do not reach: what each store accepts for a field, and what not.
func TestHolds(t *testing.T) {
	t.Parallel()
	col := func(typ string) colDesc {
		c := colDesc{typ: typ}
		c.base, c.mods, c.array = parseType(typ)
		return c
	}
	my := func(typ, charset string) colDesc {
		c := col(typ)
		c.charset = charset
		c.unsigned = strings.Contains(typ, "unsigned")
		c.base = strings.Fields(c.base)[0]
		return c
	}
	sq := func(typ string) colDesc { return colDesc{typ: typ, base: sqliteAffinity(typ)} }
	long, str := fieldType{kind: kindLong}, fieldType{kind: kindString}
	for _, c := range []struct {
		name string
		d    dialect
		t    fieldType
		c    colDesc
		ok   bool
		note bool
	}{
		{"pg long into integer", postgresDialect{}, long, col("integer"), false, false},
		{"pg long into numeric(20,0)", postgresDialect{}, long, col("numeric(20,0)"), true, false},
		{"pg long into numeric(18,0)", postgresDialect{}, long, col("numeric(18,0)"), false, false},
		{"pg int into bigint", postgresDialect{}, fieldType{kind: kindInt}, col("bigint"), true, false},
		{"pg string into varchar(20)", postgresDialect{}, str, col("character varying(20)"), true, true},
		{"pg string into char(20)", postgresDialect{}, str, col("character(20)"), false, false},
		{"pg time(3)", postgresDialect{}, fieldType{kind: kindTime}, col("time(3) without time zone"), false, false},
		{"pg timestamp into timestamptz(6)", postgresDialect{}, fieldType{kind: kindTimestamp}, col("timestamp(6) with time zone"), true, false},
		{"pg text array", postgresDialect{}, fieldType{kind: kindJSON, array: true, items: kindString}, col("text[]"), true, false},
		{"pg text array into jsonb", postgresDialect{}, fieldType{kind: kindJSON, array: true, items: kindString}, col("jsonb"), false, false},
		{"mysql long into unsigned bigint", mysqlDialect{}, long, my("bigint(20) unsigned", ""), false, false},
		{"mysql timestamp into timestamp(6)", mysqlDialect{}, fieldType{kind: kindTimestamp}, my("timestamp(6)", ""), false, false},
		{"mysql uuid into MariaDB uuid", mysqlDialect{}, fieldType{kind: kindUUID}, my("uuid", ""), true, false},
		{"mysql string into char(10)", mysqlDialect{}, str, my("char(10)", "utf8mb4"), false, false},
		{"mysql string into utf8mb3 text", mysqlDialect{}, str, my("text", "utf8mb3"), false, false},
		{"mysql string into varchar(40)", mysqlDialect{}, str, my("varchar(40)", "utf8mb4"), true, true},
		{"mysql bytes into varbinary(16)", mysqlDialect{}, fieldType{kind: kindBytes}, my("varbinary(16)", ""), true, true},
		{"sqlite decimal into NUMERIC", sqliteDialect{}, fieldType{kind: kindDecimal, precision: 5, scale: 2}, sq("NUMERIC"), false, false},
		{"sqlite string into untyped", sqliteDialect{}, str, sq(""), true, false},
		{"sqlite double into INTEGER", sqliteDialect{}, fieldType{kind: kindDouble}, sq("INTEGER"), false, false},
	} {
		f := c.d.holds(c.t, c.c)
		if f.ok != c.ok || (f.note != "") != c.note {
			t.Errorf("%s: got ok %v note %q, want ok %v, a note %v", c.name, f.ok, f.note, c.ok, c.note)
		}
	}
}

// syncBuffer is a log destination a sink's goroutine writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFitNotesLoggedAtStart: the fit check's notes on an existing table
// (a string into a bounded type), which `replicator check` reports, are
// logged once when the sink starts too, one line per note naming the read
// model, the table and the column.
func TestFitNotesLoggedAtStart(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sk     storeKind
		create string
	}{
		{postgresStore(t), `CREATE TABLE profile (customer_id bigint PRIMARY KEY, display_name varchar(40) NOT NULL, tier varchar(16))`},
		{mysqlStore(), "CREATE TABLE profile (customer_id bigint PRIMARY KEY, display_name varchar(40) NOT NULL, tier varchar(16)) CHARACTER SET utf8mb4"},
	} {
		t.Run(c.sk.name, func(t *testing.T) {
			t.Parallel()
			url := c.sk.fresh(t)
			db, _, err := openStore(url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(c.create); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			w.put(cust(1, "ann", "gold"))
			var logs syncBuffer
			s, err := New(Config{Model: customerModel("profile"), StoreURL: url, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			deadline := time.Now().Add(testTimeout)
			for s.Stats().Records < 1 {
				if time.Now().After(deadline) {
					t.Fatalf("sink consumed nothing within %v", testTimeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			var notes []string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "characters is refused") {
					notes = append(notes, l)
				}
			}
			if len(notes) != 2 {
				t.Fatalf("got %d note lines, want 2 (columns display_name and tier, once each):\n%s", len(notes), logs.String())
			}
			for i, col := range []string{"display_name", "tier"} {
				l := notes[i]
				if !strings.Contains(l, "read_model=profile") || !strings.Contains(l, "table=profile") || !strings.Contains(l, "column") || !strings.Contains(l, col) {
					t.Errorf("note line %q: want it to name read model profile, table profile and column %s", l, col)
				}
			}
		})
	}
}
