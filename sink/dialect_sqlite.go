package sink

import (
	"context"
	"database/sql"
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
