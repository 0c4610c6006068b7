package mapping

import (
	"bytes"
	"math/big"
	"testing"

	"github.com/hamba/avro/v2"
)

// FuzzDecimal checks the exact decimal encoder against math/big and against
// hamba/avro's encoding of the same *big.Rat.
func FuzzDecimal(f *testing.F) {
	for _, s := range []string{"0", "-0", "1.5", "-128", "127.999999999", "99999999999999999999999999999.999999999",
		"-9223372036854775808", "0.000000001", ".5", "5.", "+1", "NaN", "1e5", "", "-", "00001.10000000000"} {
		f.Add(s)
	}
	e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(numeric(38, 9)), Options{})
	if err != nil {
		f.Fatal(err)
	}
	c := NewCodec()
	api := avro.Config{}.Freeze()
	f.Fuzz(func(t *testing.T, s string) {
		b, err := e.AppendValue(nil, []any{int64(0), s, nil})
		if err != nil {
			return // rejected; the error cases are in TestAppendErrors
		}
		want, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("%q: encoded, but math/big cannot parse it", s)
		}
		m, err := c.Decode(e.ValueAvroSchema(), b)
		if err != nil {
			t.Fatalf("%q: decode: %v", s, err)
		}
		got, ok := new(big.Rat).SetString(m["v"].(string))
		if !ok || got.Cmp(want) != 0 {
			t.Fatalf("%q: decoded %q, want the same number", s, m["v"])
		}
		hb, err := api.Marshal(e.ValueAvroSchema(), map[string]any{"id": int64(0), "v": want, "vn": nil})
		if err != nil {
			t.Fatalf("%q: hamba: %v", s, err)
		}
		if !bytes.Equal(b, hb) {
			t.Fatalf("%q: got %x, hamba wrote %x", s, b, hb)
		}
	})
}

// FuzzDecode checks that no payload makes Decode panic.
func FuzzDecode(f *testing.F) {
	e, err := NewEntity(Spec{Name: "k", Topic: "k"}, kitchenSink(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	good, err := e.AppendValue(nil, kitchenRow())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	c := NewCodec()
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := c.Decode(e.ValueAvroSchema(), payload)
		if err == nil && len(m) != len(kitchenSink().Columns) {
			t.Fatalf("got %d fields and no error, want %d", len(m), len(kitchenSink().Columns))
		}
	})
}
