package sink

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// lineModel is a read model of topic "t" of one source writing every
// field of lineValue (s into two columns), a key field into a column
// besides the key too, with the table's column types as format_type
// names them.
var lineModel = ReadModel{Name: "lines", Table: "lines", Key: []string{"id", "k"}, Sources: []Source{{
	Topic: "t", Key: []string{"id", "k"}, Owner: true,
	Columns: []Column{
		{Name: "id", Field: "id"}, {Name: "i", Field: "i"}, {Name: "f", Field: "f"}, {Name: "d", Field: "d"},
		{Name: "b", Field: "b"}, {Name: "s", Field: "s"}, {Name: "s2", Field: "s2"}, {Name: "raw", Field: "raw"},
		{Name: "amount", Field: "amount"}, {Name: "oamount", Field: "oamount"}, {Name: "u", Field: "u"},
		{Name: "day", Field: "day"}, {Name: "ts", Field: "ts"}, {Name: "tsm", Field: "tsm", Type: "timestamp"},
		{Name: "s_again", Field: "s"}, {Name: "tags", Field: "tags"}, {Name: "nums", Field: "nums"}, {Name: "ints", Field: "ints"},
		{Name: "doc", Field: "doc", Type: "jsonb"}, {Name: "k2", Field: "k"},
	},
}}}

// lineModelInOrder takes the same fields once each, in the writer's
// order after the key: its lines are written as the fields are read.
var lineModelInOrder = ReadModel{Name: "lines", Table: "lines", Key: []string{"id", "k"}, Sources: []Source{{
	Topic: "t", Key: []string{"id", "k"}, Owner: true,
	Columns: []Column{
		{Name: "i", Field: "i"}, {Name: "f", Field: "f"}, {Name: "d", Field: "d"},
		{Name: "b", Field: "b"}, {Name: "s", Field: "s"}, {Name: "s2", Field: "s2"}, {Name: "raw", Field: "raw"},
		{Name: "amount", Field: "amount"}, {Name: "oamount", Field: "oamount"}, {Name: "u", Field: "u"},
		{Name: "day", Field: "day"}, {Name: "ts", Field: "ts"}, {Name: "tsm", Field: "tsm", Type: "timestamp"},
		{Name: "tags", Field: "tags"}, {Name: "nums", Field: "nums"}, {Name: "ints", Field: "ints"}, {Name: "doc", Field: "doc", Type: "jsonb"},
	},
}}}

var lineTypesInOrder = []string{"bigint", "text", "integer", "real", "double precision", "boolean", "text", "text", "bytea",
	"numeric", "numeric", "uuid", "date", "timestamp with time zone", "timestamp without time zone",
	"text[]", "bigint[]", "integer[]", "jsonb"}

var lineTypes = []string{"bigint", "text", "integer", "real", "double precision", "boolean", "text", "text", "bytea",
	"numeric", "numeric", "uuid", "date", "timestamp with time zone", "timestamp without time zone",
	"text", "text[]", "bigint[]", "integer[]", "jsonb", "text"}

const lineKey = `{"type":"record","name":"k","fields":[{"name":"id","type":"long"},{"name":"k","type":"string"}]}`

const lineValue = `{"type":"record","name":"v","fields":[
	{"name":"skipped","type":{"type":"map","values":"long"}},
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
	{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
	{"name":"tsm","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
	{"name":"tags","type":["null",{"type":"array","items":["null","string"]}],"default":null},
	{"name":"nums","type":{"type":"array","items":["null","long"]}},
	{"name":"ints","type":{"type":"array","items":"int"}},
	{"name":"doc","type":"string"}
]}`

// lineApplier compiles m against a registry holding key and value (its
// one source's subjects), on a
// PostgreSQL store that is never connected (nothing here reaches it).
func lineApplier(t *testing.T, m ReadModel, key, value string) (*applier, *fakeRegistry, int) {
	t.Helper()
	reg := newFakeRegistry()
	reg.add(t, m.Sources[0].Topic+"-key", key)
	id := reg.add(t, m.Sources[0].Topic+"-value", value)
	p, err := compile(t.Context(), &m, reg, newAPI())
	if err != nil {
		t.Fatal(err)
	}
	return &applier{p: p, st: &store{d: postgresDialect{}}}, reg, id
}

// valuesLine is the reference: the record decoded into values, converted
// to driver values and encoded as COPY text, as every row was before the
// lines; ok false when it has no COPY text.
func valuesLine(t *testing.T, a *applier, rec *kgo.Record, types []string) ([]byte, entry, bool) {
	t.Helper()
	e, err := a.decode(t.Context(), 0, rec)
	if err != nil {
		t.Fatal(err)
	}
	row := make([]any, len(a.p.columns))
	if err := a.ownerRowInto(row, make([]any, len(a.p.sources[0].keyFields)), &e); err != nil {
		t.Fatal(err)
	}
	c := &copyRows{rows: [][]any{row}, types: types, buf: new(bytes.Buffer)}
	ok := c.encodeAll()
	return c.buf.Bytes(), e, ok
}

// scratch is aheadLine's scratch for a's row key and key cells.
func scratch(a *applier) (keyCells, rk []any) {
	return make([]any, len(a.p.columns)), make([]any, len(a.p.sources[0].keyFields))
}

// randomLineRecord is a record of lineValue with values chosen to reach
// every escape, sign, null and edge the text has; wide is whether it holds
// a decimal past 64 bits, which the lines leave to the values' way.
func randomLineRecord(r *rand.Rand, id int64) (key, value map[string]any, wide bool) {
	text := func() string {
		const alphabet = "ab\\\t\n\r\" ,{}ü€NULL'x"
		var b strings.Builder
		for range r.IntN(12) {
			b.WriteString(string([]rune(alphabet)[r.IntN(len([]rune(alphabet)))]))
		}
		return b.String()
	}
	opt := func(v any) any {
		if r.IntN(4) == 0 {
			return nil
		}
		return v
	}
	when := func() time.Time {
		// Mostly years 1–9999, sometimes around and past the edges.
		lo, hi := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()
		switch r.IntN(40) {
		case 0:
			return time.UnixMicro(lo - r.Int64N(1e12)).UTC()
		case 1:
			return time.UnixMicro(hi + r.Int64N(1e12)).UTC()
		case 2:
			return time.UnixMicro(r.Int64N(2e6) - 1e6).UTC() // around the epoch, sub-second negatives
		}
		return time.UnixMicro(lo + r.Int64N(hi-lo)).UTC()
	}
	dec := func(maxDigits int) *big.Rat {
		n := r.Int64N(int64(math.Pow10(r.IntN(maxDigits) + 1)))
		if r.IntN(2) == 0 {
			n = -n
		}
		return big.NewRat(n, 1) // scaled below
	}
	amount := dec(12)
	amount.Quo(amount, big.NewRat(100, 1))
	oamount := dec(18)
	if r.IntN(10) == 0 { // past 64 bits: the values' way
		oamount.Mul(oamount, big.NewRat(100, 1))
	}
	oamount.Quo(oamount, big.NewRat(10000, 1))
	o := opt(oamount)
	if o != nil {
		unscaled := new(big.Rat).Mul(oamount, big.NewRat(10000, 1)).Num()
		wide = !unscaled.IsInt64()
	}
	var tags any
	if r.IntN(4) > 0 {
		list := []any{}
		for range r.IntN(4) {
			list = append(list, opt(text()))
		}
		tags = list
	}
	nums := []any{}
	for range r.IntN(4) {
		nums = append(nums, opt(r.Int64()-math.MaxInt64/2))
	}
	ints := []any{}
	for range r.IntN(4) {
		ints = append(ints, int(r.Int32()))
	}
	floats := []float64{0, math.Copysign(0, -1), -0.5, 1e-7, 3.4e38, math.Inf(1), math.NaN(), r.NormFloat64()}
	tsm := opt(when().Truncate(time.Millisecond))
	day := when()
	day = time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, time.UTC)
	return map[string]any{"id": id, "k": text()}, map[string]any{
		"skipped": map[string]any{"a": int64(1)},
		"id":      id, "i": int(r.Int32()), "f": float32(floats[r.IntN(len(floats))]), "d": floats[r.IntN(len(floats))],
		"b": r.IntN(2) == 0, "s": opt(text()), "s2": opt(text()), "raw": []byte(text()),
		"amount": amount, "oamount": o, "u": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"day": day, "ts": when(), "tsm": tsm, "tags": tags, "nums": nums, "ints": ints, "doc": `{"a": "` + text() + `"}`,
	}, wide
}

// TestCopyLineMatchesValues: a row's COPY line written straight from its
// bytes is byte for byte the text of its values, converted and encoded,
// on every kind the lines take; a record without COPY text (a year out of
// range) is left to the values' way.
func TestCopyLineMatchesValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		model   ReadModel
		types   []string
		inOrder bool
	}{
		{"fields in the columns' order", lineModelInOrder, lineTypesInOrder, true},
		{"a field twice, a key field last", lineModel, lineTypes, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, reg, id := lineApplier(t, c.model, lineKey, lineValue)
			keyID := reg.versions["t-key"][0]
			r := rand.New(rand.NewPCG(1, 2))
			lines, left, wides := 0, 0, 0
			for n := range 3000 {
				k, v, wide := randomLineRecord(r, int64(n)-1500)
				if wide {
					wides++
				}
				rec := &kgo.Record{Topic: "t", Key: frame(t, keyID, reg.schemaFor[keyID], k), Value: frame(t, id, reg.schemaFor[id], v)}
				want, we, wantOK := valuesLine(t, a, rec, c.types)
				var got bytes.Buffer
				got.WriteString("before")
				kc, rk := scratch(a)
				e, ok := a.aheadLine(t.Context(), 0, rec, c.types, kc, rk, &got)
				if !ok {
					if got.String() != "before" {
						t.Fatalf("record %d: a line left to the values' way wrote %q", n, got.String())
					}
					if wantOK && !wide {
						t.Fatalf("record %d: no line, but the values have COPY text %q (%v)", n, want, v)
					}
					left++
					continue
				}
				if !wantOK || wide {
					t.Fatalf("record %d: a line %q, but the values have no COPY text or a decimal past 64 bits (%v)", n, got.String(), v)
				}
				if g := got.String()[len("before"):]; g != string(want) {
					t.Fatalf("record %d:\n got %q\nwant %q\nvalues %v", n, g, want, v)
				}
				if e.tn != we.tn || e.tk != we.tk || e.tk == "" {
					t.Fatalf("record %d: topic key identity %d %q, want %d %q", n, e.tn, e.tk, we.tn, we.tk)
				}
				lines++
				// Cut short: no line, and nothing of one written.
				rec.Value = rec.Value[:len(rec.Value)-1-r.IntN(len(rec.Value)-6)]
				got.Reset()
				if _, ok := a.aheadLine(t.Context(), 0, rec, c.types, kc, rk, &got); ok || got.Len() > 0 {
					t.Fatalf("record %d cut to %d bytes: a line %q", n, len(rec.Value), got.String())
				}
			}
			if le := a.p.sources[0].ahead.value.resolved[id].line; le == nil || le.inOrder != c.inOrder {
				t.Fatalf("lines written in the fields' order: %v, want %v", le != nil && le.inOrder, c.inOrder)
			}
			if lines < 2000 || left == 0 || wides == 0 {
				t.Fatalf("%d lines, %d left to the values' way (%d for a decimal past 64 bits): want most as lines and a few left of each", lines, left, wides)
			}
			t.Logf("%d lines, %d left to the values' way (%d for a decimal past 64 bits)", lines, left, wides)
		})
	}
}

// TestCopyLineLeavesWhatItDoesNotKnow: a field of a kind the lines do not
// write (a time of day, a map, an array of enums), a writer that needs
// resolution, column
// types of another shape, a time into columns of different texts and a
// tombstone all take the values' way.
func TestCopyLineLeavesWhatItDoesNotKnow(t *testing.T) {
	t.Parallel()
	const key = `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`
	const value = `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"n","type":"long"},
		{"name":"tod","type":{"type":"long","logicalType":"time-micros"}},{"name":"m","type":{"type":"map","values":"long"}},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"e","type":{"type":"array","items":{"type":"enum","name":"color","symbols":["RED","GREEN"]}}}]}`
	model := func(cols ...Column) ReadModel {
		return ReadModel{Name: "x", Table: "x", Key: []string{"id"}, Sources: []Source{{Topic: "t", Key: []string{"id"}, Owner: true, Columns: cols}}}
	}
	type record = map[string]any
	v := record{"id": int64(1), "n": int64(2), "tod": time.Second, "m": record{"a": int64(1)}, "ts": time.Unix(5, 0).UTC(), "e": []any{"RED", "GREEN"}}
	for _, c := range []struct {
		name  string
		model ReadModel
		types []string
		line  bool
	}{
		{"plain", model(Column{Name: "n", Field: "n"}), []string{"bigint", "bigint"}, true},
		{"a time of day", model(Column{Name: "n", Field: "n"}, Column{Name: "tod", Field: "tod"}), []string{"bigint", "bigint", "time without time zone"}, false},
		{"a map", model(Column{Name: "m", Field: "m"}), []string{"bigint", "jsonb"}, false},
		{"an array of enums", model(Column{Name: "e", Field: "e"}), []string{"bigint", "text[]"}, false},
		{"types of another shape", model(Column{Name: "n", Field: "n"}), []string{"bigint"}, false},
		{"one field into two columns of the same text", model(Column{Name: "n", Field: "n"}, Column{Name: "n2", Field: "n"}), []string{"bigint", "bigint", "text"}, true},
		{"one time into two columns of different texts", model(Column{Name: "ts", Field: "ts"}, Column{Name: "day", Field: "ts"}), []string{"bigint", "timestamp with time zone", "date"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, reg, id := lineApplier(t, c.model, key, value)
			keyID := reg.versions["t-key"][0]
			rec := &kgo.Record{Topic: "t", Key: frame(t, keyID, reg.schemaFor[keyID], record{"id": int64(1)}), Value: frame(t, id, reg.schemaFor[id], v)}
			var b bytes.Buffer
			kc, rk := scratch(a)
			_, ok := a.aheadLine(t.Context(), 0, rec, c.types, kc, rk, &b)
			if ok != c.line {
				t.Fatalf("line written: %v, want %v", ok, c.line)
			}
			if ok {
				if want, _, _ := valuesLine(t, a, rec, c.types); b.String() != string(want) {
					t.Fatalf("got %q, want %q", b.String(), want)
				}
			}
			rec.Value = nil // a tombstone
			if _, ok := a.aheadLine(t.Context(), 0, rec, c.types, kc, rk, &b); ok {
				t.Fatal("a tombstone written as a line")
			}
		})
	}
	t.Run("a writer that needs resolution", func(t *testing.T) {
		t.Parallel()
		a, reg, _ := lineApplier(t, model(Column{Name: "n", Field: "n"}), key, value)
		older := reg.add(t, "t-value", `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"n","type":"int"}]}`)
		keyID := reg.versions["t-key"][0]
		rec := &kgo.Record{Topic: "t", Key: frame(t, keyID, reg.schemaFor[keyID], record{"id": int64(1)}), Value: frame(t, older, reg.schemaFor[older], record{"id": int64(1), "n": 5})}
		kc, rk := scratch(a)
		if _, ok := a.aheadLine(t.Context(), 0, rec, []string{"bigint", "bigint"}, kc, rk, new(bytes.Buffer)); ok {
			t.Fatal("a promoted int written as a line")
		}
	})
}

// TestWriteLinesBesideOtherRows: one batch of lines encoded ahead, rows
// converted the values' way and tombstones, in any order, is one COPY of
// the right rows and the deletes.
func TestWriteLinesBesideOtherRows(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, postgresStore(t).fresh(t))
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE profile (customer_id bigint PRIMARY KEY, display_name text NOT NULL, tier text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.db.ExecContext(ctx, `INSERT INTO profile VALUES (2, 'gone', NULL), (5, 'gone too', 'x')`); err != nil {
		t.Fatal(err)
	}
	a, reg, id := lineApplier(t, customerModel("profile"), customersKey, customersValue)
	a.st = st
	keyID := reg.versions["customers-key"][0]
	types := []string{"bigint", "text", "text"}
	record := func(n int64, name string, asLine bool) entry {
		k, v := cust(n, name, "gold")
		rec := &kgo.Record{Topic: "customers", Key: frame(t, keyID, reg.schemaFor[keyID], k)}
		if name != "" {
			rec.Value = frame(t, id, reg.schemaFor[id], v)
		}
		if asLine {
			kc, rk := scratch(a)
			text := new(bytes.Buffer)
			e, ok := a.aheadLine(ctx, 0, rec, types, kc, rk, text)
			if !ok {
				t.Fatalf("record %d: no line", n)
			}
			e.line, e.lineTypes = text.Bytes(), types
			return e
		}
		e, err := a.decode(ctx, 0, rec)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	entries := []entry{record(1, "ann", true), record(2, "", false), record(3, "bob", false), record(4, "cy", true), record(5, "", false), record(6, "dee", true)}
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.write(ctx, tx, entries, 1); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	st.end()
	var got []string
	r, err := st.db.QueryContext(ctx, `SELECT customer_id || '|' || display_name || '|' || tier FROM profile ORDER BY customer_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var s string
		if err := r.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if want := "1|ann|gold 3|bob|gold 4|cy|gold 6|dee|gold"; strings.Join(got, " ") != want {
		t.Fatalf("rows: got %q, want %q", strings.Join(got, " "), want)
	}
}

// downRegistry is a fakeRegistry whose SchemaByID answers HTTP 503 while
// down.
type downRegistry struct {
	*fakeRegistry
	down atomic.Bool
}

func (d *downRegistry) SchemaByID(ctx context.Context, id int) (sr.Schema, error) {
	if d.down.Load() {
		return sr.Schema{}, &sr.ResponseError{StatusCode: 503, Message: "unavailable"}
	}
	return d.fakeRegistry.SchemaByID(ctx, id)
}

// lineThatNoLongerFits is a customer record's line encoded for column
// types its table no longer has (display_name became a varchar), on a
// fresh PostgreSQL store, with a registry that can be taken down.
func lineThatNoLongerFits(t *testing.T) (*applier, *store, *downRegistry, entry) {
	t.Helper()
	st := openTestStore(t, postgresStore(t).fresh(t))
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE profile (customer_id bigint PRIMARY KEY, display_name character varying, tier text)`); err != nil {
		t.Fatal(err)
	}
	reg := &downRegistry{fakeRegistry: newFakeRegistry()}
	keyID := reg.add(t, "customers-key", customersKey)
	id := reg.add(t, "customers-value", customersValue)
	m := customerModel("profile")
	p, err := compile(ctx, &m, reg, newAPI())
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{p: p, st: st}
	types := []string{"bigint", "text", "text"}
	k, v := cust(1, "ann", nil)
	rec := &kgo.Record{Topic: "customers", Key: frame(t, keyID, reg.schemaFor[keyID], k), Value: frame(t, id, reg.schemaFor[id], v)}
	kc, rk := scratch(a)
	text := new(bytes.Buffer)
	e, ok := a.aheadLine(ctx, 0, rec, types, kc, rk, text)
	if !ok {
		t.Fatal("no line")
	}
	e.line, e.lineTypes = text.Bytes(), types
	return a, st, reg, e
}

// TestLinesConvertedAgainDuringAnOutage: a batch's lines that no longer
// fit the table (a type altered since they were encoded) are decoded
// again as values; a registry outage then fails the batch as its first
// decoding would have (retried), never a record as a poison one.
func TestLinesConvertedAgainDuringAnOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, st, reg, e := lineThatNoLongerFits(t)
	reg.down.Store(true)
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = a.write(ctx, tx, []entry{e}, 1)
	tx.Rollback()
	st.end()
	var pe *PoisonError
	if err == nil || errors.As(err, &pe) || !errors.As(err, new(*redecodeError)) || !retryable(err) {
		t.Fatalf("write during the outage: got %v (poison: %v), want the batch's retryable failure to decode again", err, errors.As(err, &pe))
	}
	reg.down.Store(false)
	tx, err = st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.write(ctx, tx, []entry{e}, 1); err != nil {
		t.Fatalf("write once the registry answers: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	st.end()
	var name string
	if err := st.db.QueryRowContext(ctx, `SELECT display_name FROM profile WHERE customer_id = 1`).Scan(&name); err != nil || name != "ann" {
		t.Fatalf("row: %q, %v; want ann", name, err)
	}
}

// TestCopyLineValueSizes: a string of several MiB (within what a record
// may carry) is one line, as the values have it; a length prefix beyond
// the record's bytes is no line, and leaves no buffer of its claimed size.
func TestCopyLineValueSizes(t *testing.T) {
	t.Parallel()
	const value = `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"},{"name":"b","type":"bytes"}]}`
	m := ReadModel{Name: "x", Table: "x", Key: []string{"id"}, Sources: []Source{{Topic: "t", Key: []string{"id"}, Owner: true,
		Columns: []Column{{Name: "s", Field: "s"}, {Name: "b", Field: "b"}}}}}
	a, reg, id := lineApplier(t, m, `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`, value)
	keyID := reg.versions["t-key"][0]
	types := []string{"bigint", "text", "bytea"}
	big := strings.Repeat("a\tb", 1<<20)
	rec := &kgo.Record{Topic: "t", Key: frame(t, keyID, reg.schemaFor[keyID], map[string]any{"id": int64(1)}),
		Value: frame(t, id, reg.schemaFor[id], map[string]any{"id": int64(1), "s": big, "b": []byte(big[:5000])})}
	want, _, wantOK := valuesLine(t, a, rec, types)
	kc, rk := scratch(a)
	var got bytes.Buffer
	if _, ok := a.aheadLine(t.Context(), 0, rec, types, kc, rk, &got); !ok || !wantOK || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("a 3 MiB string: line %v (%d bytes), values %v (%d bytes), equal %v", ok, got.Len(), wantOK, len(want), bytes.Equal(got.Bytes(), want))
	}
	// id 1, then a string claiming 1 GiB.
	corrupt := append([]byte{0, 0, 0, 0, byte(id), 2}, binary.AppendVarint(nil, 1<<30)...)
	rec.Value = append(corrupt, "abc"...)
	got.Reset()
	if _, ok := a.aheadLine(t.Context(), 0, rec, types, kc, rk, &got); ok || got.Len() > 0 {
		t.Fatalf("a length past the record's bytes: a line %q", got.String())
	}
	if le := a.p.sources[0].ahead.value.resolved[id].line; le == nil || cap(le.tmp.b) > 1<<20 {
		t.Fatalf("the lines' scratch kept a buffer of %d bytes", cap(le.tmp.b))
	}
}

// TestDecodeAheadWritesLines: a batch decoded ahead is written as lines
// once the table's column types are known (not the first batch, which
// reads them), tombstones and poison records among them as before.
func TestDecodeAheadWritesLines(t *testing.T) {
	t.Parallel()
	a, reg, id := lineApplier(t, customerModel("profile"), customersKey, customersValue)
	keyID := reg.versions["customers-key"][0]
	rec := func(n int64, name string) *kgo.Record {
		k, v := cust(n, name, nil)
		r := &kgo.Record{Topic: "customers", Key: frame(t, keyID, reg.schemaFor[keyID], k)}
		switch name {
		case "":
		case "poison":
			r.Value = []byte("not avro")
		default:
			r.Value = frame(t, id, reg.schemaFor[id], v)
		}
		return r
	}
	s := &Sink{a: a, st: a.st}
	recs := []*kgo.Record{rec(1, "ann"), rec(2, ""), rec(3, "poison"), rec(4, "bob")}
	if b := s.decodeAhead(t.Context(), recs); b.n != 4 || b.ents[0].line != nil || b.ents[0].row == nil {
		t.Fatalf("first batch: %d decoded, line %q, row %v; want rows, no lines (the types are not known yet)", b.n, b.ents[0].line, b.ents[0].row)
	}
	a.st.cacheTypes("profile", map[string]string{"customer_id": "bigint", "display_name": "text", "tier": "text"})
	b := s.decodeAhead(t.Context(), recs)
	if b.n != 4 {
		t.Fatalf("%d decoded, want 4", b.n)
	}
	for i, want := range []string{"1\tann\t\\N\n", "", "", "4\tbob\t\\N\n"} {
		if string(b.ents[i].line) != want {
			t.Errorf("record %d: line %q, want %q", i, b.ents[i].line, want)
		}
	}
	if !b.ents[1].value.none() || b.errs[1] != nil || !errors.Is(b.errs[2], errUndecodable) {
		t.Errorf("tombstone: value none %v, error %v; poison record: error %v", b.ents[1].value.none(), b.errs[1], b.errs[2])
	}
}

// TestLinesConvertedAgainRecordByRecord: a batch split record by record
// (oneByOne) whose line must be decoded again during a registry outage
// fails, to be retried; the record is not poison.
func TestLinesConvertedAgainRecordByRecord(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, st, reg, e := lineThatNoLongerFits(t)
	if err := st.ensureSinkTables(ctx); err != nil {
		t.Fatal(err)
	}
	reg.down.Store(true)
	s := &Sink{cfg: Config{Model: *a.p.model}, name: "profile", log: slog.Default(), st: st, a: a, expected: map[tp]int64{}}
	err := s.oneByOne(ctx, []*kgo.Record{e.rec}, []entry{e}, map[*kgo.Record]int{e.rec: 0}, map[tp]int64{{"customers", 0}: -1})
	var pe *PoisonError
	if err == nil || errors.As(err, &pe) || !retryable(err) {
		t.Fatalf("record by record during the outage: got %v (poison: %v), want the batch's retryable failure", err, errors.As(err, &pe))
	}
}

// TestCopyLineScratchNotKept: a writer whose fields are not in the
// columns' order writes a large value through the scratch buffer, which is
// not kept past the next record.
func TestCopyLineScratchNotKept(t *testing.T) {
	t.Parallel()
	const value = `{"type":"record","name":"v","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"},{"name":"b","type":"bytes"}]}`
	m := ReadModel{Name: "x", Table: "x", Key: []string{"id"}, Sources: []Source{{Topic: "t", Key: []string{"id"}, Owner: true,
		Columns: []Column{{Name: "b", Field: "b"}, {Name: "s", Field: "s"}}}}}
	a, reg, id := lineApplier(t, m, `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`, value)
	keyID := reg.versions["t-key"][0]
	types := []string{"bigint", "bytea", "text"}
	line := func(s string) {
		t.Helper()
		rec := &kgo.Record{Topic: "t", Key: frame(t, keyID, reg.schemaFor[keyID], map[string]any{"id": int64(1)}),
			Value: frame(t, id, reg.schemaFor[id], map[string]any{"id": int64(1), "s": s, "b": []byte("x")})}
		want, _, _ := valuesLine(t, a, rec, types)
		kc, rk := scratch(a)
		var got bytes.Buffer
		if _, ok := a.aheadLine(t.Context(), 0, rec, types, kc, rk, &got); !ok || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("line %v, equal to the values' %v", ok, bytes.Equal(got.Bytes(), want))
		}
	}
	line(strings.Repeat("s", 3<<20))
	line("small")
	le := a.p.sources[0].ahead.value.resolved[id].line
	if le == nil || le.inOrder || le.seg.Cap() > 1<<20 {
		t.Fatalf("out of order: %v; scratch kept %d bytes", le != nil && !le.inOrder, le.seg.Cap())
	}
}
