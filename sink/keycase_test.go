package sink

import (
	"fmt"
	"strings"
	"testing"
)

// TestStringKeysDistinctAsInTheSource: keys PostgreSQL tells apart (by
// case, accent, trailing space) are distinct rows in every store, and a
// delete of one leaves the others. MySQL's default collations compare
// strings without case or accents and ignore trailing spaces, so a key
// column created with one would merge those rows into one.
func TestStringKeysDistinctAsInTheSource(t *testing.T) {
	t.Parallel()
	key := `{"type":"record","name":"codes_key","fields":[{"name":"code","type":"string"}]}`
	value := `{"type":"record","name":"codes","fields":[{"name":"code","type":"string"},{"name":"label","type":["null","string"],"default":null}]}`
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("codes", key, value)
			for _, c := range []string{"abc", "ABC", "a", "a ", "e", "é"} {
				w.put(map[string]any{"code": c}, map[string]any{"code": c, "label": "[" + c + "]"})
			}
			w.del(map[string]any{"code": "ABC"})
			r := e.start(ReadModel{Name: "codes", Table: "codes", Key: []string{"code"}, Sources: []Source{
				{Topic: "codes", Key: []string{"code"}, Owner: true, Columns: []Column{{Name: "label", Field: "label"}}},
			}}, store)
			r.waitRecords(t, 7)
			wantRows(t, store, "codes", []string{"code", "label"}, "abc|[abc]", "a|[a]", "a |[a ]", "e|[e]", "é|[é]")
		})
	}
}

// TestMySQLKeyCollationNoted: an existing MySQL table whose string key is
// in a collation that compares without case, accents or trailing spaces
// is noted (by check, and logged at start) with the ALTER TABLE that
// fixes it; the key column the sink creates is not, with a `type:` too.
func TestMySQLKeyCollationNoted(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, mysqlStore().fresh(t))
	db, d := st.db, st.d
	key := []column{{name: "code", typ: fieldType{kind: kindString}}}
	label := column{name: "label", typ: fieldType{kind: kindString, nullable: true}, source: 0}
	for _, c := range []struct {
		table, create, want string
	}{
		{"theirs", "CREATE TABLE theirs (code varchar(100) PRIMARY KEY, label longtext) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
			"table `theirs` key column `code` is varchar(100): collation utf8mb4_general_ci compares keys the source tells apart as equal (case, accents or trailing spaces): their rows would merge into one. ALTER TABLE `theirs` MODIFY `code` varchar(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"},
		{"padded", "CREATE TABLE padded (code varchar(100) PRIMARY KEY, label longtext) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
			"collation utf8mb4_bin compares keys the source tells apart as equal (trailing spaces)"},
		{"binary", "CREATE TABLE `binary` (code varchar(100) PRIMARY KEY, label longtext) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin", ""},
		{"made", "", ""},
		{"made_typed", "", ""},
	} {
		if c.create != "" {
			if _, err := db.ExecContext(t.Context(), c.create); err != nil {
				t.Fatal(err)
			}
		}
		key := key
		if c.table == "made_typed" {
			// A key's type: naming no collation gets the binary one.
			key = []column{{name: "code", typ: fieldType{kind: kindString}, override: "varchar(64)NOT NULL"}}
		}
		p := fitPlan(c.table, key, label)
		if _, _, err := st.ensureTable(t.Context(), p); err != nil { // creates "made"
			t.Fatalf("%s: %v", c.table, err)
		}
		desc, err := d.describe(t.Context(), db, c.table)
		if err != nil {
			t.Fatal(err)
		}
		notes, problems := fitTable(d, p, desc)
		if len(problems) > 0 {
			t.Errorf("%s: got problems %v, want none", c.table, problems)
		}
		got := strings.Join(notes, "\n")
		if c.want == "" && strings.Contains(got, "collation") {
			t.Errorf("%s: got notes %q, want none on the key's collation", c.table, got)
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: got notes %q, want %q", c.table, got, c.want)
		}
	}
}

// TestReadModelNamesDifferingInCaseKeepTheirOffsets: two read models
// whose names differ only in case, in one MySQL store, keep offsets of
// their own. With the sink's tables in the server's default collation
// their offset rows were one, and the second read model took the first's
// offsets for its own and skipped every record.
func TestReadModelNamesDifferingInCaseKeepTheirOffsets(t *testing.T) {
	t.Parallel()
	store := mysqlStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", "gold"))
	w.put(cust(2, "bob", nil))
	upper := customerModel("Profile")
	upper.Table = "profile_upper"
	r := e.start(upper, store)
	r.waitRecords(t, 2)
	lower := customerModel("profile")
	lower.Table = "profile_lower"
	r = e.start(lower, store)
	r.waitRecords(t, 2)
	for _, table := range []string{"profile_upper", "profile_lower"} {
		wantRows(t, store, table, profileCols, "1|ann|gold", "2|bob|NULL")
	}
}

// TestMySQLKeyTypeSpellings: a key's `type:` that chooses its character set
// or collation in any of MySQL's spellings is created as written (the
// binary collation is spliced only where the type chooses none), and one
// that does not is given it whatever follows its type.
func TestMySQLKeyTypeSpellings(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, mysqlStore().fresh(t))
	db := st.db
	label := column{name: "label", typ: fieldType{kind: kindString, nullable: true}, source: 0}
	for i, c := range []struct{ typ, want string }{
		{"varchar(64) binary", "utf8mb4_bin"},
		{"nvarchar(64)", "utf8mb3_general_ci"},
		{"national char(10)", "utf8mb3_general_ci"},
		{"varchar(64) ascii", "latin1_swedish_ci"},
		{"varchar(64) NOT NULL COLLATE utf8mb4_bin", "utf8mb4_bin"},
		{"varchar(64)NOT NULL", "utf8mb4_nopad_bin"},
		{"/* c */ varchar(64) DEFAULT 'binary '", "utf8mb4_general_ci"}, // a word in a default: left to the type
		{`enum('a\'b','c') NOT NULL`, "utf8mb4_general_ci"},             // not read: as written, noted
		{"varchar(64) CHARSET latin1", "latin1_swedish_ci"},
		{" varchar(64)", "utf8mb4_nopad_bin"},
	} {
		table := fmt.Sprintf("k%d", i)
		p := fitPlan(table, []column{{name: "code", typ: fieldType{kind: kindString}, override: c.typ}}, label)
		if _, _, err := st.ensureTable(t.Context(), p); err != nil {
			t.Errorf("type %q: %v", c.typ, err)
			continue
		}
		var got string
		if err := db.QueryRowContext(t.Context(), `SELECT collation_name FROM information_schema.columns
			WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'code'`, table).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, strings.TrimSuffix(c.want, "_general_ci")) || (c.want == "utf8mb4_nopad_bin" && got != c.want) {
			t.Errorf("type %q: the key column's collation is %s, want %s", c.typ, got, c.want)
		}
	}
}
