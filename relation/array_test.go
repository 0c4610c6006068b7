package relation

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func arrayOf(k Kind) Type {
	return Type{Kind: Array, Name: k.String() + "[]", Elem: &Type{Kind: k}}
}

func TestDecodeTextArray(t *testing.T) {
	t.Parallel()
	ints, texts := arrayOf(Int32), arrayOf(Text)
	runDecodeCases(t, []decodeCase{
		{name: "ints", typ: ints, in: "{1,2,NULL}", want: []any{int32(1), int32(2), nil}},
		{name: "empty", typ: ints, in: "{}", want: []any{}},
		{name: "one element", typ: ints, in: "{-2147483648}", want: []any{int32(-2147483648)}},
		{name: "all NULL", typ: ints, in: "{NULL,null,Null}", want: []any{nil, nil, nil}},
		{name: "int16", typ: arrayOf(Int16), in: "{32767,-32768}", want: []any{int32(32767), int32(-32768)}},
		{name: "int64", typ: arrayOf(Int64), in: "{9223372036854775807}", want: []any{int64(9223372036854775807)}},
		{name: "texts quoted", typ: texts, in: `{"a b","x\"y","NULL",NULL}`, want: []any{"a b", `x"y`, "NULL", nil}},
		{name: "texts as psql prints them", typ: texts,
			in:   `{"a b","x\"y","NULL",NULL,"","back\\slash","{x}",plain,"a,b"}`,
			want: []any{"a b", `x"y`, "NULL", nil, "", `back\slash`, "{x}", "plain", "a,b"}},
		{name: "text escape at end", typ: texts, in: `{"\\"}`, want: []any{`\`}},
		{name: "text only escapes", typ: texts, in: `{"\"\"","\\\\"}`, want: []any{`""`, `\\`}},
		{name: "text escaped ordinary byte", typ: texts, in: `{"\a"}`, want: []any{"a"}},
		{name: "text 4-byte unicode", typ: texts, in: `{😀,"𝄞 x"}`, want: []any{"😀", "𝄞 x"}},
		{name: "text quoted empty only", typ: texts, in: `{""}`, want: []any{""}},
		{name: "text quoted braces and commas", typ: texts, in: `{"}","{",","}`, want: []any{"}", "{", ","}},
		{name: "text NULL spelled in quotes", typ: texts, in: `{"null"}`, want: []any{"null"}},
		{name: "text longer than NULL", typ: texts, in: `{NULLS,NUL}`, want: []any{"NULLS", "NUL"}},
		{name: "bytea", typ: arrayOf(Bytes), in: `{"\\x01ff","\\x",NULL}`, want: []any{[]byte{1, 0xff}, []byte{}, nil}},
		{name: "json", typ: arrayOf(JSON), in: `{"{\"a\": 1}","[1, 2]",NULL}`, want: []any{`{"a": 1}`, "[1, 2]", nil}},
		{name: "floats", typ: arrayOf(Float32), in: "{1.5,NaN,-Infinity,1e-40}", want: []any{float32(1.5), float32(nanF32()), float32(negInf32()), float32(1e-40)}},
		{name: "numeric", typ: arrayOf(Numeric), in: "{1.50,NaN,-3}", want: []any{"1.50", "NaN", "-3"}},
		{name: "bool", typ: arrayOf(Bool), in: "{t,f,NULL}", want: []any{true, false, nil}},
		{name: "uuid", typ: arrayOf(UUID), in: "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", want: []any{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}},
		{name: "date", typ: arrayOf(Date), in: `{2024-02-29,"0044-03-15 BC"}`, want: []any{utc(2024, 2, 29, 0, 0, 0, 0), utc(-43, 3, 15, 0, 0, 0, 0)}},
		{name: "time", typ: arrayOf(Time), in: "{24:00:00,00:00:00.5}", want: []any{24 * time.Hour, 500 * time.Millisecond}},
		{name: "timestamp", typ: arrayOf(Timestamp), in: `{"2024-01-31 13:45:06.123456"}`, want: []any{utc(2024, 1, 31, 13, 45, 6, 123456000)}},
		{name: "timestamptz", typ: arrayOf(TimestampTZ), in: `{"2024-01-31 13:45:06+00","2024-01-31 13:45:06-08"}`, want: []any{utc(2024, 1, 31, 13, 45, 6, 0), utc(2024, 1, 31, 21, 45, 6, 0)}},
		{name: "enum", typ: arrayOf(Enum), in: "{happy,sad}", want: []any{"happy", "sad"}},

		{name: "explicit bounds", typ: ints, in: "[0:2]={1,2,3}", wantErr: `parse array "[0:2]={1,2,3}": arrays with explicit bounds are not supported`},
		{name: "two dimensions", typ: ints, in: "{{1,2},{3,4}}", wantErr: "multi-dimensional arrays are not supported"},
		{name: "two dimensions with bounds", typ: ints, in: "[1:2][1:1]={{1},{2}}", errIs: errArrayBounds},
		{name: "nested brace later", typ: ints, in: "{1,{2}}", errIs: errArrayUnquote},
		{name: "bad element", typ: ints, in: "{1,x,3}", wantErr: `parse array "{1,x,3}": element 2: parse int32 "x": invalid syntax`, errIs: strconv.ErrSyntax},
		{name: "element out of range", typ: arrayOf(Int16), in: "{40000}", errIs: strconv.ErrRange},
		{name: "infinite element", typ: arrayOf(Date), in: "{2024-01-01,infinity}", wantErr: "element 2", errIs: ErrInfinity},
		{name: "quoted NULL int", typ: ints, in: `{"NULL"}`, errIs: strconv.ErrSyntax},
		{name: "no braces", typ: ints, in: "1,2", errIs: strconv.ErrSyntax},
		{name: "empty text", typ: ints, in: "", errIs: strconv.ErrSyntax},
		{name: "open brace only", typ: ints, in: "{", errIs: strconv.ErrSyntax},
		{name: "unclosed", typ: ints, in: "{1,2", errIs: strconv.ErrSyntax},
		{name: "trailing comma", typ: ints, in: "{1,}", errIs: errArrayEmpty},
		{name: "leading comma", typ: ints, in: "{,1}", errIs: errArrayEmpty},
		{name: "double comma", typ: ints, in: "{1,,2}", errIs: errArrayEmpty},
		{name: "space after comma", typ: ints, in: "{1, 2}", errIs: errArrayUnquote},
		{name: "unterminated quote", typ: texts, in: `{"abc}`, errIs: errArrayQuote},
		{name: "escaped closing quote", typ: texts, in: `{"abc\"}`, errIs: errArrayQuote},
		{name: "junk after quote", typ: texts, in: `{"a"b}`, errIs: errArrayDelim},
		{name: "quote inside unquoted", typ: texts, in: `{a"b"}`, errIs: errArrayUnquote},
		{name: "backslash unquoted", typ: texts, in: `{a\,b}`, errIs: errArrayUnquote},
		{name: "brace after element", typ: texts, in: `{a}b}`, errIs: errArrayUnquote},
		{name: "text after closing brace", typ: texts, in: `{a}x`, errIs: strconv.ErrSyntax},
		{name: "no element type", typ: Type{Kind: Array}, in: "{1}", errIs: errArrayNoElem},
		{name: "array of arrays", typ: Type{Kind: Array, Elem: &Type{Kind: Array, Elem: &Type{Kind: Int32}}}, in: "{}", errIs: errArrayNested},
		{name: "unsupported element", typ: arrayOf(Unsupported), in: "{1}", wantErr: "is not supported"},
	})
}

func nanF32() float32   { return zero32() / zero32() }
func negInf32() float32 { return -1 / zero32() }
func zero32() float32   { return 0 }

func TestIsNull(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want bool
	}{{"NULL", true}, {"null", true}, {"nUlL", true}, {"NUL", false}, {"NULLL", false}, {"NUMM", false}, {"\x0e\x15\x0c\x0c", false}} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := isNull([]byte(tc.in)); got != tc.want {
				t.Errorf("isNull(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// quoteArrayText prints a text[] the way array_out does.
func quoteArrayText(elems []any) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range elems {
		if i > 0 {
			b.WriteByte(',')
		}
		if e == nil {
			b.WriteString("NULL")
			continue
		}
		s := e.(string)
		if s == "" || isNull([]byte(s)) || strings.ContainsAny(s, "{}\",\\ \t\n\v\f\r") {
			b.WriteByte('"')
			for j := 0; j < len(s); j++ {
				if s[j] == '"' || s[j] == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(s[j])
			}
			b.WriteByte('"')
			continue
		}
		b.WriteString(s)
	}
	b.WriteByte('}')
	return b.String()
}

// FuzzDecodeArray feeds arbitrary text to text[] and int4[]. It must not
// panic; a text[] it accepts must print back, as array_out would, to a
// literal that decodes to the same elements; and a list of strings printed
// that way must decode back to itself.
func FuzzDecodeArray(f *testing.F) {
	for _, s := range []string{
		"{}", "{1,2,NULL}", `{"a b","x\"y","NULL",NULL}`, `{"\\x01ff"}`, "[0:2]={1,2,3}",
		"{{1,2},{3,4}}", `{"",a,"\\"}`, `{"a"b}`, "{1,,2}", `{😀,"𝄞"}`,
	} {
		f.Add(s, "a", "b\"c")
	}
	f.Fuzz(func(t *testing.T, s, e1, e2 string) {
		texts := arrayOf(Text)
		got, err := DecodeText(&texts, []byte(s))
		if err == nil {
			elems, ok := got.([]any)
			if !ok || elems == nil {
				t.Fatalf("DecodeText(text[], %q) = %#v, want a non-nil []any", s, got)
			}
			again := quoteArrayText(elems)
			got2, err := DecodeText(&texts, []byte(again))
			if err != nil || !sameValue(got2, got) {
				t.Fatalf("DecodeText(text[], %q) = %#v, %v after printing %q as %q, want %#v", again, got2, err, s, again, got)
			}
		} else if got != nil {
			t.Fatalf("DecodeText(text[], %q) = %#v with error %v, want nil", s, got, err)
		}

		ints := arrayOf(Int32)
		if got, err := DecodeText(&ints, []byte(s)); err == nil {
			for i, e := range got.([]any) {
				if _, ok := e.(int32); e != nil && !ok {
					t.Fatalf("DecodeText(int4[], %q)[%d] = %T, want int32 or nil", s, i, e)
				}
			}
		}

		want := []any{e1, nil, e2, ""}
		lit := quoteArrayText(want)
		got, err = DecodeText(&texts, []byte(lit))
		if err != nil || !sameValue(got, want) {
			t.Fatalf("DecodeText(text[], %q) = %#v, %v, want %#v", lit, got, err, want)
		}
	})
}

// FuzzDecodeText feeds arbitrary text to every kind: no panic, and a value
// exactly when there is no error.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{"0", "-1.5", "NaN", "t", `\x0a`, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "2024-01-31", "{1}"} {
		f.Add(s, uint8(Int32))
	}
	f.Fuzz(func(t *testing.T, s string, k uint8) {
		kind := Kind(k % uint8(Array+2))
		typ := Type{Kind: kind}
		if kind == Array {
			typ.Elem = &Type{Kind: Kind(len(s) % int(Array))}
		}
		src := []byte(s)
		got, err := DecodeText(&typ, src)
		if (err == nil) == (got == nil) {
			t.Fatalf("DecodeText(%s, %q) = %#v, %v, want exactly one of a value and an error", kind, s, got, err)
		}
		if err != nil {
			var pe *parseError
			var ue *unsupportedError
			if !errors.As(err, &pe) && !errors.As(err, &ue) {
				t.Fatalf("DecodeText(%s, %q) error = %T %v, want *parseError or *unsupportedError", kind, s, err, err)
			}
			return
		}
		if b, ok := got.([]byte); ok && len(src) > 2 && len(b) > 0 && &b[0] == &src[2] {
			t.Fatalf("DecodeText(%s, %q) aliases its input", kind, s)
		}
		if kind == Text && !bytes.Equal([]byte(got.(string)), src) {
			t.Fatalf("DecodeText(text, %q) = %q, want the input", s, got)
		}
	})
}

func FuzzDecodeInt(f *testing.F) {
	f.Add("0", int64(0))
	f.Add("-9223372036854775808", int64(-1<<63))
	f.Add("2147483648", int64(1<<31))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		// Printed integers round-trip through every kind they fit.
		text := strconv.FormatInt(n, 10)
		for _, k := range []Kind{Int16, Int32, Int64} {
			got, err := DecodeText(&Type{Kind: k}, []byte(text))
			fits := k == Int64 || k == Int32 && int64(int32(n)) == n || k == Int16 && int64(int16(n)) == n
			switch {
			case fits && err != nil:
				t.Fatalf("DecodeText(%s, %q) error = %v, want %d", k, text, err, n)
			case fits && k == Int64 && got != n, fits && k != Int64 && got != int32(n):
				t.Fatalf("DecodeText(%s, %q) = %v, want %d", k, text, got, n)
			case !fits && !errors.Is(err, strconv.ErrRange):
				t.Fatalf("DecodeText(%s, %q) = %v, %v, want a range error", k, text, got, err)
			}
		}
		// Arbitrary text is accepted exactly when strconv accepts it (less
		// its base prefixes and underscores, which need base 0).
		for _, k := range []struct {
			kind Kind
			bits int
		}{{Int16, 16}, {Int32, 32}, {Int64, 64}} {
			got, err := DecodeText(&Type{Kind: k.kind}, []byte(s))
			want, werr := strconv.ParseInt(s, 10, k.bits)
			if (err == nil) != (werr == nil) {
				t.Fatalf("DecodeText(%s, %q) = %v, %v; strconv.ParseInt = %v, %v", k.kind, s, got, err, want, werr)
			}
			if err != nil {
				// strconv stops at the first digit too many; DecodeText
				// reads on and calls "99999999999x" a syntax error.
				werr := werr.(*strconv.NumError).Err
				if errors.Is(err, strconv.ErrRange) && werr != strconv.ErrRange ||
					werr == strconv.ErrSyntax && !errors.Is(err, strconv.ErrSyntax) {
					t.Fatalf("DecodeText(%s, %q) error = %v, strconv says %v", k.kind, s, err, werr)
				}
				continue
			}
			if k.kind == Int64 && got != want || k.kind != Int64 && got != int32(want) {
				t.Fatalf("DecodeText(%s, %q) = %v, want %d", k.kind, s, got, want)
			}
		}
	})
}

func BenchmarkDecodeInt32(b *testing.B) {
	typ := &Type{Kind: Int32}
	src := []byte("1234567")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInt64(b *testing.B) {
	typ := &Type{Kind: Int64}
	src := []byte("-9000000000123")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFloat64(b *testing.B) {
	typ := &Type{Kind: Float64}
	src := []byte("1234.5678901234567")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNumeric(b *testing.B) {
	typ := &Type{Kind: Numeric}
	src := []byte("-1234567890.1234567890")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeUUID(b *testing.B) {
	typ := &Type{Kind: UUID}
	src := []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeArray(b *testing.B) {
	for _, bc := range []struct {
		name string
		typ  Type
		src  string
	}{
		{"int4[10]", arrayOf(Int32), "{1,22,333,4444,55555,666666,7777777,NULL,-9,10}"},
		{"text[5]", arrayOf(Text), `{alpha,"b c","x\"y",NULL,"back\\slash"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			src := []byte(bc.src)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeText(&bc.typ, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
