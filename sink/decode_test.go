package sink

import (
	"context"
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// fakeRegistry is a registry of a few subjects, the latest version last.
type fakeRegistry struct {
	byID      map[int]string
	versions  map[string][]int // subject → ids, oldest first
	nextID    int
	schemaFor map[int]avro.Schema
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{byID: map[int]string{}, versions: map[string][]int{}, nextID: 1, schemaFor: map[int]avro.Schema{}}
}

func (f *fakeRegistry) add(t *testing.T, subject, schema string) int {
	t.Helper()
	s, err := parseSchema(schema)
	if err != nil {
		t.Fatalf("schema of %s: %v", subject, err)
	}
	id := f.nextID
	f.nextID++
	f.byID[id] = schema
	f.schemaFor[id] = s
	f.versions[subject] = append(f.versions[subject], id)
	return id
}

func (f *fakeRegistry) SchemaByID(_ context.Context, id int) (sr.Schema, error) {
	s, ok := f.byID[id]
	if !ok {
		return sr.Schema{}, &sr.ResponseError{ErrorCode: sr.ErrSchemaNotFound.Code, StatusCode: 404}
	}
	return sr.Schema{Schema: s}, nil
}

func (f *fakeRegistry) SchemaByVersion(_ context.Context, subject string, _ int) (sr.SubjectSchema, error) {
	ids := f.versions[subject]
	if len(ids) == 0 {
		return sr.SubjectSchema{}, &sr.ResponseError{ErrorCode: sr.ErrSubjectNotFound.Code, StatusCode: 404}
	}
	id := ids[len(ids)-1]
	return sr.SubjectSchema{Subject: subject, Version: len(ids), ID: id, Schema: sr.Schema{Schema: f.byID[id]}}, nil
}

// allTypesValue holds every type of the topic format (TestTypes' and
// more: other logical types, named types, wider unions, nested records).
const allTypesValue = `{"type":"record","name":"typed","fields":[
	{"name":"id","type":"long"},
	{"name":"i","type":"int"},
	{"name":"f","type":"float"},
	{"name":"d","type":"double"},
	{"name":"b","type":"boolean"},
	{"name":"s","type":["null","string"],"default":null},
	{"name":"s2","type":["string","null"]},
	{"name":"raw","type":"bytes"},
	{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
	{"name":"oamount","type":["null",{"type":"bytes","logicalType":"decimal","precision":20,"scale":4}],"default":null},
	{"name":"u","type":{"type":"string","logicalType":"uuid"}},
	{"name":"day","type":{"type":"int","logicalType":"date"}},
	{"name":"tod","type":{"type":"long","logicalType":"time-micros"}},
	{"name":"todm","type":{"type":"int","logicalType":"time-millis"}},
	{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
	{"name":"tsm","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
	{"name":"lts","type":{"type":"long","logicalType":"local-timestamp-micros"}},
	{"name":"tags","type":["null",{"type":"array","items":["null","string"]}],"default":null},
	{"name":"nums","type":{"type":"array","items":["null","long"]}},
	{"name":"plain","type":{"type":"array","items":"double"}},
	{"name":"days","type":["null",{"type":"array","items":{"type":"int","logicalType":"date"}}],"default":null},
	{"name":"attrs","type":{"type":"map","values":"long"}},
	{"name":"opt","type":["null",{"type":"map","values":"long"}],"default":null},
	{"name":"color","type":{"type":"enum","name":"color","symbols":["red","green"]}},
	{"name":"fx","type":{"type":"fixed","name":"fx","size":3}},
	{"name":"nested","type":{"type":"record","name":"inner","fields":[{"name":"a","type":["null","long"]},{"name":"b","type":"string"}]}},
	{"name":"multi","type":["null","long","string"],"default":null}
]}`

func allTypesRecords() []map[string]any {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	full := map[string]any{
		"id": int64(1), "i": 42, "f": float32(1.5), "d": 2.25, "b": true, "s": "text ü", "s2": "x",
		"raw": []byte("bin"), "amount": big.NewRat(-123456, 100), "oamount": big.NewRat(987654321, 10000),
		"u":   "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"day": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "tod": 13*time.Hour + 16*time.Microsecond,
		"todm": 3 * time.Millisecond, "ts": ts, "tsm": time.Date(1969, 1, 1, 0, 0, 0, 1e6, time.UTC), "lts": ts,
		"tags": []any{"a", nil, "c"}, "nums": []any{int64(1), nil, int64(-3)},
		"plain": []any{1.5, -2.0}, "days": []any{time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC)},
		"attrs": map[string]any{"k": int64(7)}, "opt": map[string]any{"map": map[string]any{"k": int64(8)}},
		"color": "green", "fx": [3]byte{1, 2, 3}, "nested": map[string]any{"a": int64(5), "b": "y"},
		"multi": map[string]any{"string": "m"},
	}
	empty := map[string]any{
		"id": int64(-9), "i": -1, "f": float32(0), "d": -0.5, "b": false, "s": nil, "s2": nil,
		"raw": []byte{}, "amount": big.NewRat(0, 1), "oamount": nil, "u": "",
		"day": time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), "tod": time.Duration(0), "todm": time.Duration(0),
		"ts": time.Unix(-1, 999999000).UTC(), "tsm": nil, "lts": ts,
		"tags": nil, "nums": []any{}, "plain": []any{}, "days": nil, "attrs": map[string]any{}, "opt": nil,
		"color": "red", "fx": [3]byte{}, "nested": map[string]any{"a": nil, "b": ""},
		"multi": map[string]any{"long": int64(3)},
	}
	return []map[string]any{full, empty}
}

// decoderFor builds a decoder of topic "t" needing need (nil: every field
// of the latest value schema).
func decoderFor(t *testing.T, reg *fakeRegistry, need []string) *recordDecoder {
	t.Helper()
	if need == nil {
		s := reg.schemaFor[reg.versions["t-value"][len(reg.versions["t-value"])-1]].(*avro.RecordSchema)
		for _, f := range s.Fields() {
			need = append(need, f.Name())
		}
	}
	d, err := newRecordDecoder(t.Context(), reg, avro.Config{}.Freeze(), "t", need)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mapDecode is the reference: the whole record through hamba/avro's map
// decoding, as the sink decoded every record before the direct reading.
func mapDecode(t *testing.T, d *recordDecoder, b []byte) (map[string]any, error) {
	t.Helper()
	var hdr sr.ConfluentHeader
	id, payload, err := hdr.DecodeID(b)
	if err != nil {
		t.Fatal(err)
	}
	wr, err := d.resolve(t.Context(), &d.value, id)
	if err != nil {
		return nil, err
	}
	return d.decodeMap(&d.value, wr.schema, id, payload)
}

// compareDecodes checks that decodeValue yields exactly the reference's
// values for every reader field.
func compareDecodes(t *testing.T, d *recordDecoder, b []byte) {
	t.Helper()
	want, werr := mapDecode(t, d, b)
	got, gerr := d.decodeValue(t.Context(), b)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("error: got %v, want %v", gerr, werr)
	}
	if werr != nil {
		return
	}
	for _, f := range d.value.reader.Fields() {
		g, ok := got.get(f.Name())
		if !ok {
			t.Fatalf("field %s: missing", f.Name())
		}
		if w := want[f.Name()]; !reflect.DeepEqual(g, w) {
			t.Errorf("field %s: got %#v (%T), want %#v (%T)", f.Name(), g, g, w, w)
		}
	}
}

// TestDirectDecodeMatchesMapDecode: the direct reading yields the values
// of the map decoding on every type, read whole or with fields skipped,
// and the direct reading is the one used when the writer is the reader.
func TestDirectDecodeMatchesMapDecode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		need []string
	}{
		{"every field", nil},
		{"fields skipped", []string{"id", "s2", "ts", "amount", "tags", "days"}},
		{"complex kept, primitives skipped", []string{"nested", "color", "fx", "multi", "lts", "opt"}},
		{"nothing", []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reg := newFakeRegistry()
			reg.add(t, "t-key", `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`)
			id := reg.add(t, "t-value", allTypesValue)
			d := decoderFor(t, reg, c.need)
			for _, rec := range allTypesRecords() {
				b := frame(t, id, reg.schemaFor[id], rec)
				compareDecodes(t, d, b)
				if wr := d.value.resolved[id]; wr == nil || wr.ops == nil {
					t.Fatalf("writer %d is read the map way, want the direct reading", id)
				}
				// Truncated: whatever hamba/avro makes of it, the sink makes too.
				for _, n := range []int{5, 8, len(b) / 2, len(b) - 1} {
					compareDecodes(t, d, b[:n])
				}
			}
		})
	}
}

// TestDirectDecodeResolution: a writer that needs resolution (an older
// schema lacking a field with a default, a type promoted) is read the map
// way, with the same values; a newer writer adding fields is read directly.
func TestDirectDecodeResolution(t *testing.T) {
	t.Parallel()
	reg := newFakeRegistry()
	reg.add(t, "t-key", `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`)
	older := reg.add(t, "t-value", `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"n","type":"int"}]}`)
	latest := reg.add(t, "t-value", `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"n","type":"long"},{"name":"tier","type":["null","string"],"default":null}]}`)
	d := decoderFor(t, reg, nil)
	compareDecodes(t, d, frame(t, older, reg.schemaFor[older], map[string]any{"id": int64(1), "n": 5}))
	if d.value.resolved[older].ops != nil {
		t.Fatalf("older writer: direct reading, want the map way (its int is promoted, tier defaulted)")
	}
	got, err := d.decodeValue(t.Context(), frame(t, older, reg.schemaFor[older], map[string]any{"id": int64(1), "n": 5}))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := got.get("n"); n != int64(5) {
		t.Fatalf("promoted n: got %#v, want int64(5)", n)
	}
	compareDecodes(t, d, frame(t, latest, reg.schemaFor[latest], map[string]any{"id": int64(2), "n": int64(6), "tier": "gold"}))
	newer := reg.add(t, "t-value", `{"type":"record","name":"v","fields":[{"name":"extra","type":{"type":"array","items":"string"}},{"name":"id","type":"long"},{"name":"n","type":"long"},{"name":"tier","type":["null","string"],"default":null}]}`)
	compareDecodes(t, d, frame(t, newer, reg.schemaFor[newer], map[string]any{"extra": []any{"a", "b"}, "id": int64(3), "n": int64(7), "tier": nil}))
	if d.value.resolved[newer].ops == nil {
		t.Fatalf("newer writer with an added field: read the map way, want the direct reading")
	}
}

// TestRatFromTwosComplement: the 64-bit path reads what the big.Int one
// does (hamba/avro's reading), in the same normal form (numerator and
// denominator coprime), for every length, sign and scale.
func TestRatFromTwosComplement(t *testing.T) {
	t.Parallel()
	ref := func(b []byte, scale int) *big.Rat {
		num := new(big.Int).SetBytes(b)
		if len(b) > 0 && b[0]&0x80 != 0 {
			num.Sub(num, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
		}
		return new(big.Rat).SetFrac(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	cases := [][]byte{{}, {0}, {0x80}, {0xff}, {0x7f, 0xff}, {0x80, 0, 0, 0, 0, 0, 0, 0}, {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for range 3000 {
		b := make([]byte, rng.IntN(13))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		for _, scale := range []int{0, 2, 4, 9, 18, 19, 25} {
			if got, want := ratFromTwosComplement(b, scale), ref(b, scale); got.Cmp(want) != 0 || got.FloatString(scale) != want.FloatString(scale) ||
				got.Num().Cmp(want.Num()) != 0 || got.Denom().Cmp(want.Denom()) != 0 { // in normal form too
				t.Fatalf("%x at scale %d: got %s, want %s", b, scale, got.RatString(), want.RatString())
			}
		}
	}
}

// TestSkipClaimedItems: a skipped array claiming 2^40 items of no bytes
// (nulls) is refused at once, not skipped item by item.
func TestSkipClaimedItems(t *testing.T) {
	t.Parallel()
	s := avro.MustParse(`{"type":"array","items":"null"}`)
	payload := append(binary.AppendVarint(nil, 1<<40), 0) // one block of 2^40 items
	r := avro.NewReader(nil, 0).Reset(payload)
	done := make(chan struct{})
	go func() {
		defer close(done)
		skipValue(r, s)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // a deadline: the item-by-item skip takes hours
		t.Fatal("skipping a 6-byte array of 2^40 nulls still runs after 10s")
	}
	if r.Error == nil {
		t.Fatal("an array of 2^40 nulls skipped without an error")
	}
}
