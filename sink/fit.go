package sink

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The fit check of a read-model table the sink did not create (or created
// in an earlier run): every column must hold what the sink writes into it,
// a NOT NULL column must never be given a null, and the upsert must find
// its conflict on the read model's key. The catalog reading and the type
// compatibility are the store's (fit_postgres.go, fit_mysql.go,
// fit_sqlite.go); the rules are here, once for all three.

// tableDesc is an existing table as its store's catalog describes it.
type tableDesc struct {
	cols []colDesc
	// uniques are the primary key and the unique indexes, each with its
	// columns in index order.
	uniques []uniqueDesc
}

// colDesc is one existing column.
type colDesc struct {
	name string
	typ  string // as the catalog prints it, for messages
	// base is the lower-case type name without modifiers ("numeric",
	// "character varying", "time without time zone"; SQLite: the
	// affinity), mods its modifiers ((n) or (p,s); nil when none).
	base     string
	mods     []int
	array    bool   // PostgreSQL: an array of base
	unsigned bool   // MySQL
	charset  string // MySQL text types
	notNull  bool
	// defaulted: an INSERT that leaves the column out gets a value (a
	// default, an identity or auto-increment, a generated column).
	defaulted bool
	autoInc   bool // MySQL auto_increment: values no insert of the sink repeats
	// keyNote is a caveat on the column as a key column (MySQL: a
	// collation that compares strings PostgreSQL tells apart as equal).
	keyNote string
}

// uniqueDesc is a primary key or unique index.
type uniqueDesc struct {
	name    string
	primary bool
	cols    []string
	// partial: a prefix, an expression, a predicate or a deferred check:
	// not a conflict target an upsert can name, nor one on whole values.
	partial bool
}

// typeFit is a store's answer for one column: ok when it holds every
// value of the field exactly; expected names what would; note is a caveat
// on an accepted type (a length limit).
type typeFit struct {
	ok       bool
	expected string
	note     string
}

// fitTable checks an existing table against the plan: problems would stop
// the read model (or corrupt it), notes deserve a look.
func fitTable(d dialect, p *plan, desc *tableDesc) (notes []string, problems []error) {
	q := d.quote
	tbl := q(p.model.Table)
	have := map[string]colDesc{}
	for _, c := range desc.cols {
		have[c.name] = c
	}
	var missing []string
	written := map[string]bool{}
	for _, c := range p.columns {
		written[c.name] = true
		found, ok := have[c.name]
		if !ok {
			missing = append(missing, q(c.name))
			continue
		}
		if c.override == "" {
			f := d.holds(c.typ, found)
			if !f.ok {
				fix := d.fixType(p.model.Table, found, d.sqlType(c.typ, c.source < 0))
				problems = append(problems, fmt.Errorf("table %s column %s: found type %s, expected %s to hold %s exactly: %s, or drop the table and run replicator rebuild (it creates the table and reads the topics from the start); or, to write into it as it is, declare the column's type in the config (type: %q)",
					tbl, q(c.name), found.typ, f.expected, fieldDescription(c.typ), fix, found.typ))
			} else if f.note != "" {
				notes = append(notes, fmt.Sprintf("table %s column %s is %s: %s", tbl, q(c.name), found.typ, f.note))
			}
		}
		if c.source < 0 && found.keyNote != "" && c.typ.kind != kindUUID { // a uuid's text has one case
			notes = append(notes, fmt.Sprintf("table %s key column %s is %s: %s", tbl, q(c.name), found.typ, found.keyNote))
		}
		if found.notNull && c.source >= 0 && c.typ.nullable {
			why := "its field is nullable"
			if c.source != p.owner {
				why = fmt.Sprintf("it is written by source topic %s, which is not the owner: a row exists before that source writes it, and its tombstone clears it", p.sources[c.source].topic)
			}
			problems = append(problems, fmt.Errorf("table %s column %s: found NOT NULL, expected nullable: %s: %s", tbl, q(c.name), why, d.fixNull(p.model.Table, found)))
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Errorf("table %s exists but lacks column(s) %s: add them (ALTER TABLE … ADD COLUMN), drop the table and run replicator rebuild (it creates the table and reads the topics from the start), or point table: at a new one",
			tbl, strings.Join(missing, ", ")))
	}
	for _, c := range desc.cols {
		if !written[c.name] && c.notNull && !c.defaulted {
			problems = append(problems, fmt.Errorf("table %s column %s is NOT NULL without a default, and the sink does not write it: every insert would fail: give it a default, make it nullable, or drop it", tbl, q(c.name)))
		}
	}
	problems = append(problems, fitKey(d, p, desc)...)
	return notes, problems
}

// fitKey checks the upsert's conflict target: a primary key or unique
// index on exactly the read model's key columns (PostgreSQL's and SQLite's
// ON CONFLICT names them; MySQL's ON DUPLICATE KEY takes any unique index).
// On MySQL, any other unique index is refused too: a record of a new key
// whose value collides in it would update the row it collides with.
func fitKey(d dialect, p *plan, desc *tableDesc) []error {
	q := d.quote
	tbl := q(p.model.Table)
	key := p.model.Key
	exact := false
	pk := "no primary key"
	for _, u := range desc.uniques {
		if u.primary {
			pk = "primary key (" + quoteList(d, u.cols) + ")"
		}
		if !u.partial && sameSet(u.cols, key) {
			exact = true
		}
	}
	var errs []error
	if !exact {
		errs = append(errs, fmt.Errorf("table %s: found %s and no unique index on exactly the read model's key (%s): the upsert matches rows on it: make it the primary key, or CREATE UNIQUE INDEX ON %s (%s)",
			tbl, pk, quoteList(d, key), tbl, quoteList(d, key)))
	}
	if !d.upsertOnAnyUnique() {
		return errs
	}
	autoInc := map[string]bool{}
	for _, c := range desc.cols {
		autoInc[c.name] = c.autoInc
	}
	for _, u := range desc.uniques {
		covers := !u.partial && !slices.ContainsFunc(key, func(k string) bool { return !slices.Contains(u.cols, k) })
		if covers || slices.ContainsFunc(u.cols, func(c string) bool { return autoInc[c] }) {
			continue // it can only collide where the key does, or never
		}
		what := "unique index " + q(u.name)
		if u.primary {
			what = "primary key"
		}
		errs = append(errs, fmt.Errorf("table %s: %s on (%s) is not on the read model's key (%s): INSERT … ON DUPLICATE KEY UPDATE would update the row it collides with instead of inserting the new key: drop it, or add the key columns to it",
			tbl, what, quoteList(d, u.cols), quoteList(d, key)))
	}
	return errs
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// fieldDescription names what a column receives, for messages.
func fieldDescription(t fieldType) string {
	switch t.kind {
	case kindInt:
		return "an Avro int (32 bits)"
	case kindLong:
		return "an Avro long (64 bits)"
	case kindFloat:
		return "an Avro float"
	case kindDouble:
		return "an Avro double"
	case kindBool:
		return "an Avro boolean"
	case kindBytes:
		return "Avro bytes"
	case kindDecimal:
		return fmt.Sprintf("an Avro decimal(%d,%d)", t.precision, t.scale)
	case kindUUID:
		return "an Avro uuid"
	case kindDate:
		return "an Avro date"
	case kindTime:
		return "an Avro time (microseconds)"
	case kindTimestamp:
		return "an Avro timestamp (an instant, microseconds)"
	case kindLocalTimestamp:
		return "an Avro local-timestamp (wall clock, microseconds)"
	case kindJSON:
		if t.array && t.items != kindJSON {
			return "an Avro array of scalars (a PostgreSQL array)"
		}
		return "an Avro array, map or union (as JSON)"
	}
	return "an Avro string"
}

// parseType splits a type as a catalog prints it into its lower-case name
// without modifiers and the modifiers: "numeric(10,2)" → "numeric",
// [10 2]; "time(3) without time zone" → "time without time zone", [3];
// "integer[]" → "integer", array.
func parseType(typ string) (base string, mods []int, array bool) {
	s := strings.ToLower(strings.TrimSpace(typ))
	if strings.HasSuffix(s, "[]") {
		array = true
		s = strings.TrimSuffix(s, "[]")
	}
	if i := strings.IndexByte(s, '('); i >= 0 {
		if j := strings.IndexByte(s[i:], ')'); j > 0 {
			for _, part := range strings.Split(s[i+1:i+j], ",") {
				n, err := strconv.Atoi(strings.TrimSpace(part))
				if err != nil {
					mods = nil
					break
				}
				mods = append(mods, n)
			}
			s = s[:i] + s[i+j+1:]
		}
	}
	return strings.Join(strings.Fields(s), " "), mods, array
}

// numericFits reports whether a numeric/decimal column of mods (none:
// unconstrained) holds intDigits integer digits and scale fraction digits.
func numericFits(mods []int, intDigits, scale int) bool {
	if len(mods) == 0 {
		return true
	}
	p, s := mods[0], 0
	if len(mods) > 1 {
		s = mods[1]
	}
	return s >= scale && p-s >= intDigits
}

// precisionAtLeast reports whether a time type's fractional seconds
// (mods; none: def) are at least n.
func precisionAtLeast(mods []int, def, n int) bool {
	if len(mods) == 0 {
		return def >= n
	}
	return mods[0] >= n
}
