package sink

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// mysqlDialect is MySQL and MariaDB through go-sql-driver/mysql.
type mysqlDialect struct{}

func (mysqlDialect) name() string              { return "mysql" }
func (mysqlDialect) quote(ident string) string { return quoteWith("`", ident) }
func (mysqlDialect) param(int) string          { return "?" }
func (mysqlDialect) blobType() string          { return "longblob" }
func (mysqlDialect) textKeyType(n int) string  { return fmt.Sprintf("varchar(%d)", n) }
func (mysqlDialect) maxParams() int            { return 65535 }
func (mysqlDialect) identLimit() identLimit    { return identLimit{n: 64, chars: true} }

func (mysqlDialect) sqlType(t fieldType, key bool) string {
	switch t.kind {
	case kindInt:
		return "int"
	case kindLong:
		return "bigint"
	case kindFloat:
		return "float"
	case kindDouble:
		return "double"
	case kindBool:
		return "boolean"
	case kindBytes:
		if key {
			return "varbinary(255)"
		}
		return "longblob"
	case kindDecimal:
		return fmt.Sprintf("decimal(%d,%d)", t.precision, t.scale)
	case kindUUID:
		return "char(36)"
	case kindDate:
		return "date"
	case kindTime:
		return "time(6)"
	case kindTimestamp, kindLocalTimestamp:
		return "datetime(6)"
	case kindJSON:
		return "longtext"
	}
	if key { // TEXT cannot be a primary key without a prefix length
		return "varchar(255)"
	}
	return "longtext"
}

func (mysqlDialect) value(t fieldType, _ string, v any) (any, error) {
	switch t.kind {
	case kindDecimal, kindTime, kindJSON:
		return valueText(t, v)
	}
	return v, nil
}

func (d mysqlDialect) onConflict(keys, update []string) string {
	if len(update) == 0 {
		update = keys[:1] // a no-op assignment: MySQL has no DO NOTHING
	}
	var b strings.Builder
	b.WriteString(" ON DUPLICATE KEY UPDATE ")
	for i, c := range update {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.quote(c) + " = VALUES(" + d.quote(c) + ")")
	}
	return b.String()
}

func (mysqlDialect) columns(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	return queryColumns(ctx, db, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position`, table)
}
