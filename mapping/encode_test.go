package mapping

import (
	"bytes"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/relation"
)

// roundTripCases are values of every kind: each is encoded, decoded, and
// compared with want (in when want is nil), and the bytes are compared with
// what hamba/avro's Marshal writes for the same value.
var roundTripCases = []struct {
	name string
	typ  relation.Type
	opts Options
	in   []any
	want []any // nil: same as in
}{
	{name: "smallint", typ: tInt2, in: []any{int32(math.MinInt16), int32(math.MaxInt16), int32(0), int32(-1)}},
	{name: "integer", typ: tInt4, in: []any{int32(math.MinInt32), int32(math.MaxInt32), int32(0), int32(63), int32(64), int32(-65)}},
	{name: "bigint", typ: tInt8, in: []any{int64(math.MinInt64), int64(math.MaxInt64), int64(0), int64(-1), int64(1) << 40}},
	{name: "real", typ: tFloat4, in: []any{float32(0), float32(math.Copysign(0, -1)), float32(math.SmallestNonzeroFloat32), float32(-math.MaxFloat32), float32(math.NaN()), float32(math.Inf(1))}},
	{name: "double", typ: tFloat8, in: []any{0.1, math.Copysign(0, -1), math.SmallestNonzeroFloat64, math.MaxFloat64, math.NaN(), math.Inf(-1)}},
	{
		name: "numeric(38,9) at full precision", typ: numeric(38, 9),
		in: []any{
			"99999999999999999999999999999.999999999", "-99999999999999999999999999999.999999999",
			"0.000000001", "-0.000000001", "0", "1.5", "-128", "-1.28", "127", "128", "0.000000000",
			"000123.4500000000000",
		},
		want: []any{
			"99999999999999999999999999999.999999999", "-99999999999999999999999999999.999999999",
			"0.000000001", "-0.000000001", "0.000000000", "1.500000000", "-128.000000000", "-1.280000000",
			"127.000000000", "128.000000000", "0.000000000", "123.450000000",
		},
	},
	{
		name: "numeric(19,0) around the int64 limits", typ: numeric(19, 0),
		in: []any{"9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809", "999999999999999999", "-999999999999999999", "1000000000000000000"},
	},
	{name: "numeric(5,5)", typ: numeric(5, 5), in: []any{"0.12345", "-0.00001", "-.5"}, want: []any{"0.12345", "-0.00001", "-0.50000"}},
	{name: "numeric(1000,500)", typ: numeric(1000, 500), in: []any{"-" + strings.Repeat("9", 500) + "." + strings.Repeat("1", 500), "0." + strings.Repeat("0", 499) + "1"}},
	{name: "numeric unconstrained as string", typ: tNumeric, in: []any{"NaN", "-Infinity", "Infinity", "123456789012345678901234567890.000000000000000001", "-0.5"}},
	{
		name: "numeric unconstrained as double", typ: tNumeric, opts: Options{UnconstrainedNumeric: NumericAsDouble},
		in:   []any{"NaN", "-Infinity", "Infinity", "-12.50", "1e-400", "0.1"},
		want: []any{math.NaN(), math.Inf(-1), math.Inf(1), -12.5, 0.0, 0.1},
	},
	{name: "text", typ: tText, in: []any{"", "grüß", "🦀𝄞 four-byte", strings.Repeat("é", 100000), "a\"b\\c\n"}},
	{name: "bool", typ: tBool, in: []any{true, false}},
	{name: "bytea", typ: tBytea, in: []any{[]byte{}, []byte{0}, bytes.Repeat([]byte{0xff, 0x00, 0x80}, 1000)}},
	{name: "uuid", typ: tUUID, in: []any{"00000000-0000-0000-0000-000000000000", "0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f"}},
	{
		name: "date", typ: tDate,
		in: []any{
			time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC),
			time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC), // 4713 BC, PostgreSQL's first
			time.Date(5874897, 12, 31, 0, 0, 0, 0, time.UTC), // PostgreSQL's last
			time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		},
	},
	{name: "time", typ: tTime, in: []any{time.Duration(0), 24 * time.Hour, 12*time.Hour + 34*time.Minute + 56*time.Second + 789012*time.Microsecond}},
	{
		name: "timestamp", typ: tTimestamp,
		in: []any{
			time.Date(1900, 1, 1, 0, 0, 0, 1000, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC),
			time.Date(294246, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 3, 31, 2, 30, 0, 0, time.UTC),
		},
	},
	{
		name: "timestamptz", typ: tTimestampTZ,
		in: []any{
			time.Date(1900, 1, 1, 0, 0, 0, 1000, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC), time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC),
		},
	},
	{name: "jsonb", typ: tJSONB, in: []any{`{}`, `{"k": ["🦀", null]}`}},
	{name: "enum", typ: tEnum, in: []any{"happy", ""}},
	{
		name: "integer[]", typ: arrayOf(tInt4),
		in: []any{[]any{}, []any{nil}, []any{int32(1), nil, int32(math.MinInt32)}, make([]any, 300)},
	},
	{name: "text[]", typ: arrayOf(tText), in: []any{[]any{"", nil, "🦀"}}},
	{name: "numeric(5,2)[]", typ: arrayOf(numeric(5, 2)), in: []any{[]any{"-999.99", nil, "1"}}, want: []any{[]any{"-999.99", nil, "1.00"}}},
	{name: "date[]", typ: arrayOf(tDate), in: []any{[]any{time.Date(1492, 10, 12, 0, 0, 0, 0, time.UTC), nil}}},
	{name: "timestamp[]", typ: arrayOf(tTimestamp), in: []any{[]any{time.Date(1492, 10, 12, 1, 2, 3, 4000, time.UTC)}}},
	{name: "bigint[] unconstrained numeric[] as double", typ: arrayOf(tNumeric), opts: Options{UnconstrainedNumeric: NumericAsDouble}, in: []any{[]any{"NaN", nil, "2"}}, want: []any{[]any{math.NaN(), nil, 2.0}}},
}

// oneColumn is a table keyed by id with the column v NOT NULL and vn
// nullable, both of type typ.
func oneColumn(typ relation.Type) *relation.Table {
	return &relation.Table{
		Schema: "public", Name: "one",
		Columns:    []relation.Column{col("id", tInt8, false), col("v", typ, false), col("vn", typ, true)},
		PrimaryKey: []string{"id"},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	c := NewCodec()
	for _, tt := range roundTripCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(tt.typ), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i, in := range tt.in {
				want := in
				if tt.want != nil {
					want = tt.want[i]
				}
				for _, vn := range []any{in, nil} {
					row := []any{int64(i), in, vn}
					payload, err := e.AppendValue(nil, row)
					if err != nil {
						t.Fatalf("value %d: AppendValue: %v", i, err)
					}
					got, err := c.Decode(e.ValueAvroSchema(), payload)
					if err != nil {
						t.Fatalf("value %d: Decode: %v", i, err)
					}
					wantN := want
					if vn == nil {
						wantN = nil
					}
					if !equalValue(got["v"], want) {
						t.Errorf("value %d: v: got %#v, want %#v", i, got["v"], want)
					}
					if !equalValue(got["vn"], wantN) {
						t.Errorf("value %d: vn: got %#v, want %#v", i, got["vn"], wantN)
					}
					if got["id"] != int64(i) {
						t.Errorf("value %d: id: got %#v, want %#v", i, got["id"], int64(i))
					}
				}
			}
		})
	}
}

// TestMatchesHamba checks the hand-written encoders against hamba/avro's
// Marshal of the same values, byte for byte.
func TestMatchesHamba(t *testing.T) {
	t.Parallel()
	// One block per array, as AppendValue writes it.
	api := avro.Config{DisableBlockSizeHeader: true, BlockLength: 1 << 20}.Freeze()
	// hamba's resolver knows no Go type for a local timestamp in a union.
	api.Register(string(avro.Long)+"."+string(avro.LocalTimestampMicros), time.Time{})
	for _, tt := range roundTripCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(tt.typ), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i, in := range tt.in {
				for _, vn := range []any{in, nil} {
					got, err := e.AppendValue(nil, []any{int64(i), in, vn})
					if err != nil {
						t.Fatal(err)
					}
					var inGap bool
					want, err := api.Marshal(e.ValueAvroSchema(), map[string]any{
						"id": int64(i), "v": hambaValue(t, tt.typ, tt.opts, in, &inGap), "vn": hambaValue(t, tt.typ, tt.opts, vn, &inGap),
					})
					if inGap {
						t.Logf("value %d: not compared: in a daylight-saving gap of time.Local (%v), which hamba cannot encode", i, time.Local)
						continue
					}
					if err != nil {
						t.Fatalf("value %d: hamba Marshal: %v", i, err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("value %d (%v): got %x, want %x", i, vn != nil, got, want)
					}
				}
			}
		})
	}
	t.Run("kitchen sink", func(t *testing.T) {
		t.Parallel()
		table := kitchenSink()
		e, err := NewEntity(Spec{Name: "k", Topic: "k"}, table, Options{})
		if err != nil {
			t.Fatal(err)
		}
		row := kitchenRow()
		got, err := e.AppendValue(nil, row)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		var inGap bool
		for i, c := range table.Columns {
			m[c.Name] = hambaValue(t, c.Type, Options{}, row[i], &inGap)
		}
		if inGap {
			t.Fatalf("kitchenRow has a timestamp in a daylight-saving gap of time.Local (%v): change it", time.Local)
		}
		want, err := api.Marshal(e.ValueAvroSchema(), m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("got  %x\nwant %x", got, want)
		}
	})
}

// hambaValue converts a relation value to what hamba/avro's Marshal takes
// for the same Avro type.
// It sets *inGap for a local timestamp hamba cannot express.
func hambaValue(t *testing.T, typ relation.Type, opts Options, v any, inGap *bool) any {
	t.Helper()
	if v == nil {
		return nil
	}
	switch typ.Kind {
	case relation.Numeric:
		if typ.Precision == 0 {
			if opts.UnconstrainedNumeric == NumericAsDouble {
				switch v {
				case "NaN":
					return math.NaN()
				case "Infinity":
					return math.Inf(1)
				case "-Infinity":
					return math.Inf(-1)
				}
				r, ok := new(big.Rat).SetString(v.(string))
				if !ok {
					t.Fatalf("bad numeric %q", v)
				}
				f, _ := r.Float64()
				return f
			}
			return v
		}
		r, ok := new(big.Rat).SetString(v.(string))
		if !ok {
			t.Fatalf("bad numeric %q", v)
		}
		return r
	case relation.Timestamp:
		// hamba reads a local timestamp as the wall clock in time.Local,
		// so it cannot express one that falls in a daylight-saving gap of
		// the machine's zone (AppendValue can: it never looks at
		// time.Local).
		tm := v.(time.Time)
		local := time.Date(tm.Year(), tm.Month(), tm.Day(), tm.Hour(), tm.Minute(), tm.Second(), tm.Nanosecond(), time.Local)
		if local.Hour() != tm.Hour() {
			*inGap = true
		}
		return local
	case relation.Array:
		xs := v.([]any)
		out := make([]any, len(xs))
		for i, x := range xs {
			out[i] = hambaValue(t, *typ.Elem, opts, x, inGap)
		}
		return out
	}
	return v
}
