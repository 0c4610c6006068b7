package source

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

const catalogDDL = `
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN money2 AS numeric(5,1);

-- primary key (b, a) in an order other than the columns'
CREATE TABLE composite (a int, b text, c bigint NOT NULL, PRIMARY KEY (b, a));

CREATE TABLE ident_default (id int PRIMARY KEY, v text);
CREATE TABLE ident_full (id int PRIMARY KEY, v text);
ALTER TABLE ident_full REPLICA IDENTITY FULL;
CREATE TABLE ident_index (id int PRIMARY KEY, x int NOT NULL, y text NOT NULL);
CREATE UNIQUE INDEX ident_index_yx ON ident_index (y, x);
ALTER TABLE ident_index REPLICA IDENTITY USING INDEX ident_index_yx;
CREATE TABLE ident_nothing (id int PRIMARY KEY, v text);
ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING;
-- INCLUDE columns are carried by the index, not part of its key
CREATE TABLE ident_include (id int NOT NULL, tenant int NOT NULL, note text NOT NULL, PRIMARY KEY (id) INCLUDE (note));
CREATE UNIQUE INDEX ident_include_t ON ident_include (tenant) INCLUDE (id);
ALTER TABLE ident_include REPLICA IDENTITY USING INDEX ident_include_t;
CREATE TABLE no_key (v text);

CREATE TABLE generated (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED, z text);

CREATE TABLE dropped (id int PRIMARY KEY, gone text, kept text);
ALTER TABLE dropped DROP COLUMN gone;

CREATE TABLE kinds (
	id     int PRIMARY KEY,
	i2     smallint,
	i8     bigint,
	f4     real,
	f8     double precision,
	n      numeric(12,2),
	nneg   numeric(5,-2),
	nany   numeric,
	t      text,
	vc     varchar(10),
	ch     char(3),
	nm     name,
	b      boolean,
	bt     bytea,
	u      uuid,
	d      date,
	tm     time,
	ts     timestamp,
	tstz   timestamptz,
	j      json,
	jb     jsonb,
	ta     text[],
	na     numeric(4,1)[],
	m      mood,
	ma     mood[],
	p      posint,
	pa     posint[],
	mo     money2,
	pt     point,
	pta    point[]
);

CREATE SCHEMA "Other";
CREATE TABLE "Other"."Mixed Case" ("Id" int PRIMARY KEY);
CREATE VIEW a_view AS SELECT 1 AS x;
CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
`

func testLoadTable(t *testing.T, pg *pgcluster.Cluster) {
	db := newDB(t, pg, "catalog", catalogDDL)
	var oids map[string]uint32
	{
		rows, err := db.conn.Query(context.Background(), `SELECT typname, oid FROM pg_type WHERE typname IN ('mood', 'posint', 'money2', '_mood', '_posint')`)
		if err != nil {
			t.Fatal(err)
		}
		oids = map[string]uint32{}
		for rows.Next() {
			var n string
			var o uint32
			if err := rows.Scan(&n, &o); err != nil {
				t.Fatal(err)
			}
			oids[n] = o
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("keys and identity", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		tests := []struct {
			table        string
			wantColumns  []string
			wantPK       []string
			wantIdentity []string
			wantFull     bool
		}{
			{table: "composite", wantColumns: []string{"a", "b", "c"}, wantPK: []string{"b", "a"}, wantIdentity: []string{"b", "a"}},
			{table: "ident_default", wantColumns: []string{"id", "v"}, wantPK: []string{"id"}, wantIdentity: []string{"id"}},
			{table: "ident_full", wantColumns: []string{"id", "v"}, wantPK: []string{"id"}, wantFull: true},
			{table: "ident_index", wantColumns: []string{"id", "x", "y"}, wantPK: []string{"id"}, wantIdentity: []string{"y", "x"}},
			{table: "ident_nothing", wantColumns: []string{"id", "v"}, wantPK: []string{"id"}},
			{table: "ident_include", wantColumns: []string{"id", "tenant", "note"}, wantPK: []string{"id"}, wantIdentity: []string{"tenant"}},
			{table: "no_key", wantColumns: []string{"v"}},
			{table: "generated", wantColumns: []string{"id", "a", "z"}, wantPK: []string{"id"}, wantIdentity: []string{"id"}},
			{table: "dropped", wantColumns: []string{"id", "kept"}, wantPK: []string{"id"}, wantIdentity: []string{"id"}},
		}
		for _, tt := range tests {
			tbl, err := LoadTable(context.Background(), conn, "public", tt.table)
			if err != nil {
				t.Errorf("LoadTable(%s): %v", tt.table, err)
				continue
			}
			var cols []string
			for _, c := range tbl.Columns {
				cols = append(cols, c.Name)
			}
			if !reflect.DeepEqual(cols, tt.wantColumns) {
				t.Errorf("%s columns: got %v, want %v", tt.table, cols, tt.wantColumns)
			}
			if len(tbl.PrimaryKey) != 0 || len(tt.wantPK) != 0 {
				if !reflect.DeepEqual(tbl.PrimaryKey, tt.wantPK) {
					t.Errorf("%s primary key: got %v, want %v", tt.table, tbl.PrimaryKey, tt.wantPK)
				}
			}
			if len(tbl.Identity) != 0 || len(tt.wantIdentity) != 0 {
				if !reflect.DeepEqual(tbl.Identity, tt.wantIdentity) {
					t.Errorf("%s identity: got %v, want %v", tt.table, tbl.Identity, tt.wantIdentity)
				}
			}
			if tbl.IdentityFull != tt.wantFull {
				t.Errorf("%s IdentityFull: got %v, want %v", tt.table, tbl.IdentityFull, tt.wantFull)
			}
			if tbl.Schema != "public" || tbl.Name != tt.table {
				t.Errorf("%s name: got %s.%s, want public.%s", tt.table, tbl.Schema, tbl.Name, tt.table)
			}
		}
	})

	t.Run("nullability", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		tbl, err := LoadTable(context.Background(), conn, "public", "composite")
		if err != nil {
			t.Fatal(err)
		}
		// a and b are NOT NULL through the primary key, c explicitly.
		for _, c := range tbl.Columns {
			if c.Nullable {
				t.Errorf("composite.%s Nullable: got true, want false", c.Name)
			}
		}
		tbl, err = LoadTable(context.Background(), conn, "public", "ident_default")
		if err != nil {
			t.Fatal(err)
		}
		if c, _, _ := tbl.Column("v"); !c.Nullable {
			t.Errorf("ident_default.v Nullable: got false, want true")
		}
	})

	t.Run("kinds", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		tbl, err := LoadTable(context.Background(), conn, "public", "kinds")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]relation.Type{
			"id":   {Kind: relation.Int32, OID: oidInt4, Name: "integer"},
			"i2":   {Kind: relation.Int16, OID: oidInt2, Name: "smallint"},
			"i8":   {Kind: relation.Int64, OID: oidInt8, Name: "bigint"},
			"f4":   {Kind: relation.Float32, OID: oidFloat4, Name: "real"},
			"f8":   {Kind: relation.Float64, OID: oidFloat8, Name: "double precision"},
			"n":    {Kind: relation.Numeric, OID: oidNumeric, Name: "numeric(12,2)", Precision: 12, Scale: 2},
			"nneg": {Kind: relation.Numeric, OID: oidNumeric, Name: "numeric(5,-2)", Precision: 5, Scale: -2},
			"nany": {Kind: relation.Numeric, OID: oidNumeric, Name: "numeric"},
			"t":    {Kind: relation.Text, OID: oidText, Name: "text"},
			"vc":   {Kind: relation.Text, OID: oidVarchar, Name: "character varying(10)"},
			"ch":   {Kind: relation.Text, OID: oidBpchar, Name: "character(3)"},
			"nm":   {Kind: relation.Text, OID: oidName, Name: "name"},
			"b":    {Kind: relation.Bool, OID: oidBool, Name: "boolean"},
			"bt":   {Kind: relation.Bytes, OID: oidBytea, Name: "bytea"},
			"u":    {Kind: relation.UUID, OID: oidUUID, Name: "uuid"},
			"d":    {Kind: relation.Date, OID: oidDate, Name: "date"},
			"tm":   {Kind: relation.Time, OID: oidTime, Name: "time without time zone"},
			"ts":   {Kind: relation.Timestamp, OID: oidTimestamp, Name: "timestamp without time zone"},
			"tstz": {Kind: relation.TimestampTZ, OID: oidTimestampTZ, Name: "timestamp with time zone"},
			"j":    {Kind: relation.JSON, OID: oidJSON, Name: "json"},
			"jb":   {Kind: relation.JSON, OID: oidJSONB, Name: "jsonb"},
			"ta":   {Kind: relation.Array, OID: 1009, Name: "text[]", Elem: &relation.Type{Kind: relation.Text, OID: oidText}},
			"na":   {Kind: relation.Array, OID: 1231, Name: "numeric(4,1)[]", Elem: &relation.Type{Kind: relation.Numeric, OID: oidNumeric, Precision: 4, Scale: 1}},
			"m":    {Kind: relation.Enum, OID: oids["mood"], Name: "mood"},
			"ma":   {Kind: relation.Array, OID: oids["_mood"], Name: "mood[]", Elem: &relation.Type{Kind: relation.Enum, OID: oids["mood"]}},
			"p":    {Kind: relation.Int32, OID: oids["posint"], Name: "posint"},
			"pa":   {Kind: relation.Array, OID: oids["_posint"], Name: "posint[]", Elem: &relation.Type{Kind: relation.Int32, OID: oids["posint"]}},
			"mo":   {Kind: relation.Numeric, OID: oids["money2"], Name: "money2", Precision: 5, Scale: 1},
			"pt":   {Kind: relation.Unsupported, OID: 600, Name: "point"},
			"pta":  {Kind: relation.Unsupported, OID: 1017, Name: "point[]"},
		}
		if len(tbl.Columns) != len(want) {
			t.Errorf("columns: got %d, want %d", len(tbl.Columns), len(want))
		}
		for _, c := range tbl.Columns {
			w, ok := want[c.Name]
			if !ok {
				t.Errorf("unexpected column %s", c.Name)
				continue
			}
			if !reflect.DeepEqual(c.Type, w) {
				t.Errorf("column %s: got %s, want %s", c.Name, fmtType(c.Type), fmtType(w))
			}
		}
	})

	t.Run("quoted names", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		tbl, err := LoadTable(context.Background(), conn, "Other", "Mixed Case")
		if err != nil {
			t.Fatalf("LoadTable(\"Other\".\"Mixed Case\"): got %v, want nil", err)
		}
		if len(tbl.Columns) != 1 || tbl.Columns[0].Name != "Id" || !reflect.DeepEqual(tbl.PrimaryKey, []string{"Id"}) {
			t.Errorf("got columns %v key %v, want [Id] key [Id]", tbl.Columns, tbl.PrimaryKey)
		}
	})

	t.Run("partitioned table is refused", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		_, err := LoadTable(context.Background(), conn, "public", "parted")
		want := `table "public"."parted" is partitioned: partitioned tables are not supported yet`
		if err == nil || err.Error() != want {
			t.Errorf("LoadTable(parted): got %v, want %q", err, want)
		}
		// A partition is an ordinary table.
		if _, err := LoadTable(context.Background(), conn, "public", "parted_1"); err != nil {
			t.Errorf("LoadTable(parted_1): got %v, want nil", err)
		}
	})

	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		conn := pgtest.Connect(t, db.dsn)
		for _, tt := range []struct{ schema, name string }{
			{"public", "missing"},
			{"nosuchschema", "composite"},
			{"public", "a_view"},        // not a table
			{"public", "Composite"},     // names are exact: no case folding
			{"public", "composite\x27"}, // a quote is part of the name
		} {
			_, err := LoadTable(context.Background(), conn, tt.schema, tt.name)
			if !errors.Is(err, ErrTableNotFound) {
				t.Errorf("LoadTable(%q, %q): got %v, want ErrTableNotFound", tt.schema, tt.name, err)
			}
		}
	})
}

func fmtType(t relation.Type) string {
	s := fmt.Sprintf("{%s oid=%d name=%q p,s=%d,%d", t.Kind, t.OID, t.Name, t.Precision, t.Scale)
	if t.Elem != nil {
		s += " elem=" + fmtType(*t.Elem)
	}
	return s + "}"
}
