package sink

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// postgresDialect is PostgreSQL through pgx's database/sql driver.
type postgresDialect struct{}

func (postgresDialect) name() string              { return "postgres" }
func (postgresDialect) quote(ident string) string { return quoteWith(`"`, ident) }
func (postgresDialect) param(n int) string        { return "$" + strconv.Itoa(n) }
func (postgresDialect) blobType() string          { return "bytea" }
func (postgresDialect) textType() string          { return "text" }
func (postgresDialect) textKeyType(int) string    { return "text" }
func (postgresDialect) maxParams() int            { return 65535 }
func (postgresDialect) identLimit() identLimit    { return identLimit{n: 63} }

func (postgresDialect) sqlType(t fieldType, _ bool) string {
	switch t.kind {
	case kindInt:
		return "integer"
	case kindLong:
		return "bigint"
	case kindFloat:
		return "real"
	case kindDouble:
		return "double precision"
	case kindBool:
		return "boolean"
	case kindBytes:
		return "bytea"
	case kindDecimal:
		return fmt.Sprintf("numeric(%d,%d)", t.precision, t.scale)
	case kindUUID:
		return "uuid"
	case kindDate:
		return "date"
	case kindTime:
		return "time"
	case kindTimestamp:
		return "timestamptz"
	case kindLocalTimestamp:
		return "timestamp"
	case kindJSON:
		if t.array && t.items != kindJSON {
			return postgresDialect{}.sqlType(fieldType{kind: t.items}, false) + "[]"
		}
		return "jsonb"
	}
	return "text"
}

func (postgresDialect) value(t fieldType, override string, v any) (any, error) {
	// An array of plain elements goes as a PostgreSQL array only into an
	// array column: with a type override (jsonb, json, text) the column
	// holds its JSON text instead, as it would in the other stores.
	if t.kind == kindJSON && t.array && t.items != kindJSON && (override == "" || isArrayType(override)) {
		if a, ok := typedArray(t.items, v); ok {
			return a, nil
		}
	}
	switch t.kind {
	case kindDecimal, kindTime, kindJSON:
		return valueText(t, v)
	}
	return v, nil
}

// isArrayType says whether a configured PostgreSQL type is an array
// ("text[]", "bigint[3]", "integer ARRAY").
func isArrayType(typ string) bool {
	t := strings.ToLower(strings.TrimSpace(typ))
	return strings.HasSuffix(t, "]") || strings.HasSuffix(t, " array")
}

func (d postgresDialect) onConflict(keys, update []string) string {
	return onConflictUpdate(d, keys, update)
}

// onConflictUpdate is the upsert clause PostgreSQL and SQLite share:
// ON CONFLICT (keys) DO UPDATE SET c = excluded.c, or DO NOTHING when there
// is nothing to update (a read model of key columns only).
func onConflictUpdate(d dialect, keys, update []string) string {
	if len(update) == 0 {
		return " ON CONFLICT (" + quoteList(d, keys) + ") DO NOTHING"
	}
	var b strings.Builder
	b.WriteString(" ON CONFLICT (" + quoteList(d, keys) + ") DO UPDATE SET ")
	for i, c := range update {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.quote(c) + " = excluded." + d.quote(c))
	}
	return b.String()
}

func (postgresDialect) columns(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	return queryColumns(ctx, db, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
}

func quoteList(d dialect, names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = d.quote(n)
	}
	return strings.Join(q, ", ")
}
