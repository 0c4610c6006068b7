package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// mysqlDialect is MySQL and MariaDB through go-sql-driver/mysql.
type mysqlDialect struct{}

func (mysqlDialect) name() string              { return "mysql" }
func (mysqlDialect) quote(ident string) string { return quoteWith("`", ident) }
func (mysqlDialect) param(int) string          { return "?" }
func (mysqlDialect) blobType() string          { return "longblob" }
func (mysqlDialect) textType() string          { return "text CHARACTER SET utf8mb4" }
func (mysqlDialect) textKeyType(n int) string {
	// Binary: read-model and topic names are case-sensitive (two read
	// models "Profile" and "profile" keep offsets of their own), and the
	// hashes in the side table are compared as bytes. The names hold no
	// spaces, so utf8mb4_bin's padding is harmless; every version has it.
	return fmt.Sprintf("varchar(%d) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", n)
}
func (mysqlDialect) maxParams() int         { return 65535 }
func (mysqlDialect) identLimit() identLimit { return identLimit{n: 64, chars: true} }

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

// mysqlKeyCollation is the collation a string key column is created
// with. The server's default (utf8mb4_general_ci, MySQL 8's
// utf8mb4_0900_ai_ci) compares without case or accents and, in MariaDB,
// ignores trailing spaces: keys PostgreSQL tells apart ("abc" and "ABC",
// "e" and "é", "a" and "a ") would be one row, the record of one
// overwriting the other's and the delete of one deleting both. A binary
// collation without padding compares them as PostgreSQL does: MariaDB's
// utf8mb4_nopad_bin (10.2+), MySQL's utf8mb4_0900_bin (8.0.17+); where
// neither exists, utf8mb4_bin, which still ignores trailing spaces.
func mysqlKeyCollation(ctx context.Context, db *sql.DB) (string, error) {
	var name string
	err := db.QueryRowContext(ctx, `SELECT collation_name FROM information_schema.collations
		WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin') ORDER BY collation_name LIMIT 1`).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "utf8mb4_bin", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up a binary collation for the key columns: %w", err)
	}
	return name, nil
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
