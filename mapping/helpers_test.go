package mapping

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/replicator/replicator/relation"
)

// The relation types the source reports, by SQL name.
var (
	tInt2        = relation.Type{Kind: relation.Int16, OID: 21, Name: "smallint"}
	tInt4        = relation.Type{Kind: relation.Int32, OID: 23, Name: "integer"}
	tInt8        = relation.Type{Kind: relation.Int64, OID: 20, Name: "bigint"}
	tFloat4      = relation.Type{Kind: relation.Float32, OID: 700, Name: "real"}
	tFloat8      = relation.Type{Kind: relation.Float64, OID: 701, Name: "double precision"}
	tNumeric     = relation.Type{Kind: relation.Numeric, OID: 1700, Name: "numeric"}
	tText        = relation.Type{Kind: relation.Text, OID: 25, Name: "text"}
	tVarchar     = relation.Type{Kind: relation.Text, OID: 1043, Name: "character varying(40)"}
	tBool        = relation.Type{Kind: relation.Bool, OID: 16, Name: "boolean"}
	tBytea       = relation.Type{Kind: relation.Bytes, OID: 17, Name: "bytea"}
	tUUID        = relation.Type{Kind: relation.UUID, OID: 2950, Name: "uuid"}
	tDate        = relation.Type{Kind: relation.Date, OID: 1082, Name: "date"}
	tTime        = relation.Type{Kind: relation.Time, OID: 1083, Name: "time without time zone"}
	tTimestamp   = relation.Type{Kind: relation.Timestamp, OID: 1114, Name: "timestamp without time zone"}
	tTimestampTZ = relation.Type{Kind: relation.TimestampTZ, OID: 1184, Name: "timestamp with time zone"}
	tJSONB       = relation.Type{Kind: relation.JSON, OID: 3802, Name: "jsonb"}
	tEnum        = relation.Type{Kind: relation.Enum, OID: 16390, Name: "public.mood"}
	tGeometry    = relation.Type{Kind: relation.Unsupported, OID: 17000, Name: "geometry"}
)

func numeric(p, s int) relation.Type {
	return relation.Type{Kind: relation.Numeric, OID: 1700, Name: fmt.Sprintf("numeric(%d,%d)", p, s), Precision: p, Scale: s}
}

func arrayOf(elem relation.Type) relation.Type {
	return relation.Type{Kind: relation.Array, Name: elem.Name + "[]", Elem: &elem}
}

func col(name string, t relation.Type, nullable bool) relation.Column {
	return relation.Column{Name: name, Type: t, Nullable: nullable}
}

// kitchenSink has a NOT NULL and a nullable column of every kind, in
// attribute order, keyed by (id, tenant).
func kitchenSink() *relation.Table {
	t := &relation.Table{Schema: "public", Name: "kitchen_sink", PrimaryKey: []string{"id", "tenant"}}
	t.Columns = []relation.Column{
		col("id", tInt8, false),
		col("tenant", tText, false),
	}
	for _, c := range []struct {
		name string
		typ  relation.Type
	}{
		{"i2", tInt2}, {"i4", tInt4}, {"i8", tInt8}, {"f4", tFloat4}, {"f8", tFloat8},
		{"dec", numeric(38, 9)}, {"num", tNumeric}, {"txt", tVarchar}, {"b", tBool},
		{"raw", tBytea}, {"uid", tUUID}, {"d", tDate}, {"tod", tTime}, {"ts", tTimestamp},
		{"tstz", tTimestampTZ}, {"doc", tJSONB}, {"mood", tEnum},
		{"ints", arrayOf(tInt4)}, {"decs", arrayOf(numeric(5, 2))}, {"texts", arrayOf(tText)},
	} {
		t.Columns = append(t.Columns, col(c.name, c.typ, false), col(c.name+"_n", c.typ, true))
	}
	return t
}

// kitchenRow is a row of kitchenSink with every value set; nullable columns
// get the same values as their NOT NULL twin.
func kitchenRow() []any {
	vals := []any{
		int32(math.MinInt16), int32(math.MinInt32), int64(math.MaxInt64), float32(-1.5), math.Inf(-1),
		"-12345678901234567890123456789.123456789", "NaN", "grüß 🦀", true,
		[]byte{0, 0xff, 0x80}, "0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f", time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC),
		23*time.Hour + 59*time.Minute + 59*time.Second + 999999*time.Microsecond,
		time.Date(1900, 2, 28, 23, 59, 59, 123456000, time.UTC), time.Date(2038, 1, 19, 3, 14, 8, 1000, time.UTC),
		`{"a": [1, null]}`, "happy",
		[]any{int32(1), nil, int32(-1)}, []any{nil, "-999.99", "0.00"}, []any{"", nil, "x"},
	}
	row := []any{int64(42), "acme"}
	for _, v := range vals {
		row = append(row, v, v)
	}
	return row
}

// equalValue compares decoded values: time.Time by instant and location
// (UTC), floats bit for bit (NaN equals NaN), slices element by element.
func equalValue(got, want any) bool {
	switch w := want.(type) {
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g.Equal(w) && g.Location() == w.Location()
	case float64:
		g, ok := got.(float64)
		return ok && math.Float64bits(g) == math.Float64bits(w)
	case float32:
		g, ok := got.(float32)
		return ok && math.Float32bits(g) == math.Float32bits(w)
	case []byte:
		g, ok := got.([]byte)
		return ok && bytes.Equal(g, w)
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !equalValue(g[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return got == want
	}
}
