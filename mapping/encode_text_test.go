package mapping

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/replicator/replicator/relation"
)

// textCases are column texts of every kind, valid and not, as PostgreSQL
// prints them or as it never would.
var textCases = []struct {
	typ   relation.Type
	opts  Options
	texts []string
}{
	{typ: tInt2, texts: []string{"0", "-32768", "32767", "32768", "+5", "1.0", "", "-", "12a"}},
	{typ: tInt4, texts: []string{"-2147483648", "2147483647", "2147483648", "007"}},
	{typ: tInt8, texts: []string{"9223372036854775807", "-9223372036854775808", "9223372036854775808", "99999999999999999999x"}},
	{typ: tFloat4, texts: []string{"1.5", "-0", "NaN", "Infinity", "-Infinity", "3.4028235e+38", "1e39", "inf", "0x1p-2", ""}},
	{typ: tFloat8, texts: []string{"1.7976931348623157e+308", "5e-324", "1e309", "1_0", "NaN"}},
	{typ: numeric(38, 9), texts: []string{"0", "-12.5", "99999999999999999999999999999.999999999", "1e5", "NaN", "Infinity", "1.0000000001", "0.1000000000"}},
	{typ: numeric(5, 2), texts: []string{"999.99", "1000.00", "-0.01", "abc", ""}},
	{typ: tNumeric, texts: []string{"123456789012345678901234567890.5", "NaN", "-Infinity", "1e3", "--1"}},
	{typ: tNumeric, opts: Options{UnconstrainedNumeric: NumericAsDouble}, texts: []string{"1.25", "NaN", "1" + strings.Repeat("0", 400), "x"}},
	{typ: tText, texts: []string{"", "grüß 🦀", "tab\tnew\nline", "\x00"}},
	{typ: tJSONB, texts: []string{`{"a": [1, null]}`}},
	{typ: tEnum, texts: []string{"happy"}},
	{typ: tBool, texts: []string{"t", "f", "true", "false", "yes", "T", ""}},
	{typ: tBytea, texts: []string{`\x`, `\x00ff80`, `\x0`, `\xzz`, `abc`}},
	{typ: tUUID, texts: []string{"0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f", "0B0B3F0E-8F4E-4A3C-9D2B-7F1C3A2E5D6F", "0b0b3f0e8f4e4a3c9d2b7f1c3a2e5d6f", "zb0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f"}},
	{typ: tDate, texts: []string{"1969-12-31", "0001-01-01 BC", "5874897-12-31", "infinity", "-infinity", "2023-02-29", "2024-02-29"}},
	{typ: tTime, texts: []string{"00:00:00", "23:59:59.999999", "24:00:00", "24:00:01", "1:2:3"}},
	{typ: tTimestamp, texts: []string{"1900-02-28 23:59:59.123456", "294276-12-31 23:59:59.999999", "4713-01-01 00:00:00 BC", "infinity", "2024-01-01"}},
	{typ: tTimestampTZ, texts: []string{"2038-01-19 03:14:08.001+00", "2024-06-01 12:00:00+05:30", "2024-06-01 12:00:00-03:30:15", "-infinity", "2024-06-01 12:00:00"}},
	{typ: arrayOf(tInt4), texts: []string{"{}", "{1,NULL,-1}", "{null}", `{"NULL"}`, "{1,,2}", "{1,x}", "{{1}}", "[0:1]={1,2}", "{1", "{2147483648}"}},
	{typ: arrayOf(numeric(5, 2)), texts: []string{`{NULL,-999.99,0.00}`, "{NaN}", "{1000}"}},
	{typ: arrayOf(tText), texts: []string{`{"",NULL,x}`, `{"a\"b","c\\d","e,f"}`, `{"unterminated}`, `{a b}`}},
	{typ: arrayOf(tTimestampTZ), texts: []string{`{"2024-06-01 12:00:00+00",NULL}`, `{"1969-12-31 00:00:00+00",-infinity}`}},
	{typ: arrayOf(tDate), texts: []string{`{1969-12-31,NULL,-infinity}`, `{"0001-01-01 BC"}`}},
	{typ: arrayOf(tUUID), texts: []string{`{0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f}`}},
	{typ: arrayOf(tBool), texts: []string{`{t,f,NULL}`, `{x}`}},
	{typ: arrayOf(tBytea), texts: []string{`{"\\x00ff",NULL}`}},
}

// TestTextEncodingMatchesValues checks the text path against decoding with
// relation.DecodeText and encoding the values: the same bytes, the same
// texts refused, and for a refused scalar the same reason.
func TestTextEncodingMatchesValues(t *testing.T) {
	t.Parallel()
	for _, tc := range textCases {
		e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(tc.typ), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range tc.texts {
			for _, nullable := range []bool{false, true} {
				checkTextEncoding(t, e, tc.typ, text, nullable)
			}
		}
	}
}

// checkTextEncoding compares both paths for one text in column v (or vn,
// the nullable one).
func checkTextEncoding(t *testing.T, e *Entity, typ relation.Type, text string, nullable bool) {
	t.Helper()
	row, textRow := []any{int64(7), nil, nil}, [][]byte{[]byte("7"), nil, nil}
	col, other := 1, 2
	if nullable {
		col, other = 2, 1
	}
	textRow[col] = []byte(text)
	textRow[other] = []byte(text) // a NOT NULL column needs a value when v is the nullable one
	got, gotErr := e.AppendValueText([]byte("prefix"), textRow)
	v, decodeErr := relation.DecodeText(&typ, []byte(text))
	var want []byte
	wantErr := decodeErr
	if decodeErr == nil {
		row[col], row[other] = v, v
		want, wantErr = e.AppendValue([]byte("prefix"), row)
	}
	what := typ.Name + " " + quote(text)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Errorf("%s: text path error %v, value path error %v", what, gotErr, wantErr)
	case gotErr == nil && !bytes.Equal(got, want):
		t.Errorf("%s: text path wrote %x, value path %x", what, got, want)
	case gotErr != nil:
		var ce *ColumnError
		if !errors.As(gotErr, &ce) || ce.Index != 1 || ce.Column != "v" {
			t.Errorf("%s: got %v, want a *ColumnError for column 1 (v)", what, gotErr)
			break
		}
		if !bytes.Equal(got, []byte("prefix")) {
			t.Errorf("%s: refused, but dst came back as %q, want it unchanged", what, got)
		}
		if typ.Kind != relation.Array && decodeErr != nil && ce.Err.Error() != decodeErr.Error() {
			t.Errorf("%s: text path says %q, DecodeText says %q", what, ce.Err, decodeErr)
		}
		if errors.Is(decodeErr, relation.ErrInfinity) && !errors.Is(gotErr, relation.ErrInfinity) {
			t.Errorf("%s: got %v, want it to wrap relation.ErrInfinity", what, gotErr)
		}
	}
}

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return "\"" + s + "\""
}

func TestTextEncodingKeyAndNulls(t *testing.T) {
	t.Parallel()
	e, err := NewEntity(Spec{Name: "k", Topic: "k"}, kitchenSink(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	width := len(kitchenSink().Columns)
	row := make([][]byte, width)
	row[0], row[1] = []byte("42"), []byte("acme")
	key, err := e.AppendKeyText(nil, row)
	if err != nil {
		t.Fatal(err)
	}
	want, err := e.AppendKey(nil, []any{int64(42), "acme"})
	if err == nil && !bytes.Equal(key, want) {
		t.Errorf("key: got %x, want %x", key, want)
	}
	if _, err := e.AppendValueText(nil, row); err == nil || !strings.Contains(err.Error(), `column "i2": NULL`) {
		t.Errorf("NULL in NOT NULL column i2: got %v, want the NOT NULL error naming i2", err)
	}
	if _, err := e.AppendKeyText(nil, row[:3]); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("want %d", width)) {
		t.Errorf("short row: got %v, want a width error", err)
	}
	row[0] = nil
	if _, err := e.AppendKeyText(nil, row); err == nil || !strings.Contains(err.Error(), `key column "id": NULL`) {
		t.Errorf("NULL key: got %v, want the key NULL error", err)
	}
}

// FuzzTextEncoding runs TestTextEncodingMatchesValues's comparison on any
// text, for every kind.
func FuzzTextEncoding(f *testing.F) {
	for i, tc := range textCases {
		for _, text := range tc.texts {
			f.Add(uint8(i), text)
		}
	}
	entities := make([]*Entity, len(textCases))
	for i, tc := range textCases {
		e, err := NewEntity(Spec{Name: "one", Topic: "one"}, oneColumn(tc.typ), tc.opts)
		if err != nil {
			f.Fatal(err)
		}
		entities[i] = e
	}
	f.Fuzz(func(t *testing.T, kind uint8, text string) {
		i := int(kind) % len(textCases)
		checkTextEncoding(t, entities[i], textCases[i].typ, text, text != "" && text[0]%2 == 0)
	})
}

// TestTextEncodingAllocatesNothing: the point of the text path. A row of
// the kinds met in bulk is encoded without a single allocation.
func TestTextEncodingAllocatesNothing(t *testing.T) {
	table := &relation.Table{Schema: "public", Name: "rows", PrimaryKey: []string{"id"}, Columns: []relation.Column{
		col("id", tInt8, false), col("name", tText, false), col("amount", numeric(12, 2), true),
		col("created_at", tTimestampTZ, false), col("tags", arrayOf(tText), true), col("attrs", tJSONB, true),
		col("quantity", tInt4, false), col("active", tBool, false), col("day", tDate, true), col("uid", tUUID, true),
	}}
	e, err := NewEntity(Spec{Name: "rows", Topic: "rows"}, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	row := [][]byte{[]byte("123456789"), []byte("name-123456789"), []byte("12345.67"), []byte("2026-11-26 04:00:00.123456+00"),
		[]byte(`{alpha,"b c",NULL}`), []byte(`{"k": 1}`), []byte("42"), []byte("t"), []byte("2026-11-26"),
		[]byte("0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f")}
	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = e.AppendKeyText(buf[:0], row); err == nil {
			buf, err = e.AppendValueText(buf, row)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("got %.1f allocations per row, want 0", allocs)
	}
}
