package sink

import (
	"context"
	"database/sql"
	"errors"
	"math"
)

// sqliteDialect is SQLite through modernc.org/sqlite (pure Go). Times,
// dates and decimals are stored as text (ISO-8601, exact decimal text):
// SQLite has no such types, and NUMERIC affinity would round decimals to
// doubles.
type sqliteDialect struct{}

func (sqliteDialect) name() string              { return "sqlite" }
func (sqliteDialect) quote(ident string) string { return quoteWith(`"`, ident) }
func (sqliteDialect) param(int) string          { return "?" }
func (sqliteDialect) blobType() string          { return "BLOB" }
func (sqliteDialect) textType() string          { return "TEXT" }
func (sqliteDialect) textKeyType(int) string    { return "TEXT" }
func (sqliteDialect) maxParams() int            { return 32766 }
func (sqliteDialect) identLimit() identLimit    { return identLimit{} }

func (sqliteDialect) sqlType(t fieldType, _ bool) string {
	switch t.kind {
	case kindInt, kindLong, kindBool:
		return "INTEGER"
	case kindFloat, kindDouble:
		return "REAL"
	case kindBytes:
		return "BLOB"
	}
	return "TEXT"
}

func (sqliteDialect) value(t fieldType, _ string, v any) (any, error) {
	switch t.kind {
	case kindDecimal, kindTime, kindJSON, kindDate, kindTimestamp, kindLocalTimestamp:
		return valueText(t, v)
	case kindFloat, kindDouble:
		// SQLite stores a NaN bound as a REAL as NULL, without an error:
		// the row would say "no value" where the source had one. Refused
		// instead, as MySQL refuses it, so it meets on_error.
		if isNaN(v) {
			return nil, errors.New("SQLite stores NaN as NULL, which would lose the value: a NaN cannot be written to a SQLite store (on_error: dead_letter sets such records aside; a PostgreSQL store keeps NaN)")
		}
	case kindBool:
		if b, ok := v.(bool); ok && b {
			return int64(1), nil
		}
		return int64(0), nil
	}
	return v, nil
}

func (d sqliteDialect) onConflict(keys, update []string) string {
	return onConflictUpdate(d, keys, update)
}

func (sqliteDialect) columns(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	return queryColumns(ctx, db, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
}

// isNaN reports whether v, a decoded float or double, is NaN.
func isNaN(v any) bool {
	switch f := v.(type) {
	case float64:
		return math.IsNaN(f)
	case float32:
		return math.IsNaN(float64(f))
	}
	return false
}
