package sink

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

func (mysqlDialect) describe(ctx context.Context, db *sql.DB, table string) (*tableDesc, error) {
	rows, err := db.QueryContext(ctx, `SELECT column_name, column_type, data_type, is_nullable, column_default, extra, COALESCE(character_set_name, ''), COALESCE(collation_name, '')
		FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position`, table)
	if err != nil {
		return nil, err
	}
	desc := &tableDesc{}
	for rows.Next() {
		var c colDesc
		var dataType, nullable, extra string
		var def sql.NullString
		var collation string
		if err := rows.Scan(&c.name, &c.typ, &dataType, &nullable, &def, &extra, &c.charset, &collation); err != nil {
			rows.Close()
			return nil, err
		}
		_, c.mods, _ = parseType(c.typ)
		c.base = strings.ToLower(dataType)
		c.unsigned = strings.Contains(strings.ToLower(c.typ), "unsigned")
		c.notNull = nullable == "NO"
		c.keyNote = mysqlKeyCollationNote(table, c.name, c.typ, collation)
		extra = strings.ToLower(extra)
		c.autoInc = strings.Contains(extra, "auto_increment")
		// MariaDB shows a nullable column's default null as 'NULL', a NOT
		// NULL column without default as NULL.
		c.defaulted = def.Valid || c.autoInc || strings.Contains(extra, "generated") || strings.Contains(extra, "virtual") || strings.Contains(extra, "stored") || strings.Contains(extra, "persistent")
		desc.cols = append(desc.cols, c)
	}
	err = rows.Err()
	rows.Close()
	if err != nil || len(desc.cols) == 0 {
		return nil, err
	}
	rows, err = db.QueryContext(ctx, `SELECT index_name, column_name, sub_part FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND table_name = ? AND non_unique = 0 ORDER BY index_name, seq_in_index`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var col sql.NullString
		var sub sql.NullInt64
		if err := rows.Scan(&name, &col, &sub); err != nil {
			return nil, err
		}
		if n := len(desc.uniques); n == 0 || desc.uniques[n-1].name != name {
			desc.uniques = append(desc.uniques, uniqueDesc{name: name, primary: name == "PRIMARY"})
		}
		last := &desc.uniques[len(desc.uniques)-1]
		last.cols = append(last.cols, col.String)
		// A prefix (or, MySQL 8, an expression) collides on part of a value.
		last.partial = last.partial || sub.Valid || !col.Valid
	}
	return desc, rows.Err()
}

// holds is MySQL's and MariaDB's compatibility table. Text is accepted
// only in utf8mb4 (others refuse a 4-byte character such as an emoji, or
// replace it); char(n) only for a uuid (MySQL strips a string's trailing
// spaces from char); timestamp not at all (it converts from the session's
// time zone and ends in 2038).
func (d mysqlDialect) holds(t fieldType, c colDesc) typeFit {
	b, m := c.base, c.mods
	integer := !c.unsigned && (b == "int" || b == "integer" || b == "bigint")
	utf8 := c.charset == "" || strings.HasPrefix(c.charset, "utf8mb4")
	bounded := func(f typeFit, limit string) typeFit {
		if f.ok && limit != "" {
			f.note = "a value longer than " + limit + " is refused by the store, a poison record (on_error); without STRICT_TRANS_TABLES in sql_mode MySQL cuts it short instead"
		}
		return f
	}
	textLimit := func() (bool, string) {
		switch b {
		case "longtext", "json":
			return true, ""
		case "mediumtext":
			return true, "16 MiB"
		case "text":
			return true, "64 KiB"
		case "tinytext":
			return true, "255 bytes"
		case "varchar":
			if len(m) == 1 {
				return true, fmt.Sprintf("%d characters", m[0])
			}
		}
		return false, ""
	}
	switch t.kind {
	case kindInt:
		return typeFit{ok: integer || b == "decimal" && numericFits(m, 10, 0), expected: "int, bigint or decimal with 10 integer digits (signed)"}
	case kindLong:
		return typeFit{ok: !c.unsigned && b == "bigint" || b == "decimal" && numericFits(m, 19, 0), expected: "bigint (signed) or decimal with 19 integer digits"}
	case kindFloat:
		return typeFit{ok: b == "float" || b == "double", expected: "float or double"}
	case kindDouble:
		return typeFit{ok: b == "double", expected: "double"}
	case kindBool:
		return typeFit{ok: b == "tinyint" || b == "smallint" || b == "mediumint" || integer, expected: "boolean (tinyint(1)) or another integer type"}
	case kindBytes:
		f := typeFit{expected: "longblob or varbinary"}
		switch b {
		case "longblob":
			f.ok = true
		case "mediumblob":
			f = bounded(typeFit{ok: true}, "16 MiB")
		case "blob":
			f = bounded(typeFit{ok: true}, "64 KiB")
		case "tinyblob":
			f = bounded(typeFit{ok: true}, "255 bytes")
		case "varbinary":
			if len(m) == 1 {
				f = bounded(typeFit{ok: true}, fmt.Sprintf("%d bytes", m[0]))
			}
		}
		f.expected = "longblob or varbinary"
		return f
	case kindDecimal:
		return typeFit{ok: b == "decimal" && numericFits(m, t.precision-t.scale, t.scale),
			expected: fmt.Sprintf("decimal(%d,%d) or one with at least as many integer and fraction digits", t.precision, t.scale)}
	case kindUUID:
		ok, _ := textLimit()
		return typeFit{ok: ok && (b != "varchar" || m[0] >= 36) || b == "char" && len(m) == 1 && m[0] >= 36 || b == "uuid", expected: "char(36), varchar(36) or longer, a text type, or MariaDB's uuid"}
	case kindDate:
		return typeFit{ok: b == "date", expected: "date"}
	case kindTime:
		return typeFit{ok: b == "time" && precisionAtLeast(m, 0, 6), expected: "time(6)"}
	case kindTimestamp, kindLocalTimestamp:
		return typeFit{ok: b == "datetime" && precisionAtLeast(m, 0, 6), expected: "datetime(6)"}
	}
	// Strings, and JSON text.
	expected := "longtext, or varchar or another text type"
	if t.kind == kindJSON {
		expected = "longtext, json or another text type"
	} else if b == "json" {
		return typeFit{expected: expected}
	}
	ok, limit := textLimit()
	if ok && !utf8 {
		return typeFit{expected: expected + " in character set utf8mb4 (found " + c.charset + ")"}
	}
	return bounded(typeFit{ok: ok, expected: expected}, limit)
}

func (d mysqlDialect) fixType(table string, c colDesc, typ string) string {
	null := " NULL"
	if c.notNull {
		null = " NOT NULL"
	}
	if strings.Contains(typ, "text") || strings.HasPrefix(typ, "varchar") {
		typ += " CHARACTER SET utf8mb4"
	}
	return fmt.Sprintf("ALTER TABLE %s MODIFY %s %s%s", d.quote(table), d.quote(c.name), typ, null)
}

func (d mysqlDialect) fixNull(table string, c colDesc) string {
	return fmt.Sprintf("ALTER TABLE %s MODIFY %s %s NULL", d.quote(table), d.quote(c.name), c.typ)
}

func (mysqlDialect) upsertOnAnyUnique() bool { return true }

// mysqlKeyCollationNote is the caveat on a string key column in a
// collation that compares as equal strings PostgreSQL tells apart (without
// case or accents, or ignoring trailing spaces): the rows of such keys
// merge into one, and the delete of one removes it. Empty for a binary
// collation without padding (the one the sink creates key columns with,
// mysqlKeyCollation) and for a column that is not text.
func mysqlKeyCollationNote(table, column, typ, collation string) string {
	switch {
	case collation == "", strings.HasSuffix(collation, "_nopad_bin"), collation == "utf8mb4_0900_bin", collation == "binary":
		return ""
	}
	q := mysqlDialect{}.quote
	return fmt.Sprintf("collation %s compares keys the source tells apart as equal (%s): their rows would merge into one. ALTER TABLE %s MODIFY %s %s CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL (MySQL 8: utf8mb4_0900_bin), then rebuild the read model",
		collation, mysqlCollationLoses(collation), q(table), q(column), typ)
}

// mysqlCollationLoses names what a collation ignores when it compares.
func mysqlCollationLoses(collation string) string {
	if strings.HasSuffix(collation, "_bin") {
		return "trailing spaces"
	}
	return "case, accents or trailing spaces"
}
