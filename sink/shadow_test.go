package sink

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
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
