package mapping

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

func TestAppendKey(t *testing.T) {
	t.Parallel()
	e, err := NewEntity(Spec{Name: "k", Topic: "k", Key: []string{"tenant", "id"}}, kitchenSink(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	full := kitchenRow()
	// The old key tuple of a DELETE: only the key columns are set.
	old := make([]any, len(full))
	old[0], old[1] = full[0], full[1]
	c := NewCodec()
	var want []byte
	for _, tt := range []struct {
		name string
		row  []any
	}{{"full row", full}, {"old key tuple", old}} {
		b, err := e.AppendKey(nil, tt.row)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		// tenant then id: "acme", 42
		if want == nil {
			want = []byte{8, 'a', 'c', 'm', 'e', 84}
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: got %x, want %x", tt.name, b, want)
		}
		got, err := c.Decode(e.KeyAvroSchema(), b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got["tenant"] != "acme" || got["id"] != int64(42) {
			t.Errorf("%s: got %v, want map[id:42 tenant:acme]", tt.name, got)
		}
	}
}

func TestKitchenSinkRoundTrip(t *testing.T) {
	t.Parallel()
	table := kitchenSink()
	e, err := NewEntity(Spec{Name: "k", Topic: "k"}, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCodec()
	for _, nulls := range []bool{false, true} {
		row := kitchenRow()
		if nulls {
			for i, col := range table.Columns {
				if col.Nullable {
					row[i] = nil
				}
			}
		}
		b, err := e.AppendValue([]byte{0xAA}, row) // appends after existing bytes
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != 0xAA {
			t.Fatalf("got first byte %x, want the existing aa kept", b[0])
		}
		got, err := c.Decode(e.ValueAvroSchema(), b[1:])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(table.Columns) {
			t.Errorf("got %d fields, want %d", len(got), len(table.Columns))
		}
		for i, col := range table.Columns {
			want := row[i]
			if col.Name == "dec" || col.Name == "dec_n" {
				if want != nil {
					want = "-12345678901234567890123456789.123456789"
				}
			}
			if col.Name == "decs" || col.Name == "decs_n" {
				if want != nil {
					want = []any{nil, "-999.99", "0.00"}
				}
			}
			if !equalValue(got[col.Name], want) {
				t.Errorf("nulls=%v: %s: got %#v, want %#v", nulls, col.Name, got[col.Name], want)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	c := NewCodec()
	e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(tText), Options{})
	if err != nil {
		t.Fatal(err)
	}
	good, err := e.AppendValue(nil, []any{int64(1), "abc", nil})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(numeric(5, 2)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Messages after "decode <record>: " are hamba/avro's own.
	tests := []struct {
		name    string
		schema  avro.Schema
		payload []byte
		want    string
	}{
		{"trailing bytes", e.ValueAvroSchema(), append(good[:len(good):len(good)], 0), "decode replicator.public.one: trailing bytes after the record"},
		{"truncated", e.ValueAvroSchema(), good[:len(good)-2], "decode replicator.public.one: unexpected EOF"},
		{"empty", e.ValueAvroSchema(), nil, "decode replicator.public.one: reading long: EOF"},
		{"bad union branch", e.ValueAvroSchema(), append(good[:len(good)-1:len(good)-1], 4), "decode replicator.public.one: avro: decode union: branch 2 of 2"},
		{"negative length", e.ValueAvroSchema(), []byte{2, 1}, "decode replicator.public.one: avro: ReadSTRING: invalid string length"},
		{"length beyond the limit", e.ValueAvroSchema(), append([]byte{2}, appendLong(nil, MaxDecodedSize+1)...), "decode replicator.public.one: avro: ReadSTRING: size is greater than `Config.MaxByteSliceSize`"},
		{"decimal longer than its precision", dec.ValueAvroSchema(), append([]byte{2, 2 * 9}, make([]byte, 9)...), "decode replicator.public.one: avro: decode decimal: 9 bytes for precision 5"},
		{"not a record", avro.NewPrimitiveSchema(avro.String, nil), good, "decode: schema is a string, want a record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := c.Decode(tt.schema, tt.payload)
			if errString(err) != tt.want {
				t.Errorf("got error %q, want %q", errString(err), tt.want)
			}
			if got != nil {
				t.Errorf("got %v, want nil on error", got)
			}
		})
	}
}

// Decode reads schemas mapping does not write too: other producers' enums,
// maps, fixed, nested records and multi-branch unions.
func TestDecodeOtherSchemas(t *testing.T) {
	t.Parallel()
	c := NewCodec()
	s, err := c.Parse(`{"type":"record","name":"x.other","fields":[
		{"name":"e","type":{"type":"enum","name":"color","symbols":["red","green"]}},
		{"name":"m","type":{"type":"map","values":["null","long"]}},
		{"name":"f","type":{"type":"fixed","name":"two","size":2}},
		{"name":"fd","type":{"type":"fixed","name":"dec","size":4,"logicalType":"decimal","precision":9,"scale":3}},
		{"name":"r","type":{"type":"record","name":"inner","fields":[{"name":"ms","type":{"type":"long","logicalType":"timestamp-millis"}}]}},
		{"name":"u","type":["string","int","null"]},
		{"name":"tm","type":{"type":"int","logicalType":"time-millis"}}
	]}`)
	if err != nil {
		t.Fatal(err)
	}
	api := avro.Config{}.Freeze()
	payload, err := api.Marshal(s, map[string]any{
		"e": "green", "m": map[string]any{"a": int64(1), "b": nil}, "f": [2]byte{1, 2},
		"fd": [4]byte{0xff, 0xff, 0xff, 0x85}, "r": map[string]any{"ms": time.UnixMilli(-1).UTC()},
		"u": int32(-7), "tm": 1500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decode(s, payload)
	if err != nil {
		t.Fatal(err)
	}
	m := got["m"].(map[string]any)
	for _, check := range []struct {
		name      string
		got, want any
	}{
		{"enum", got["e"], "green"},
		{"map a", m["a"], int64(1)},
		{"map b", m["b"], nil},
		{"fixed", got["f"], [2]byte{1, 2}},
		{"fixed decimal", got["fd"], "-0.123"},
		{"record", got["r"].(map[string]any)["ms"], time.UnixMilli(-1).UTC()},
		{"union", got["u"], int32(-7)},
		{"time-millis", got["tm"], 1500 * time.Millisecond},
	} {
		if !equalValue(check.got, check.want) {
			t.Errorf("%s: got %#v, want %#v", check.name, check.got, check.want)
		}
	}
}

func TestParseIsolated(t *testing.T) {
	t.Parallel()
	c := NewCodec()
	// Two versions of one record name: each parse sees only its own text.
	v1, err := c.Parse(`{"type":"record","name":"replicator.public.t","fields":[{"name":"a","type":"int"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := c.Parse(`{"type":"record","name":"replicator.public.t","fields":[{"name":"a","type":"int"},{"name":"b","type":["null","string"],"default":null}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if n1, n2 := len(v1.(*avro.RecordSchema).Fields()), len(v2.(*avro.RecordSchema).Fields()); n1 != 1 || n2 != 2 {
		t.Errorf("got %d and %d fields, want 1 and 2", n1, n2)
	}
	// A name defined by an earlier parse is not visible to a later one.
	if _, err := c.Parse(`{"type":"record","name":"x","fields":[{"name":"t","type":"replicator.public.t"}]}`); err == nil {
		t.Errorf("got no error for a reference to a type defined in another parse, want one")
	}
	if _, err := c.Parse(`{"type":"nope"}`); err == nil || err.Error()[:13] != "parse schema:" {
		t.Errorf("got %v, want a parse schema: error", err)
	}
}

func TestConfluent(t *testing.T) {
	t.Parallel()
	for _, id := range []int{0, 1, 258, math.MaxInt32} {
		b := AppendConfluentHeader([]byte("k"), id)
		b = append(b, "payload"...)
		gotID, payload, err := SplitConfluent(b[1:])
		if err != nil || gotID != id || string(payload) != "payload" {
			t.Errorf("id %d: got (%d, %q, %v), want (%d, %q, nil)", id, gotID, payload, err, id, "payload")
		}
	}
	if got, want := AppendConfluentHeader(nil, 0x01020304), []byte{0, 1, 2, 3, 4}; !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "confluent framing: 0 bytes, want at least 5 (magic byte and schema id)"},
		{"short", []byte{0, 0, 0, 1}, "confluent framing: 4 bytes, want at least 5 (magic byte and schema id)"},
		{"magic", []byte{1, 0, 0, 0, 1, 2}, "confluent framing: magic byte 0x01, want 0x00"},
	} {
		if _, _, err := SplitConfluent(tt.in); errString(err) != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, errString(err), tt.want)
		}
	}
	// A header with an empty payload is valid (an empty record).
	if id, p, err := SplitConfluent([]byte{0, 0, 0, 0, 9}); err != nil || id != 9 || len(p) != 0 {
		t.Errorf("got (%d, %x, %v), want (9, empty, nil)", id, p, err)
	}
}
