package sink

import (
	"context"
	"database/sql"
	"sort"
	"strings"
)

func (sqliteDialect) describe(ctx context.Context, db *sql.DB, table string) (*tableDesc, error) {
	// table_xinfo lists generated columns too (hidden 2, 3); hidden 1 are
	// a virtual table's.
	rows, err := db.QueryContext(ctx, `SELECT name, type, "notnull", dflt_value IS NOT NULL, pk, hidden FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid`, table)
	if err != nil {
		return nil, err
	}
	desc := &tableDesc{}
	type pkCol struct {
		name string
		n    int
	}
	var pk []pkCol
	for rows.Next() {
		var c colDesc
		var n, hidden int
		if err := rows.Scan(&c.name, &c.typ, &c.notNull, &c.defaulted, &n, &hidden); err != nil {
			rows.Close()
			return nil, err
		}
		c.defaulted = c.defaulted || hidden != 0
		c.base = sqliteAffinity(c.typ)
		if c.typ == "" {
			c.typ = "(no type)"
		}
		if n > 0 {
			pk = append(pk, pkCol{c.name, n})
		}
		desc.cols = append(desc.cols, c)
	}
	err = rows.Err()
	rows.Close()
	if err != nil || len(desc.cols) == 0 {
		return nil, err
	}
	if len(pk) > 0 {
		sort.Slice(pk, func(i, j int) bool { return pk[i].n < pk[j].n })
		u := uniqueDesc{name: "primary key", primary: true}
		for _, c := range pk {
			u.cols = append(u.cols, c.name)
		}
		desc.uniques = append(desc.uniques, u)
		if len(pk) == 1 {
			// INTEGER PRIMARY KEY is the rowid: assigned when left out.
			for i := range desc.cols {
				if desc.cols[i].name == pk[0].name && strings.EqualFold(desc.cols[i].typ, "integer") {
					desc.cols[i].defaulted = true
				}
			}
		}
	}
	idx, err := db.QueryContext(ctx, `SELECT name, partial FROM pragma_index_list(?) WHERE "unique" = 1 AND origin <> 'pk'`, table)
	if err != nil {
		return nil, err
	}
	var uniques []uniqueDesc
	for idx.Next() {
		var u uniqueDesc
		if err := idx.Scan(&u.name, &u.partial); err != nil {
			idx.Close()
			return nil, err
		}
		uniques = append(uniques, u)
	}
	err = idx.Err()
	idx.Close()
	if err != nil {
		return nil, err
	}
	for _, u := range uniques {
		cols, err := db.QueryContext(ctx, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, u.name)
		if err != nil {
			return nil, err
		}
		for cols.Next() {
			var name sql.NullString
			if err := cols.Scan(&name); err != nil {
				cols.Close()
				return nil, err
			}
			u.cols = append(u.cols, name.String)
			u.partial = u.partial || !name.Valid // an expression
		}
		err = cols.Err()
		cols.Close()
		if err != nil {
			return nil, err
		}
		desc.uniques = append(desc.uniques, u)
	}
	return desc, nil
}

// sqliteAffinity is the column affinity SQLite derives from a declared
// type (https://sqlite.org/datatype3.html, 3.1), lower-case.
func sqliteAffinity(declared string) string {
	t := strings.ToUpper(declared)
	switch {
	case strings.Contains(t, "INT"):
		return "integer"
	case strings.Contains(t, "CHAR"), strings.Contains(t, "CLOB"), strings.Contains(t, "TEXT"):
		return "text"
	case t == "", strings.Contains(t, "BLOB"):
		return "blob"
	case strings.Contains(t, "REAL"), strings.Contains(t, "FLOA"), strings.Contains(t, "DOUB"):
		return "real"
	}
	return "numeric"
}

// holds is SQLite's compatibility table, by affinity: a column keeps a
// value as the sink writes it when its affinity does not convert it.
// NUMERIC (and INTEGER, REAL) affinity turn text that looks like a number
// into one, so the values the sink writes as text (decimals, dates, times,
// strings) need TEXT or BLOB (no affinity).
func (sqliteDialect) holds(t fieldType, c colDesc) typeFit {
	a := c.base
	switch t.kind {
	case kindInt, kindLong, kindBool:
		return typeFit{ok: a == "integer" || a == "numeric" || a == "blob", expected: "INTEGER (or NUMERIC affinity)"}
	case kindFloat, kindDouble:
		return typeFit{ok: a == "real" || a == "numeric" || a == "blob", expected: "REAL (or NUMERIC affinity)"}
	case kindBytes:
		return typeFit{ok: a == "blob", expected: "BLOB"}
	}
	return typeFit{ok: a == "text" || a == "blob", expected: "TEXT (NUMERIC affinity would turn text that looks like a number into one)"}
}

func (sqliteDialect) fixType(string, colDesc, string) string {
	return "SQLite cannot change a column's type: create the table anew with it"
}

func (sqliteDialect) fixNull(string, colDesc) string {
	return "SQLite cannot drop NOT NULL: create the table anew without it"
}

func (sqliteDialect) upsertOnAnyUnique() bool { return false }
