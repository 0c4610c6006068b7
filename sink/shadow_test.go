package sink

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRebuildKeepsTable: a rebuild creates its table from the live one, so
// what the user added to it survives the swap: an extra column, an index
// (and on PostgreSQL a grant, table and column), twice in a row; a column
// the read model gained is added. A view on the table, which the swap
// would break (PostgreSQL: the drop fails; SQLite: the rename rewrites it
// to the dropped name), is refused before anything is built, naming it;
// on MySQL/MariaDB a view names its table and follows the swap.
func TestRebuildKeepsTable(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		for k := int64(1); k <= 5; k++ {
			w.put(cust(k, fmt.Sprint("n", k), nil))
		}
		r := e.start(customerModel("profile"), store)
		r.waitRecords(t, 5)
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		db, _, err := openStore(store)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() }) // after the role's cleanup below
		exec := func(q string) {
			t.Helper()
			if _, err := db.ExecContext(t.Context(), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		exec("ALTER TABLE profile ADD COLUMN note varchar(20) DEFAULT 'mine'")
		switch sk.name {
		case "postgres":
			// Its sequence is owned by the live table's column, and the
			// rebuilt table's default draws from it.
			exec("ALTER TABLE profile ADD COLUMN seq bigserial")
		case "sqlite":
			// A foreign key to the table itself, which must reference
			// the rebuilt table after the swap, not the dropped one.
			exec(`ALTER TABLE profile ADD COLUMN parent integer REFERENCES "profile" (customer_id)`)
		}
		if sk.name == "mysql" { // a longtext column is indexed by a prefix
			exec("CREATE INDEX profile_by_name ON profile (display_name(20))")
		} else {
			exec("CREATE INDEX profile_by_name ON profile (display_name)")
		}
		role := fmt.Sprintf("reader_%d", rand.Uint32())
		if sk.name == "postgres" {
			exec("CREATE ROLE " + role)
			t.Cleanup(func() {
				// Owned objects are gone with the test's database; the
				// role is the cluster's.
				db.Exec("DROP OWNED BY " + role)
				db.Exec("DROP ROLE " + role)
			})
			exec("GRANT SELECT ON profile TO " + role)
			exec("GRANT UPDATE (note) ON profile TO " + role)
		}
		// A trigger is not copied (it would fire for every row the
		// rebuild loads): the rebuild says so.
		switch sk.name {
		case "sqlite":
			exec("CREATE TRIGGER profile_touch AFTER UPDATE ON profile BEGIN SELECT 1; END")
		case "mysql":
			exec("CREATE TRIGGER profile_touch BEFORE UPDATE ON profile FOR EACH ROW SET NEW.note = NEW.note")
		case "postgres":
			exec("CREATE FUNCTION profile_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
			exec("CREATE TRIGGER profile_touch BEFORE UPDATE ON profile FOR EACH ROW EXECUTE FUNCTION profile_touch()")
		}
		var logs bytes.Buffer // written under the handler's lock, read after Rebuild returns
		log := slog.New(slog.NewTextHandler(&logs, nil))
		m := customerModel("profile")
		m.Sources[0].Columns = append(m.Sources[0].Columns, Column{Name: "name_again", Field: "name"})
		rebuild := func() error {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			return Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, Logger: log}, nil)
		}
		exec("CREATE VIEW profile_names AS SELECT customer_id, display_name FROM profile")
		err = rebuild()
		if sk.name == "mysql" {
			if err != nil {
				t.Fatalf("Rebuild with a view: %v", err)
			}
			wantRows(t, store, "profile_names", []string{"customer_id", "display_name"}, "1|n1", "2|n2", "3|n3", "4|n4", "5|n5")
		} else {
			want := `table "profile": view profile_names depend(s) on it`
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "drop them, rebuild, and create them again") {
				t.Fatalf("Rebuild with a view: got %v, want a refusal naming the view (%q)", err, want)
			}
			// Nothing was built: the live table answers as it was.
			wantRows(t, store, "profile", []string{"customer_id", "display_name", "note"}, "1|n1|mine", "2|n2|mine", "3|n3|mine", "4|n4|mine", "5|n5|mine")
		}
		exec("DROP VIEW profile_names")
		if sk.name == "postgres" {
			// A child table would make the old table's drop fail at
			// the very end: refused at the start.
			exec("CREATE TABLE profile_child () INHERITS (profile)")
			err := rebuild()
			want := `table "profile": table profile_child (a child: inheritance or partition) depend(s) on it`
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Rebuild with a child table: got %v, want a refusal naming it (%q)", err, want)
			}
			exec("DROP TABLE profile_child")
		}
		for i := range 2 {
			if err := rebuild(); err != nil {
				t.Fatalf("Rebuild %d: %v", i+1, err)
			}
			wantRows(t, store, "profile", []string{"customer_id", "display_name", "note", "name_again"},
				"1|n1|mine|n1", "2|n2|mine|n2", "3|n3|mine|n3", "4|n4|mine|n4", "5|n5|mine|n5")
			var indexed int
			var q string
			switch sk.name {
			case "sqlite":
				q = `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'profile' AND sql LIKE '%(display_name)%'`
			case "postgres":
				q = `SELECT count(*) FROM pg_indexes WHERE tablename = 'profile' AND indexdef LIKE '%(display_name)%'`
			case "mysql":
				q = `SELECT count(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = 'display_name'`
			}
			if err := db.QueryRowContext(t.Context(), q).Scan(&indexed); err != nil {
				t.Fatal(err)
			}
			if indexed != 1 {
				t.Errorf("after rebuild %d: %d index(es) on profile (display_name), want 1", i+1, indexed)
			}
			if i == 0 {
				if got := logs.String(); !strings.Contains(got, "has trigger(s) ") || !strings.Contains(got, "profile_touch") || !strings.Contains(got, "create them again") {
					t.Errorf("rebuild log lacks the warning that trigger profile_touch is not kept:\n%s", got)
				}
			}
			switch sk.name {
			case "postgres":
				// The serial column's sequence went to the new table,
				// and numbers rows written after the swap.
				var seq sql.NullInt64
				var owned sql.NullString
				if err := db.QueryRowContext(t.Context(), `INSERT INTO profile (customer_id, display_name) VALUES (1000, 'after')
						RETURNING seq, pg_get_serial_sequence('profile', 'seq')`).Scan(&seq, &owned); err != nil {
					t.Fatalf("after rebuild %d: insert a row: %v", i+1, err)
				}
				var distinct, all int
				if err := db.QueryRowContext(t.Context(), "SELECT count(DISTINCT seq), count(*) FROM profile").Scan(&distinct, &all); err != nil {
					t.Fatal(err)
				}
				if !seq.Valid || !owned.Valid || distinct != all {
					t.Errorf("after rebuild %d: a new row's seq %v, the sequence owned by profile.seq %v, %d distinct seq in %d rows; want a number, a sequence, all distinct", i+1, seq, owned, distinct, all)
				}
				exec("DELETE FROM profile WHERE customer_id = 1000")
			case "sqlite":
				fk, err := queryColumns(t.Context(), db, `SELECT "table" FROM pragma_foreign_key_list('profile')`)
				if err != nil {
					t.Fatal(err)
				}
				if len(fk) != 1 || fk[0] != "profile" {
					t.Errorf("after rebuild %d: the foreign keys of profile reference %q, want [profile] (itself)", i+1, fk)
				}
			}
			if sk.name == "postgres" {
				var sel, upd, updName bool
				if err := db.QueryRowContext(t.Context(), `SELECT has_table_privilege($1, 'profile', 'SELECT'),
						has_column_privilege($1, 'profile', 'note', 'UPDATE'), has_column_privilege($1, 'profile', 'display_name', 'UPDATE')`, role).Scan(&sel, &upd, &updName); err != nil {
					t.Fatal(err)
				}
				if !sel || !upd || updName {
					t.Errorf("after rebuild %d: role %s may select %v, update note %v, update display_name %v; want true, true, false (the grants kept)", i+1, role, sel, upd, updName)
				}
			}
		}
	})
}

// TestRebuildTableNameCase: SQLite ignores the case of names, so a read
// model's table configured as Profile is the user's table profile; a
// rebuild finds its definition, indexes and self-reference under either
// case, and keeps them.
func TestRebuildTableNameCase(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	for k := int64(1); k <= 3; k++ {
		w.put(cust(k, fmt.Sprint("n", k), nil))
	}
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 3)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	db, _, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE INDEX profile_by_name ON profile (display_name)",
		"ALTER TABLE profile ADD COLUMN parent integer REFERENCES PROFILE (customer_id)",
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	m := customerModel("profile")
	m.Table = "Profile"
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}, nil); err != nil {
		t.Fatalf("Rebuild of table Profile (created as profile): %v", err)
	}
	wantRows(t, store, "profile", []string{"customer_id", "display_name", "parent"}, "1|n1|NULL", "2|n2|NULL", "3|n3|NULL")
	indexes, err := queryColumns(t.Context(), db, `SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'Profile' AND sql LIKE '%(display_name)%'`)
	if err != nil {
		t.Fatal(err)
	}
	fk, err := queryColumns(t.Context(), db, `SELECT "table" FROM pragma_foreign_key_list('profile')`)
	if err != nil {
		t.Fatal(err)
	}
	if len(indexes) != 1 || len(fk) != 1 || !strings.EqualFold(fk[0], "profile") {
		t.Errorf("after the rebuild: indexes on (display_name) %q, want one; foreign keys to %q, want [Profile] (itself)", indexes, fk)
	}
}

// TestSQLiteSelfReferences rewrites the foreign keys of a CREATE TABLE
// statement that reference the table itself, whatever their quoting and
// case, and nothing else.
func TestSQLiteSelfReferences(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, stmt, want string }{
		{"bare", `CREATE TABLE "p2"(a INTEGER PRIMARY KEY, b REFERENCES profile(a))`, `CREATE TABLE "p2"(a INTEGER PRIMARY KEY, b REFERENCES "p2"(a))`},
		{"quoted, other case, no columns", "CREATE TABLE \"p2\"(a, b references\n\t\"PROFILE\", c REFERENCES [profile] , d REFERENCES `profile`)",
			"CREATE TABLE \"p2\"(a, b references\n\t\"p2\", c REFERENCES \"p2\" , d REFERENCES \"p2\")"},
		{"comma after the name", `CREATE TABLE "p2"(a, b REFERENCES profile, c)`, `CREATE TABLE "p2"(a, b REFERENCES "p2", c)`},
		{"table constraint", `CREATE TABLE "p2"(a, b, FOREIGN KEY (b) REFERENCES profile (a) ON DELETE CASCADE)`, `CREATE TABLE "p2"(a, b, FOREIGN KEY (b) REFERENCES "p2" (a) ON DELETE CASCADE)`},
		{"another table", `CREATE TABLE "p2"(a, b REFERENCES profile_x(a), c REFERENCES "other")`, `CREATE TABLE "p2"(a, b REFERENCES profile_x(a), c REFERENCES "other")`},
		{"in a string, a name, a comment", `CREATE TABLE "p2"(a DEFAULT 'REFERENCES profile', "x REFERENCES profile" int, -- REFERENCES profile
 /* REFERENCES profile */ b, my_references profile)`, `CREATE TABLE "p2"(a DEFAULT 'REFERENCES profile', "x REFERENCES profile" int, -- REFERENCES profile
 /* REFERENCES profile */ b, my_references profile)`},
		{"quote doubled", `CREATE TABLE "p2"(a REFERENCES "pro""file")`, `CREATE TABLE "p2"(a REFERENCES "p2")`},
	} {
		t.Run(c.name, func(t *testing.T) {
			table := "profile"
			if c.name == "quote doubled" {
				table = `pro"file`
			}
			got, err := sqliteSelfReferences(c.stmt, table, `"p2"`)
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestSQLiteRename rewrites the CREATE statements SQLite keeps, whatever
// the quoting of the names.
func TestSQLiteRename(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, stmt, to, on, want string
	}{
		{"bare table", `CREATE TABLE profile(a INTEGER PRIMARY KEY)`, `"p2"`, "", `CREATE TABLE "p2"(a INTEGER PRIMARY KEY)`},
		{"quoted table", `CREATE TABLE "we""ird ta(ble" (a)`, `"p2"`, "", `CREATE TABLE "p2" (a)`},
		{"bracket table", "CREATE TABLE [x y]\n(a)", `"p2"`, "", "CREATE TABLE \"p2\"\n(a)"},
		{"index", `CREATE INDEX i ON profile (a)`, `"i__rebuild"`, `"p2"`, `CREATE INDEX "i__rebuild" ON "p2" (a)`},
		{"unique index", "CREATE unique INDEX `i x` on\t'pro''file'(a, b)", `"j"`, `"p2"`, "CREATE unique INDEX \"j\" on\t\"p2\"(a, b)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := sqliteRename(c.stmt, []string{"CREATE TABLE", "CREATE INDEX", "CREATE UNIQUE INDEX"}, c.to, c.on)
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := sqliteRename(`CREATE VIRTUAL TABLE x USING fts5(a)`, []string{"CREATE TABLE"}, `"y"`, ""); err == nil {
		t.Error("a virtual table: got no error, want one")
	}
}

// TestSQLiteRetype rewrites the declared type of the named columns of a
// CREATE TABLE statement, keeping their constraints and everything else.
func TestSQLiteRetype(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, stmt string
		types      map[string]string
		want       string
	}{
		{"modifiers and constraints", `CREATE TABLE "p"(id INTEGER PRIMARY KEY, tier varchar(10) NOT NULL DEFAULT 'x', n numeric ( 12, 2 ) CHECK (n > 0))`,
			map[string]string{"tier": "TEXT", "n": "text"},
			`CREATE TABLE "p"(id INTEGER PRIMARY KEY, tier TEXT NOT NULL DEFAULT 'x', n text CHECK (n > 0))`},
		{"no type, last column", `CREATE TABLE "p"(id, v)`, map[string]string{"v": "INTEGER"}, `CREATE TABLE "p"(id, v INTEGER)`},
		{"no type, constraint", `CREATE TABLE "p"(id, v NOT NULL, w)`, map[string]string{"v": "INTEGER"}, `CREATE TABLE "p"(id, v INTEGER NOT NULL, w)`},
		{"quoted name, other case, two words", "CREATE TABLE \"p\"(\"Id\" int, [TIER] double precision, -- tier text\n x /* a, b */ text, PRIMARY KEY (\"Id\"))",
			map[string]string{"tier": "TEXT", "id": "INTEGER"},
			"CREATE TABLE \"p\"(\"Id\" INTEGER, [TIER] TEXT, -- tier text\n x /* a, b */ text, PRIMARY KEY (\"Id\"))"},
		{"table constraint named like a column", `CREATE TABLE "p"(a int, b int, CONSTRAINT c CHECK (b, 'tier' <> 'tier'), UNIQUE (a))`,
			map[string]string{"b": "TEXT"}, `CREATE TABLE "p"(a int, b TEXT, CONSTRAINT c CHECK (b, 'tier' <> 'tier'), UNIQUE (a))`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := sqliteRetype(c.stmt, c.types)
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := sqliteRetype(`CREATE TABLE "p"(a int)`, map[string]string{"b": "TEXT"}); err == nil || !strings.Contains(err.Error(), `column "b"`) {
		t.Errorf("a column the statement lacks: got %v, want an error naming it", err)
	}
}

// TestRebuildRetypes: a rebuild gives the rebuilt table the types the read
// model wants now, where the live table has others: a column whose type:
// in the config changed (a longer value than the old type takes is then
// loaded), and one whose field was widened in the schemas (int to long: a
// value past 32 bits is then loaded); a type: spelled otherwise than the
// catalog prints it is the same type and left alone. What the user added
// (a column, an index) survives. `check` notes the changed type: before
// the rebuild, not after. On PostgreSQL, an index the new type does not
// take refuses the rebuild, naming the column and the fix.
func TestRebuildRetypes(t *testing.T) {
	t.Parallel()
	const valueInt = `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null},{"name":"visits","type":"int"}]}`
	valueLong := strings.Replace(valueInt, `{"name":"visits","type":"int"}`, `{"name":"visits","type":"long"}`, 1)
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, valueInt)
			put := func(id int64, tier string, visits any) {
				t.Helper()
				w.put(map[string]any{"id": id}, map[string]any{"id": id, "name": fmt.Sprint("n", id), "tier": tier, "visits": visits})
			}
			model := func(nameType, tierType string) ReadModel {
				m := customerModel("profile")
				m.Sources[0].Columns = []Column{{Name: "customer_id", Field: "id"}, {Name: "display_name", Field: "name", Type: nameType},
					{Name: "tier", Field: "tier", Type: tierType}, {Name: "visits", Field: "visits"}}
				return m
			}
			for k := int64(1); k <= 3; k++ {
				put(k, "gold", int32(k))
			}
			r := e.start(model("varchar(50)", "varchar(10)"), store)
			r.waitRecords(t, 3)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			db, d, err := openStore(store)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			exec := func(q string) {
				t.Helper()
				if _, err := db.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec("ALTER TABLE profile ADD COLUMN note varchar(20) DEFAULT 'mine'")
			exec("CREATE INDEX profile_by_name ON profile (display_name)")
			// The rest of a retyped column's definition is kept.
			switch sk.name {
			case "postgres":
				exec("ALTER TABLE profile ALTER COLUMN tier SET DEFAULT 'none'")
			case "mysql":
				exec("ALTER TABLE profile MODIFY tier varchar(10) CHARACTER SET latin1 DEFAULT 'none' COMMENT 'level'")
			}
			w.evolve(valueLong)
			put(4, "platinum-plus-member", int64(5_000_000_000))

			// The same type as the live one, spelled otherwise.
			nameType := "VARCHAR( 50 )"
			oldTier := "varchar(10)"
			if sk.name == "postgres" {
				nameType, oldTier = "character varying (50)", "character varying(10)"
			}
			m := model(nameType, "text")
			var logs bytes.Buffer // written under the handler's lock, read after Rebuild returns
			cfg := Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			note := fmt.Sprintf("table %s column %s is %s, the config says text: a rebuild applies it", d.quote("profile"), d.quote("tier"), oldTier)
			notes, _ := Check(ctx, cfg)
			if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, note) }) {
				t.Errorf("check before the rebuild: notes %q, want one saying %q", notes, note)
			}
			if slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "display_name") }) {
				t.Errorf("check before the rebuild: notes %q, want none on display_name (its type: is the same type)", notes)
			}
			if sk.name != "sqlite" {
				// A type: the store refuses: the running sink writes into
				// the column whatever its type, only a rebuild fails on
				// it, so check notes it, on each such column.
				bad := cfg
				bad.Model = model("no_such_type_a", "no_such_type_b")
				notes, problems := Check(ctx, bad)
				for _, col := range []string{"display_name", "tier"} {
					if slices.ContainsFunc(problems, func(err error) bool { return strings.Contains(err.Error(), col) }) {
						t.Errorf("check of a type: the store refuses: problems %v, want a note only on %s", problems, col)
					}
					if !slices.ContainsFunc(notes, func(n string) bool {
						return strings.Contains(n, "a rebuild would fail") && strings.Contains(n, d.quote(col))
					}) {
						t.Errorf("check of a type: the store refuses: notes %q, want one saying a rebuild would fail on %s", notes, col)
					}
				}
				if err := Rebuild(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), d.quote("display_name")) || !strings.Contains(err.Error(), "no_such_type_a") {
					t.Errorf("Rebuild with a type: the store refuses: got %v, want an error naming the column and its type:", err)
				}
			}

			if err := Rebuild(ctx, cfg, nil); err != nil {
				t.Fatalf("Rebuild: %v", err)
			}
			wantRows(t, store, "profile", []string{"customer_id", "display_name", "tier", "visits", "note"},
				"1|n1|gold|1|mine", "2|n2|gold|2|mine", "3|n3|gold|3|mine", "4|n4|platinum-plus-member|5000000000|mine")
			var typeQuery, indexQuery string
			want := map[string]string{"display_name": "varchar(50)", "tier": "text", "note": "varchar(20)"}
			switch sk.name {
			case "sqlite":
				typeQuery = `SELECT lower(type) FROM pragma_table_info('profile') WHERE name = ?`
				indexQuery = `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'profile' AND sql LIKE '%(display_name)%'`
				want["visits"] = "integer" // holds a long: kept
			case "postgres":
				typeQuery = `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'profile'::regclass AND attname = $1`
				indexQuery = `SELECT count(*) FROM pg_indexes WHERE tablename = 'profile' AND indexdef LIKE '%(display_name)%'`
				want = map[string]string{"display_name": "character varying(50)", "tier": "text", "note": "character varying(20)", "visits": "bigint"}
			case "mysql":
				typeQuery = `SELECT concat(column_type, ' ', is_nullable) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = ?`
				indexQuery = `SELECT count(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = 'display_name'`
				want = map[string]string{"display_name": "varchar(50) YES", "tier": "text YES", "note": "varchar(20) YES", "visits": "bigint(20) YES"} // nullable as the live ones
			}
			for col, typ := range want {
				var got string
				if err := db.QueryRowContext(t.Context(), typeQuery, col).Scan(&got); err != nil {
					t.Fatalf("the type of column %s: %v", col, err)
				}
				if got != typ {
					t.Errorf("after the rebuild, column %s is %q, want %q", col, got, typ)
				}
			}
			var indexed int
			if err := db.QueryRowContext(t.Context(), indexQuery).Scan(&indexed); err != nil {
				t.Fatal(err)
			}
			if indexed != 1 {
				t.Errorf("after the rebuild: %d index(es) on profile (display_name), want 1", indexed)
			}
			if sk.name != "sqlite" {
				exec("INSERT INTO profile (customer_id, display_name, visits) VALUES (99, 'x', 1)")
				var tier string
				if err := db.QueryRowContext(t.Context(), "SELECT tier FROM profile WHERE customer_id = 99").Scan(&tier); err != nil {
					t.Fatal(err)
				}
				if tier != "none" {
					t.Errorf("after the rebuild, a row inserted without tier has tier %q, want the live column's default 'none'", tier)
				}
				exec("DELETE FROM profile WHERE customer_id = 99")
			}
			if sk.name == "mysql" {
				var charset, comment string
				if err := db.QueryRowContext(t.Context(), `SELECT character_set_name, column_comment FROM information_schema.columns
					WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = 'tier'`).Scan(&charset, &comment); err != nil {
					t.Fatal(err)
				}
				if charset != "latin1" || comment != "level" {
					t.Errorf("after the rebuild, column tier has character set %q and comment %q, want the live column's latin1 and level", charset, comment)
				}
			}
			got := logs.String()
			from := oldTier
			if strings.Contains(from, " ") {
				from = strconv.Quote(from) // as slog's text handler writes it
			}
			retyped := []string{"column=tier from=" + from + " to=text"}
			if sk.name != "sqlite" {
				retyped = append(retyped, "column=visits")
			}
			for _, l := range retyped {
				if !strings.Contains(got, "the rebuilt table gives a column the type the read model wants now") || !strings.Contains(got, l) {
					t.Errorf("rebuild log lacks the retyped column (%s):\n%s", l, got)
				}
			}
			if strings.Contains(got, "column=display_name") {
				t.Errorf("rebuild log says display_name was retyped, which has the same type spelled otherwise:\n%s", got)
			}
			notes, _ = Check(ctx, cfg)
			if slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "the config says") }) {
				t.Errorf("check after the rebuild: notes %q, want none on a type", notes)
			}

			if sk.name == "postgres" {
				exec("CREATE INDEX profile_by_tier ON profile (upper(tier))")
				cfg.Model = model(nameType, "bytea")
				err := Rebuild(ctx, cfg, nil)
				if err == nil || !strings.Contains(err.Error(), `give column "tier" of the rebuilt table the type bytea`) || !strings.Contains(err.Error(), "drop or change it on the live table") {
					t.Fatalf("Rebuild to a type an index does not take: got %v, want the refusal naming the column and the fix", err)
				}
				wantRows(t, store, "profile", []string{"customer_id", "tier"}, "1|gold", "2|gold", "3|gold", "4|platinum-plus-member")
			}
		})
	}
}

// TestRebuildRetypesCharsetMySQL: a text column in another character set
// than utf8mb4 does not hold a string field (fitTable); the rebuilt table
// gives it utf8mb4, keeping the rest of its definition (NOT NULL, the
// default, the comment), and a 4-byte character is then loaded. A
// varchar refused only for its character set keeps its length, and so an
// index on it stays on the whole value (on a longtext MariaDB makes it a
// prefix one, a UNIQUE one USING HASH; MySQL refuses).
func TestRebuildRetypesCharsetMySQL(t *testing.T) {
	t.Parallel()
	store := mysqlStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", nil))
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	db, _, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), "ALTER TABLE profile MODIFY display_name longtext CHARACTER SET latin1 NOT NULL DEFAULT 'anon' COMMENT 'shown', MODIFY tier varchar(100) CHARACTER SET latin1, ADD INDEX profile_by_tier (tier)"); err != nil {
		t.Fatal(err)
	}
	w.put(cust(2, "bob \U0001F600", "gold \U0001F600"))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := Rebuild(ctx, Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}, nil); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	wantRows(t, store, "profile", []string{"customer_id", "display_name", "tier"}, "1|ann|NULL", "2|bob \U0001F600|gold \U0001F600")
	var charset, nullable, def, comment string
	if err := db.QueryRowContext(t.Context(), `SELECT character_set_name, is_nullable, column_default, column_comment FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = 'display_name'`).Scan(&charset, &nullable, &def, &comment); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(charset, "utf8mb4") || nullable != "NO" || def != "'anon'" || comment != "shown" {
		t.Errorf("after the rebuild, display_name has character set %q, nullable %q, default %q, comment %q; want utf8mb4, NO, 'anon', shown", charset, nullable, def, comment)
	}
	var typ string
	if err := db.QueryRowContext(t.Context(), `SELECT column_type, character_set_name FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = 'profile' AND column_name = 'tier'`).Scan(&typ, &charset); err != nil {
		t.Fatal(err)
	}
	if typ != "varchar(100)" || !strings.HasPrefix(charset, "utf8mb4") {
		t.Errorf("after the rebuild, tier is %s in character set %s, want varchar(100) in utf8mb4", typ, charset)
	}
	var index string
	if err := db.QueryRowContext(t.Context(), `SELECT concat(index_type, ' ', coalesce(sub_part, 'whole')) FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND table_name = 'profile' AND index_name = 'profile_by_tier'`).Scan(&index); err != nil {
		t.Fatalf("the index on tier after the rebuild: %v", err)
	}
	if index != "BTREE whole" {
		t.Errorf("after the rebuild, the index on tier is %s, want BTREE whole", index)
	}
}

// TestRebuildKeepsOverrides: a `type:` that is more than a bare type is
// the type of the column it created, and rebuilds leave the column as it
// is, three in a row, and `check` notes nothing on it. PostgreSQL takes
// a collation, a constraint, a foreign key (a temporary table may not
// have one) and a domain (a domain column's type is the
// domain: a generated column on it would refuse any change of its type);
// SQLite's catalog leaves a constraint out of the type, which must not
// be written into the table's statement once more each rebuild. On
// PostgreSQL a changed type: then takes effect with the collation it
// names.
func TestRebuildKeepsOverrides(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t)} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			db, _, err := openStore(store)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			exec := func(q string) {
				t.Helper()
				if _, err := db.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			m := customerModel("profile")
			cols := m.Sources[0].Columns
			// definition is what a rebuild must leave as it is.
			var definition string
			if sk.name == "sqlite" {
				cols[1].Type, cols[2].Type = "TEXT COLLATE NOCASE", "varchar(20) DEFAULT 'none'"
				definition = `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'profile'`
			} else {
				exec(`CREATE DOMAIN tier_t AS varchar(20) CHECK (VALUE <> '')`)
				exec(`CREATE TABLE accounts (id bigint PRIMARY KEY)`)
				exec(`INSERT INTO accounts VALUES (1)`)
				cols[0].Type, cols[1].Type, cols[2].Type = "bigint NOT NULL REFERENCES accounts (id)", `text COLLATE "C"`, "tier_t"
				definition = `SELECT string_agg(format('%s %s %s', attname, format_type(atttypid, atttypmod), attcollation::regcollation), ', ' ORDER BY attnum)
					FROM pg_attribute WHERE attrelid = 'profile'::regclass AND attnum > 0 AND NOT attisdropped`
			}
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			w.put(cust(1, "ann", "gold"))
			r := e.start(m, store)
			r.waitRecords(t, 1)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			if sk.name == "postgres" {
				exec("ALTER TABLE profile ADD COLUMN tier_up text GENERATED ALWAYS AS (upper(tier)) STORED")
			}
			cfg := Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			var first string
			for i := 1; i <= 3; i++ {
				notes, problems := Check(ctx, cfg)
				if slices.ContainsFunc(notes, func(n string) bool {
					return strings.Contains(n, "the config says") || strings.Contains(n, "a rebuild would fail")
				}) || len(problems) > 0 {
					t.Errorf("check before rebuild %d: notes %q, problems %v; want none on a type", i, notes, problems)
				}
				if err := Rebuild(ctx, cfg, nil); err != nil {
					t.Fatalf("rebuild %d: %v", i, err)
				}
				var got string
				if err := db.QueryRowContext(t.Context(), definition).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if i == 1 {
					first = got
					for _, want := range []string{"TEXT COLLATE NOCASE", "varchar(20) DEFAULT 'none'"} {
						if sk.name == "sqlite" && strings.Count(got, want) != 1 {
							t.Errorf("after rebuild 1, the table is %s, want %q in it once", got, want)
						}
					}
					if want := `customer_id bigint -, display_name text "C", tier tier_t "default", tier_up text "default"`; sk.name == "postgres" && got != want {
						t.Errorf("after rebuild 1, the table's columns are %s, want %s", got, want)
					}
				} else if got != first {
					t.Errorf("rebuild %d changed the table from %s to %s", i, first, got)
				}
			}
			if sk.name == "postgres" {
				// A changed type: is applied as its type, in the
				// collation it names (ALTER COLUMN TYPE would give the
				// column the new type's own).
				cols[1].Type = `varchar(40) COLLATE "C"`
				if err := Rebuild(ctx, cfg, nil); err != nil {
					t.Fatalf("rebuild to varchar(40): %v", err)
				}
				var got string
				if err := db.QueryRowContext(t.Context(), definition).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if want := `customer_id bigint -, display_name character varying(40) "C", tier tier_t "default", tier_up text "default"`; got != want {
					t.Errorf("after the rebuild to varchar(40), the table's columns are %s, want %s", got, want)
				}
			}
			wantRows(t, store, "profile", profileCols, "1|ann|gold")
		})
	}
}

// TestOverrideNotes: `check` reports each column whose `type:` differs
// from its live type or is refused by the store, not only the first; a
// type the store refuses is a note (only a rebuild fails on it), while a
// failure to compare that says nothing of the type (here the store's
// connection closed) is a problem, on each column, not a note that a
// rebuild would fail.
func TestOverrideNotes(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			db, d, err := openStore(sk.fresh(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			st := &store{db: db, d: d}
			p := &plan{model: &ReadModel{Table: "profile"}, columns: []column{
				{name: "a", override: "no_such_type_a"}, {name: "b", override: "no_such_type_b"},
				{name: "c", override: "text"}, {name: "e", override: "bigint"}, {name: "f"}}}
			desc := &tableDesc{cols: []colDesc{{name: "a", typ: "integer"}, {name: "b", typ: "integer"}, {name: "c", typ: "integer"}, {name: "e", typ: "integer"}, {name: "f", typ: "integer"}}}
			notes, problems := st.overrideNotes(t.Context(), p, desc)
			if len(problems) > 0 {
				t.Errorf("types the store refuses: problems %v, want notes only", problems)
			}
			want := []string{"a rebuild would fail", "a rebuild would fail", "is integer, the config says text", "is integer, the config says bigint"}
			if len(notes) != len(want) {
				t.Fatalf("notes %q, want %d: %q", notes, len(want), want)
			}
			for i, n := range notes {
				if col := d.quote(p.columns[i].name); !strings.Contains(n, want[i]) || !strings.Contains(n, col) {
					t.Errorf("note %d is %q, want one on column %s saying %q", i, n, col, want[i])
				}
			}

			db.Close()
			notes, problems = st.overrideNotes(t.Context(), p, desc)
			if len(notes) > 0 || len(problems) != 4 {
				t.Errorf("the store's connection closed: notes %q, problems %v; want a problem on each of the 4 columns with a type:, no note", notes, problems)
			}
		})
	}
}

// TestRebuildKeepsOverridesMySQL: on MySQL/MariaDB a `type:` with a
// character set, NOT NULL and a default is the column the sink created and
// rebuilds leave it as it is; a changed one gives the rebuilt column its
// data type, the rest of the column as the live one has it (as on the
// other stores), its character set included when the new type names none.
// Before, the override was written whole before the live column's
// attributes: NOT NULL twice, a syntax error.
func TestRebuildKeepsOverridesMySQL(t *testing.T) {
	t.Parallel()
	store := mysqlStore().fresh(t)
	db, _, err := openStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := customerModel("profile")
	cols := m.Sources[0].Columns
	cols[1].Type, cols[2].Type = "varchar(30) CHARACTER SET latin1 NOT NULL", "varchar(20) DEFAULT 'none'"
	definition := func() string {
		t.Helper()
		var got string
		if err := db.QueryRowContext(t.Context(), `SELECT GROUP_CONCAT(CONCAT_WS(' ', column_name, column_type, coalesce(character_set_name, '-'), is_nullable, coalesce(column_default, '-')) ORDER BY ordinal_position SEPARATOR ', ')
			FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'profile'`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", "gold"))
	r := e.start(m, store)
	r.waitRecords(t, 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	first := definition()
	if want := "customer_id bigint(20) - NO -, display_name varchar(30) latin1 NO -, tier varchar(20) utf8mb4 YES 'none'"; first != want {
		t.Errorf("the table the sink created: %s, want %s", first, want)
	}
	cfg := Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for i := 1; i <= 2; i++ {
		notes, problems := Check(ctx, cfg)
		if slices.ContainsFunc(notes, func(n string) bool {
			return strings.Contains(n, "the config says") || strings.Contains(n, "a rebuild would fail")
		}) || len(problems) > 0 {
			t.Errorf("check before rebuild %d: notes %q, problems %v; want none on a type", i, notes, problems)
		}
		if err := Rebuild(ctx, cfg, nil); err != nil {
			t.Fatalf("rebuild %d: %v", i, err)
		}
		if got := definition(); got != first {
			t.Errorf("rebuild %d changed the table from %s to %s", i, first, got)
		}
	}
	cols[1].Type = "varchar(40) NOT NULL"
	if notes, _ := Check(ctx, cfg); !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "display_name") }) {
		t.Errorf("check after the type: changed: notes %q, want one on display_name", notes)
	}
	if err := Rebuild(ctx, cfg, nil); err != nil {
		t.Fatalf("rebuild to varchar(40) NOT NULL: %v", err)
	}
	if got, want := definition(), "customer_id bigint(20) - NO -, display_name varchar(40) latin1 NO -, tier varchar(20) utf8mb4 YES 'none'"; got != want {
		t.Errorf("after the rebuild to varchar(40) NOT NULL: %s, want %s", got, want)
	}
	wantRows(t, store, "profile", profileCols, "1|ann|gold")
}

func TestMySQLTypeWords(t *testing.T) {
	for _, c := range []struct{ typ, want string }{
		{"varchar(40)", "varchar(40)"},
		{"varchar(40) NOT NULL", "varchar(40)"},
		{" varchar(30) CHARACTER SET latin1 COLLATE latin1_bin NOT NULL DEFAULT 'x'", "varchar(30) CHARACTER SET latin1 COLLATE latin1_bin"},
		{"int unsigned zerofill AUTO_INCREMENT", "int unsigned zerofill"},
		{"decimal(10, 2) unsigned DEFAULT 0", "decimal(10, 2) unsigned"},
		{"enum('NOT NULL', 'a)b') CHARSET utf8mb4 null", "enum('NOT NULL', 'a)b') CHARSET utf8mb4"},
		{"double precision comment 'x'", "double precision"},
		{"bigint REFERENCES accounts (id)", "bigint"},
		{"timestamp(6) ON UPDATE CURRENT_TIMESTAMP(6)", "timestamp(6)"},
		{"varchar(3", "varchar(3"}, // unreadable: whole
		{"varchar(40) COLLATE `utf8mb4_bin` NOT NULL", "varchar(40) COLLATE `utf8mb4_bin`"},
		{"varchar(40) CHARACTER SET 'latin1' NOT NULL", "varchar(40) CHARACTER SET 'latin1'"},
		{"bigint unsigned SERIAL DEFAULT VALUE", "bigint unsigned"},
		{"serial", "serial"},
		{`enum('a\'b','c') NOT NULL`, `enum('a\'b','c') NOT NULL`}, // a backslash escape: whole
		{"national char(10) binary", "national char(10) binary"},
	} {
		if got := mysqlTypeWords(c.typ); got != c.want {
			t.Errorf("mysqlTypeWords(%q) = %q, want %q", c.typ, got, c.want)
		}
	}
}

// TestMySQLRetypeCollation: a changed `type:` gives the rebuilt MySQL
// column the collation it chooses wherever it says so (quoted, after NOT
// NULL, as BINARY), and the live column's when it chooses none.
func TestMySQLRetypeCollation(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, mysqlStore().fresh(t))
	db, d := st.db, st.d
	for i, c := range []struct{ typ, want string }{
		{"varchar(40) COLLATE `utf8mb4_bin` NOT NULL", "varchar(40) utf8mb4_bin NO"},
		{"varchar(40) CHARACTER SET 'latin1' NOT NULL", "varchar(40) latin1_swedish_ci NO"},
		{"varchar(40) NOT NULL COLLATE utf8mb4_bin", "varchar(40) utf8mb4_bin NO"},
		{"varchar(40) binary", "varchar(40) utf8mb4_bin NO"}, // BINARY chooses: as the probe (in the database's character set) has it
		{"varchar(40) NOT NULL", "varchar(40) latin1_german1_ci NO"},
	} {
		table := fmt.Sprintf("m%d", i)
		if _, err := db.ExecContext(t.Context(), "CREATE TABLE "+table+" (id int PRIMARY KEY, c varchar(20) CHARACTER SET latin1 COLLATE latin1_german1_ci NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		desc, err := d.describe(t.Context(), db, table)
		if err != nil {
			t.Fatal(err)
		}
		var found colDesc
		for _, col := range desc.cols {
			if col.name == "c" {
				found = col
			}
		}
		same, to, err := st.sameType(t.Context(), found, c.typ)
		if err != nil || same {
			t.Fatalf("%q: same %v, err %v; want a change from varchar(20)", c.typ, same, err)
		}
		if err := st.shadowRetype(t.Context(), table, []retype{{column: "c", from: found.typ, to: to}}); err != nil {
			t.Errorf("%q: %v", c.typ, err)
			continue
		}
		var got string
		if err := db.QueryRowContext(t.Context(), `SELECT CONCAT_WS(' ', column_type, collation_name, is_nullable) FROM information_schema.columns
			WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'c'`, table).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%q: the rebuilt column is %s, want %s (to %q)", c.typ, got, c.want, to)
		}
	}
}
