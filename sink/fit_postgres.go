package sink

import (
	"context"
	"database/sql"
	"fmt"
)

func (postgresDialect) describe(ctx context.Context, db *sql.DB, table string) (*tableDesc, error) {
	rows, err := db.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
			a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, postgresDialect{}.quote(table))
	if err != nil {
		return nil, err
	}
	desc := &tableDesc{}
	for rows.Next() {
		var c colDesc
		if err := rows.Scan(&c.name, &c.typ, &c.notNull, &c.defaulted); err != nil {
			rows.Close()
			return nil, err
		}
		c.base, c.mods, c.array = parseType(c.typ)
		desc.cols = append(desc.cols, c)
	}
	err = rows.Err()
	rows.Close()
	if err != nil || len(desc.cols) == 0 {
		return nil, err
	}
	// Key columns only (not INCLUDE ones). An index with a predicate or
	// expressions, or a deferrable constraint, cannot be ON CONFLICT's
	// arbiter.
	rows, err = db.QueryContext(ctx, `SELECT c.relname, i.indisprimary,
			i.indpred IS NOT NULL OR i.indexprs IS NOT NULL OR NOT i.indimmediate OR NOT i.indisvalid, a.attname
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = to_regclass($1) AND i.indisunique AND k.n <= i.indnkeyatts
		ORDER BY c.relname, k.n`, postgresDialect{}.quote(table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var u uniqueDesc
		var col string
		if err := rows.Scan(&u.name, &u.primary, &u.partial, &col); err != nil {
			return nil, err
		}
		if n := len(desc.uniques); n == 0 || desc.uniques[n-1].name != u.name {
			desc.uniques = append(desc.uniques, u)
		}
		last := &desc.uniques[len(desc.uniques)-1]
		last.cols = append(last.cols, col)
	}
	return desc, rows.Err()
}

// holds is PostgreSQL's compatibility table: the types the sink creates,
// and wider ones that hold every value exactly.
func (d postgresDialect) holds(t fieldType, c colDesc) typeFit {
	if t.kind == kindJSON && t.array && t.items != kindJSON {
		want := d.sqlType(t, false)
		if !c.array {
			return typeFit{expected: want}
		}
		el := c
		el.array = false
		f := d.holds(fieldType{kind: t.items}, el)
		f.expected = want
		return f
	}
	if c.array {
		return typeFit{expected: d.sqlType(t, false)}
	}
	b, m := c.base, c.mods
	switch t.kind {
	case kindInt:
		return typeFit{ok: b == "integer" || b == "bigint" || b == "numeric" && numericFits(m, 10, 0), expected: "integer, bigint or numeric with 10 integer digits"}
	case kindLong:
		return typeFit{ok: b == "bigint" || b == "numeric" && numericFits(m, 19, 0), expected: "bigint or numeric with 19 integer digits"}
	case kindFloat:
		return typeFit{ok: b == "real" || b == "double precision", expected: "real or double precision"}
	case kindDouble:
		return typeFit{ok: b == "double precision", expected: "double precision"}
	case kindBool:
		return typeFit{ok: b == "boolean", expected: "boolean"}
	case kindBytes:
		return typeFit{ok: b == "bytea", expected: "bytea"}
	case kindDecimal:
		return typeFit{ok: b == "numeric" && numericFits(m, t.precision-t.scale, t.scale),
			expected: fmt.Sprintf("numeric(%d,%d) or one with at least as many integer and fraction digits", t.precision, t.scale)}
	case kindUUID:
		return typeFit{ok: b == "uuid" || b == "text" || b == "character varying" && (len(m) == 0 || m[0] >= 36), expected: "uuid, text or varchar(36) or longer"}
	case kindDate:
		return typeFit{ok: b == "date", expected: "date"}
	case kindTime:
		return typeFit{ok: b == "time without time zone" && precisionAtLeast(m, 6, 6), expected: "time (to the microsecond)"}
	case kindTimestamp:
		return typeFit{ok: b == "timestamp with time zone" && precisionAtLeast(m, 6, 6), expected: "timestamptz (to the microsecond)"}
	case kindLocalTimestamp:
		return typeFit{ok: b == "timestamp without time zone" && precisionAtLeast(m, 6, 6), expected: "timestamp (without time zone, to the microsecond)"}
	case kindJSON:
		return typeFit{ok: b == "jsonb" || b == "json" || b == "text", expected: "jsonb, json or text"}
	}
	f := typeFit{ok: b == "text" || b == "character varying", expected: "text or varchar"}
	if f.ok && len(m) > 0 {
		f.note = fmt.Sprintf("a value longer than %d characters is refused by the store, a poison record (on_error)", m[0])
	}
	return f
}

func (d postgresDialect) fixType(table string, c colDesc, typ string) string {
	return fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s", d.quote(table), d.quote(c.name), typ)
}

func (d postgresDialect) fixNull(table string, c colDesc) string {
	return fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", d.quote(table), d.quote(c.name))
}

func (postgresDialect) upsertOnAnyUnique() bool { return false }
