package sink

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// benchShapedRows are decoded values of the bench table's shape (the
// rebuild-pg benchmark's rows), with the columns' field types.
func benchShapedRows(n int) ([]fieldType, []string, [][]any) {
	types := []fieldType{
		{kind: kindLong}, {kind: kindString}, {kind: kindString},
		{kind: kindDecimal, precision: 12, scale: 2}, {kind: kindTimestamp},
		{kind: kindJSON, array: true, items: kindString}, {kind: kindString},
		{kind: kindInt}, {kind: kindBool}, {kind: kindString, nullable: true},
	}
	sql := []string{"bigint", "text", "text", "numeric(12,2)", "timestamp with time zone", "text[]", "jsonb", "integer", "boolean", "text"}
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := make([][]any, n)
	for i := range rows {
		g := int64(i)
		rows[i] = []any{g, fmt.Sprintf("customer %d", g), fmt.Sprintf("customer.%d@example.com", g),
			new(big.Rat).SetFrac64((g*7919)%10000000, 100), at.Add(time.Duration(g) * time.Second),
			[]any{fmt.Sprintf("tag-%d", g%7), fmt.Sprintf("tag-%d", g%11), fmt.Sprintf("segment-%d", g%13)},
			fmt.Sprintf(`{"plan": "pro", "seats": %d, "region": "eu-west-%d"}`, g%50, g%3), int(g % 1000), g%2 == 0, nil}
	}
	return types, sql, rows
}

// BenchmarkCopyEncode: a batch's decoded values converted to driver
// values and written as COPY text, as a rebuild into PostgreSQL does.
func BenchmarkCopyEncode(b *testing.B) {
	types, sql, rows := benchShapedRows(10_000)
	d := postgresDialect{}
	var buf bytes.Buffer
	out := make([][]any, len(rows))
	cells := make([]any, len(rows)*len(types))
	b.ReportAllocs()
	for b.Loop() {
		for i, r := range rows {
			row := cells[i*len(types) : (i+1)*len(types)]
			for j, v := range r {
				if v == nil {
					row[j] = nil
					continue
				}
				sv, err := d.value(types[j], "", v)
				if err != nil {
					b.Fatal(err)
				}
				row[j] = sv
			}
			out[i] = row
		}
		buf.Reset()
		c := &copyRows{rows: out, types: sql, buf: &buf}
		if !c.encodeAll() {
			b.Fatal("no COPY text")
		}
	}
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
}

// TestCopyTextMatchesReplacers: text and arrays written straight into
// the COPY buffer are what the escaping replacers make of the literal
// (the reference form), for text with and without characters to escape.
func TestCopyTextMatchesReplacers(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []string{"a", "é", `\`, `"`, "\t", "\n", "\r", "{", ",", "}", " ", "NULL", "x"}
	texts := []string{"", "plain", `\`, `"`, "\t\n\r", `a "q" \ b`}
	for range 2000 {
		var s strings.Builder
		for range rng.IntN(8) {
			s.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		texts = append(texts, s.String())
	}
	ref := func(elems []*string) string {
		var lit strings.Builder
		lit.WriteByte('{')
		for i, e := range elems {
			if i > 0 {
				lit.WriteByte(',')
			}
			if e == nil {
				lit.WriteString("NULL")
				continue
			}
			lit.WriteString(`"` + elemEscaper.Replace(*e) + `"`)
		}
		lit.WriteByte('}')
		return copyEscaper.Replace(lit.String())
	}
	text := func(v any, typ string) string {
		var b bytes.Buffer
		if !appendCopyText(&b, v, typ) {
			t.Fatalf("%#v has no COPY text", v)
		}
		return b.String()
	}
	for i, s := range texts {
		if got, want := text(s, "text"), copyEscaper.Replace(s); got != want {
			t.Fatalf("text %q: got %q, want %q", s, got, want)
		}
		elems := []*string{&texts[i], nil, &texts[(i+1)%len(texts)]}
		if got, want := text(elems, "text[]"), ref(elems); got != want {
			t.Fatalf("array of %q: got %q, want %q", s, got, want)
		}
	}
	ptrs := func(ss ...string) []*string {
		out := make([]*string, len(ss))
		for i := range ss {
			if ss[i] != "NULL" {
				out[i] = &ss[i]
			}
		}
		return out
	}
	n, f, ok := int64(-42), math.Inf(-1), true
	for _, c := range []struct {
		v    any
		want []*string
	}{
		{[]*int64{&n, nil}, ptrs("-42", "NULL")},
		{[]*float64{&f, nil}, ptrs("-Infinity", "NULL")},
		{[]*bool{&ok, nil}, ptrs("true", "NULL")},
		{[]*string{}, nil},
	} {
		if got, want := text(c.v, ""), ref(c.want); got != want {
			t.Errorf("%#v: got %q, want %q", c.v, got, want)
		}
	}
}

// TestTypedArrayElements: a typed array's elements are the list's, a
// null (or an element of another type) a nil pointer, and no two
// elements share a pointer.
func TestTypedArrayElements(t *testing.T) {
	t.Parallel()
	v, ok := typedArray(kindString, []any{"a", nil, "b"})
	s := v.([]*string)
	if !ok || len(s) != 3 || *s[0] != "a" || s[1] != nil || *s[2] != "b" || s[0] == s[2] {
		t.Errorf("strings: got %v", s)
	}
	v, ok = typedArray(kindLong, []any{int64(1), nil, int32(2), 3})
	l := v.([]*int64)
	if !ok || len(l) != 4 || *l[0] != 1 || l[1] != nil || *l[2] != 2 || *l[3] != 3 {
		t.Errorf("longs: got %v", l)
	}
	v, ok = typedArray(kindDouble, []any{float32(0.5), nil, 2.5})
	d := v.([]*float64)
	if !ok || len(d) != 3 || *d[0] != 0.5 || d[1] != nil || *d[2] != 2.5 {
		t.Errorf("doubles: got %v", d)
	}
	v, ok = typedArray(kindBool, []any{true, nil, false})
	b := v.([]*bool)
	if !ok || len(b) != 3 || !*b[0] || b[1] != nil || *b[2] {
		t.Errorf("bools: got %v", b)
	}
}

// TestTimestampTextMatchesFormat: the hand-written timestamp text is
// Format's, for every year Format prints (BC and past 9999 included).
func TestTimestampTextMatchesFormat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	times := []time.Time{time.Time{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-5, 3, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(2024, 2, 29, 12, 0, 0, 500, time.FixedZone("x", -7*3600))}
	for range 5000 {
		times = append(times, time.Unix(rng.Int64N(600_000_000_000)-300_000_000_000, rng.Int64N(1e9)).In(time.FixedZone("y", rng.IntN(50_000)-25_000)))
	}
	for _, tm := range times {
		if got, want := timestampText(tm), tm.UTC().Format(timestampLayout); got != want {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
}

// TestCopyTimeTextMatchesFormat: times written by hand into COPY text are
// what Format writes for each column type, in any location, for years 1
// to 9999; other years have no COPY text.
func TestCopyTimeTextMatchesFormat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 10))
	times := []time.Time{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 999, time.UTC),
		time.Date(2024, 2, 29, 23, 30, 0, 1000, time.FixedZone("x", 5*3600+1800))}
	const lo, hi = -62135596800 + 86400, 253402300799 - 86400 // within years 1 to 9999 in any zone
	for range 5000 {
		tm := time.Unix(lo+rng.Int64N(hi-lo), rng.Int64N(1e9)).In(time.FixedZone("y", rng.IntN(50_000)-25_000))
		if rng.IntN(3) == 0 {
			tm = tm.Truncate(time.Duration(rng.IntN(7)+1) * 10 * time.Microsecond)
		}
		times = append(times, tm)
	}
	for _, tm := range times {
		for typ, want := range map[string]string{
			"timestamp with time zone":    tm.UTC().Format("2006-01-02 15:04:05.999999Z07:00"),
			"timestamp without time zone": tm.Format("2006-01-02 15:04:05.999999"),
			"date":                        tm.Format("2006-01-02"),
		} {
			var b bytes.Buffer
			if !appendCopyText(&b, tm, typ) || b.String() != want {
				t.Fatalf("%v as %s: got %q, want %q", tm, typ, b.String(), want)
			}
		}
	}
	var b bytes.Buffer
	if appendCopyText(&b, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "date") || appendCopyText(&b, time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC), "date") {
		t.Error("a year outside 1 to 9999 has a COPY text")
	}
}
