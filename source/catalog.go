package source

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/relation"
)

// Built-in type OIDs (pg_type.dat), stable across PostgreSQL versions.
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

var baseKinds = map[uint32]relation.Kind{
	oidBool: relation.Bool, oidBytea: relation.Bytes, oidName: relation.Text,
	oidInt8: relation.Int64, oidInt2: relation.Int16, oidInt4: relation.Int32,
	oidText: relation.Text, oidJSON: relation.JSON, oidFloat4: relation.Float32,
	oidFloat8: relation.Float64, oidBpchar: relation.Text, oidVarchar: relation.Text,
	oidDate: relation.Date, oidTime: relation.Time, oidTimestamp: relation.Timestamp,
	oidTimestampTZ: relation.TimestampTZ, oidNumeric: relation.Numeric,
	oidUUID: relation.UUID, oidJSONB: relation.JSON,
}

// ErrTableNotFound is returned by [LoadTable] when the table does not exist
// (or the role cannot see it).
var ErrTableNotFound = errors.New("table not found")

// LoadTable reads a table's columns, types, primary key and replica
// identity from the catalog. A partitioned table is refused: not supported
// yet.
func LoadTable(ctx context.Context, conn *pgx.Conn, schema, name string) (relation.Table, error) {
	t := relation.Table{Schema: schema, Name: name}
	qualified := pgx.Identifier{schema, name}.Sanitize()
	var oid uint32
	var ident, kind string
	// By name through the catalog rather than to_regclass, which fails
	// without USAGE on the schema: CheckPrivileges then names the GRANT.
	err := conn.QueryRow(ctx,
		`SELECT c.oid, c.relreplident::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p')`,
		schema, name).Scan(&oid, &ident, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("table %s: %w", qualified, ErrTableNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("look up table %s: %w", qualified, err)
	}
	t.OID = oid
	if kind == "p" {
		// SELECT FROM ONLY a partitioned table reads no rows, and pgoutput
		// names the partitions, not the table, unless the publication has
		// publish_via_partition_root: refuse rather than publish nothing.
		return t, fmt.Errorf("table %s is partitioned: partitioned tables are not supported yet", qualified)
	}
	rows, err := conn.Query(ctx, `
		SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, oid)
	if err != nil {
		return t, fmt.Errorf("read columns of %s: %w", qualified, err)
	}
	type attr struct {
		name    string
		typ     uint32
		typmod  int32
		notnull bool
		display string
	}
	var attrs []attr
	for rows.Next() {
		var a attr
		if err := rows.Scan(&a.name, &a.typ, &a.typmod, &a.notnull, &a.display); err != nil {
			return t, fmt.Errorf("read columns of %s: %w", qualified, err)
		}
		attrs = append(attrs, a)
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("read columns of %s: %w", qualified, err)
	}
	types := newTypeResolver(conn)
	for _, a := range attrs {
		typ, err := types.resolve(ctx, a.typ, a.typmod)
		if err != nil {
			return t, fmt.Errorf("column %s.%s: %w", qualified, a.name, err)
		}
		typ.Name = a.display
		t.Columns = append(t.Columns, relation.Column{Name: a.name, Type: typ, Nullable: !a.notnull})
	}
	if t.PrimaryKey, err = indexColumns(ctx, conn, oid, "indisprimary"); err != nil {
		return t, fmt.Errorf("read primary key of %s: %w", qualified, err)
	}
	switch ident {
	case "f":
		t.IdentityFull = true
	case "d":
		t.Identity = t.PrimaryKey
	case "i":
		if t.Identity, err = indexColumns(ctx, conn, oid, "indisreplident"); err != nil {
			return t, fmt.Errorf("read replica identity of %s: %w", qualified, err)
		}
	}
	return t, nil
}

// indexColumns lists the columns, in index order, of the table's index
// whose boolean pg_index column flag is true (flag is a constant from this
// file, never user input).
func indexColumns(ctx context.Context, conn *pgx.Conn, table uint32, flag string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname
		FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1 AND i.`+flag+`
		  -- key columns only: an index's INCLUDE columns follow its
		  -- indnkeyatts key columns and are neither unique nor sent as
		  -- the replica identity
		  AND array_position(i.indkey::int2[], a.attnum) < array_lower(i.indkey::int2[], 1) + i.indnkeyatts
		ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// typeResolver reduces a type OID to a relation.Type, following domains to
// their base type and arrays to their element.
type typeResolver struct {
	conn *pgx.Conn
}

func newTypeResolver(conn *pgx.Conn) *typeResolver { return &typeResolver{conn: conn} }

func (r *typeResolver) resolve(ctx context.Context, oid uint32, typmod int32) (relation.Type, error) {
	t := relation.Type{OID: oid}
	for depth := 0; depth < 10; depth++ {
		if k, ok := baseKinds[oid]; ok {
			t.Kind = k
			if k == relation.Numeric {
				t.Precision, t.Scale = numericTypmod(typmod)
			}
			return t, nil
		}
		var typtype, category string
		var base, elem uint32
		var baseMod int32
		err := r.conn.QueryRow(ctx,
			`SELECT typtype::text, typcategory::text, typbasetype, typtypmod, typelem FROM pg_type WHERE oid = $1`,
			oid).Scan(&typtype, &category, &base, &baseMod, &elem)
		if err != nil {
			return t, fmt.Errorf("look up type %d: %w", oid, err)
		}
		switch {
		case typtype == "d":
			oid, typmod = base, baseMod
			continue
		case typtype == "e":
			t.Kind = relation.Enum
			return t, nil
		case category == "A" && elem != 0:
			et, err := r.resolve(ctx, elem, typmod)
			if err != nil {
				return t, err
			}
			if et.Kind == relation.Array || et.Kind == relation.Unsupported {
				t.Kind = relation.Unsupported
				return t, nil
			}
			t.Kind = relation.Array
			t.Elem = &et
			return t, nil
		default:
			t.Kind = relation.Unsupported
			return t, nil
		}
	}
	return t, fmt.Errorf("type %d: domain nesting too deep", oid)
}
