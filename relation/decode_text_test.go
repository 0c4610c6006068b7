package relation

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// decodeCase is one DecodeText call and what it must return: want when
// wantErr is empty, else an error whose text contains wantErr (and that wraps
// errIs when it is set).
type decodeCase struct {
	name    string
	typ     Type
	in      string
	want    any
	wantErr string
	errIs   error
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := []byte(tc.in)
			got, err := DecodeText(&tc.typ, src)
			if tc.wantErr != "" || tc.errIs != nil {
				if err == nil {
					t.Fatalf("DecodeText(%s, %q) = %#v, want error %q", tc.typ.Kind, tc.in, got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("DecodeText(%s, %q) error = %q, want it to contain %q", tc.typ.Kind, tc.in, err, tc.wantErr)
				}
				if tc.errIs != nil && !errors.Is(err, tc.errIs) {
					t.Errorf("DecodeText(%s, %q) error = %q, want errors.Is %v", tc.typ.Kind, tc.in, err, tc.errIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeText(%s, %q) error = %v, want %#v", tc.typ.Kind, tc.in, err, tc.want)
			}
			if !sameValue(got, tc.want) {
				t.Fatalf("DecodeText(%s, %q) = %#v (%T), want %#v (%T)", tc.typ.Kind, tc.in, got, got, tc.want, tc.want)
			}
			// The result must not alias src: the caller reuses its buffer.
			for i := range src {
				src[i] = '#'
			}
			if !sameValue(got, tc.want) {
				t.Fatalf("DecodeText(%s, %q) result changed with its input to %#v", tc.typ.Kind, tc.in, got)
			}
		})
	}
}

// sameValue is reflect.DeepEqual except that NaN equals NaN (and -0 is told
// apart from 0) and times compare with ==, which also checks the location.
func sameValue(got, want any) bool {
	switch w := want.(type) {
	case float64:
		g, ok := got.(float64)
		return ok && sameFloat(g, w)
	case float32:
		g, ok := got.(float32)
		return ok && sameFloat(float64(g), float64(w))
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g == w
	case []any:
		g, ok := got.([]any)
		if !ok || g == nil || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !sameValue(g[i], w[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(got, want)
}

func sameFloat(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return a == b && math.Signbit(a) == math.Signbit(b)
}

func TestDecodeTextInt(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "int16 zero", typ: Type{Kind: Int16}, in: "0", want: int32(0)},
		{name: "int16 typical", typ: Type{Kind: Int16}, in: "-42", want: int32(-42)},
		{name: "int16 min", typ: Type{Kind: Int16}, in: "-32768", want: int32(math.MinInt16)},
		{name: "int16 max", typ: Type{Kind: Int16}, in: "32767", want: int32(math.MaxInt16)},
		{name: "int16 above max", typ: Type{Kind: Int16}, in: "32768", wantErr: `parse int16 "32768": value out of range`, errIs: strconv.ErrRange},
		{name: "int16 below min", typ: Type{Kind: Int16}, in: "-32769", errIs: strconv.ErrRange},
		{name: "int32 typical", typ: Type{Kind: Int32}, in: "123456", want: int32(123456)},
		{name: "int32 min", typ: Type{Kind: Int32}, in: "-2147483648", want: int32(math.MinInt32)},
		{name: "int32 max", typ: Type{Kind: Int32}, in: "2147483647", want: int32(math.MaxInt32)},
		{name: "int32 plus sign", typ: Type{Kind: Int32}, in: "+7", want: int32(7)},
		{name: "int32 leading zeros", typ: Type{Kind: Int32}, in: "007", want: int32(7)},
		{name: "int32 above max", typ: Type{Kind: Int32}, in: "2147483648", errIs: strconv.ErrRange},
		{name: "int32 below min", typ: Type{Kind: Int32}, in: "-2147483649", errIs: strconv.ErrRange},
		{name: "int32 letters", typ: Type{Kind: Int32}, in: "abc", wantErr: `parse int32 "abc": invalid syntax`, errIs: strconv.ErrSyntax},
		{name: "int32 empty", typ: Type{Kind: Int32}, in: "", errIs: strconv.ErrSyntax},
		{name: "int32 sign only", typ: Type{Kind: Int32}, in: "-", errIs: strconv.ErrSyntax},
		{name: "int32 space", typ: Type{Kind: Int32}, in: " 1", errIs: strconv.ErrSyntax},
		{name: "int32 fraction", typ: Type{Kind: Int32}, in: "1.0", errIs: strconv.ErrSyntax},
		{name: "int32 overflow then junk", typ: Type{Kind: Int32}, in: "99999999999x", errIs: strconv.ErrSyntax},
		{name: "int64 typical", typ: Type{Kind: Int64}, in: "-9000000000", want: int64(-9000000000)},
		{name: "int64 min", typ: Type{Kind: Int64}, in: "-9223372036854775808", want: int64(math.MinInt64)},
		{name: "int64 max", typ: Type{Kind: Int64}, in: "9223372036854775807", want: int64(math.MaxInt64)},
		{name: "int64 above max", typ: Type{Kind: Int64}, in: "9223372036854775808", errIs: strconv.ErrRange},
		{name: "int64 below min", typ: Type{Kind: Int64}, in: "-9223372036854775809", errIs: strconv.ErrRange},
		{name: "int64 far above max", typ: Type{Kind: Int64}, in: "99999999999999999999999", errIs: strconv.ErrRange},
		{name: "int64 underscore", typ: Type{Kind: Int64}, in: "1_000", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextFloat(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "float32 typical", typ: Type{Kind: Float32}, in: "1.5", want: float32(1.5)},
		{name: "float32 shortest", typ: Type{Kind: Float32}, in: "0.1", want: float32(0.1)},
		{name: "float32 max", typ: Type{Kind: Float32}, in: "3.4028235e+38", want: float32(math.MaxFloat32)},
		{name: "float32 denormal", typ: Type{Kind: Float32}, in: "1e-45", want: float32(math.SmallestNonzeroFloat32)},
		{name: "float32 negative zero", typ: Type{Kind: Float32}, in: "-0", want: float32(math.Copysign(0, -1))},
		{name: "float32 NaN", typ: Type{Kind: Float32}, in: "NaN", want: float32(math.NaN())},
		{name: "float32 Infinity", typ: Type{Kind: Float32}, in: "Infinity", want: float32(math.Inf(1))},
		{name: "float32 -Infinity", typ: Type{Kind: Float32}, in: "-Infinity", want: float32(math.Inf(-1))},
		{name: "float32 out of range", typ: Type{Kind: Float32}, in: "1e39", errIs: strconv.ErrRange},
		{name: "float64 typical", typ: Type{Kind: Float64}, in: "-12.25", want: -12.25},
		{name: "float64 extra digits", typ: Type{Kind: Float64}, in: "0.30000000000000004", want: math.Nextafter(0.3, 1)},
		{name: "float64 exponent", typ: Type{Kind: Float64}, in: "1.2345678901234567e+300", want: 1.2345678901234567e+300},
		{name: "float64 negative exponent", typ: Type{Kind: Float64}, in: "1e-05", want: 1e-05},
		{name: "float64 max", typ: Type{Kind: Float64}, in: "1.7976931348623157e+308", want: math.MaxFloat64},
		{name: "float64 smallest", typ: Type{Kind: Float64}, in: "5e-324", want: math.SmallestNonzeroFloat64},
		{name: "float64 negative zero", typ: Type{Kind: Float64}, in: "-0", want: math.Copysign(0, -1)},
		{name: "float64 NaN", typ: Type{Kind: Float64}, in: "NaN", want: math.NaN()},
		{name: "float64 Infinity", typ: Type{Kind: Float64}, in: "Infinity", want: math.Inf(1)},
		{name: "float64 -Infinity", typ: Type{Kind: Float64}, in: "-Infinity", want: math.Inf(-1)},
		{name: "float64 out of range", typ: Type{Kind: Float64}, in: "1e309", wantErr: `parse float64 "1e309": value out of range`, errIs: strconv.ErrRange},
		{name: "float64 empty", typ: Type{Kind: Float64}, in: "", errIs: strconv.ErrSyntax},
		{name: "float64 inf spelling", typ: Type{Kind: Float64}, in: "inf", errIs: strconv.ErrSyntax},
		{name: "float64 nan spelling", typ: Type{Kind: Float64}, in: "nan", errIs: strconv.ErrSyntax},
		{name: "float64 hex", typ: Type{Kind: Float64}, in: "0x1p-2", errIs: strconv.ErrSyntax},
		{name: "float64 letters", typ: Type{Kind: Float64}, in: "abc", wantErr: `parse float64 "abc": invalid syntax`},
		{name: "float64 two points", typ: Type{Kind: Float64}, in: "1.2.3", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextNumeric(t *testing.T) {
	t.Parallel()
	num := Type{Kind: Numeric, Name: "numeric(12,2)", Precision: 12, Scale: 2}
	long := "-" + strings.Repeat("9", 131072) + "." + strings.Repeat("1", 16383)
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: num, in: "-12.50", want: "-12.50"},
		{name: "integer", typ: num, in: "100000000000000000000", want: "100000000000000000000"},
		{name: "zero", typ: num, in: "0", want: "0"},
		{name: "small fraction", typ: num, in: "0.000001", want: "0.000001"},
		{name: "longest", typ: num, in: long, want: long},
		{name: "NaN", typ: num, in: "NaN", want: "NaN"},
		{name: "Infinity", typ: num, in: "Infinity", want: "Infinity"},
		{name: "-Infinity", typ: num, in: "-Infinity", want: "-Infinity"},
		{name: "empty", typ: num, in: "", wantErr: `parse numeric "": invalid syntax`},
		{name: "exponent", typ: num, in: "1e5", errIs: strconv.ErrSyntax},
		{name: "plus sign", typ: num, in: "+1", errIs: strconv.ErrSyntax},
		{name: "sign only", typ: num, in: "-", errIs: strconv.ErrSyntax},
		{name: "trailing point", typ: num, in: "1.", errIs: strconv.ErrSyntax},
		{name: "leading point", typ: num, in: ".5", errIs: strconv.ErrSyntax},
		{name: "two points", typ: num, in: "1.2.3", errIs: strconv.ErrSyntax},
		{name: "lower-case nan", typ: num, in: "nan", errIs: strconv.ErrSyntax},
		{name: "-NaN", typ: num, in: "-NaN", errIs: strconv.ErrSyntax},
		{name: "space", typ: num, in: "1 ", errIs: strconv.ErrSyntax},
		{name: "long error is cut", typ: num, in: strings.Repeat("1", 100) + "x", wantErr: `parse numeric "` + strings.Repeat("1", maxQuoted) + `"...: invalid syntax`},
	})
}

func TestDecodeTextString(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "text typical", typ: Type{Kind: Text}, in: "hello, world", want: "hello, world"},
		{name: "text empty", typ: Type{Kind: Text}, in: "", want: ""},
		{name: "text 4-byte unicode", typ: Type{Kind: Text}, in: "𝄞 music 😀", want: "𝄞 music 😀"},
		{name: "text backslashes and quotes", typ: Type{Kind: Text}, in: `a\"b{c}`, want: `a\"b{c}`},
		{name: "text NULL word", typ: Type{Kind: Text}, in: "NULL", want: "NULL"},
		{name: "json object", typ: Type{Kind: JSON}, in: `{"a": [1, 2.5, null]}`, want: `{"a": [1, 2.5, null]}`},
		{name: "json scalar", typ: Type{Kind: JSON}, in: `"x"`, want: `"x"`},
		{name: "enum", typ: Type{Kind: Enum, Name: "public.mood"}, in: "happy", want: "happy"},
		{name: "enum unicode", typ: Type{Kind: Enum}, in: "😀", want: "😀"},
	})
}

func TestDecodeTextBool(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "true", typ: Type{Kind: Bool}, in: "t", want: true},
		{name: "false", typ: Type{Kind: Bool}, in: "f", want: false},
		{name: "true as text", typ: Type{Kind: Bool}, in: "true", want: true},
		{name: "false as text", typ: Type{Kind: Bool}, in: "false", want: false},
		{name: "yes", typ: Type{Kind: Bool}, in: "yes", wantErr: `parse bool "yes": invalid syntax`},
		{name: "one", typ: Type{Kind: Bool}, in: "1", errIs: strconv.ErrSyntax},
		{name: "upper", typ: Type{Kind: Bool}, in: "T", errIs: strconv.ErrSyntax},
		{name: "empty", typ: Type{Kind: Bool}, in: "", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextBytes(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: Type{Kind: Bytes}, in: `\x0aff`, want: []byte{0x0a, 0xff}},
		{name: "empty", typ: Type{Kind: Bytes}, in: `\x`, want: []byte{}},
		{name: "upper-case digits", typ: Type{Kind: Bytes}, in: `\xDEADbeef`, want: []byte{0xde, 0xad, 0xbe, 0xef}},
		{name: "all bytes", typ: Type{Kind: Bytes}, in: `\x00017f80fe`, want: []byte{0, 1, 0x7f, 0x80, 0xfe}},
		{name: "escape format", typ: Type{Kind: Bytes}, in: `abc\000`, wantErr: "escape format is not supported"},
		{name: "escape format empty", typ: Type{Kind: Bytes}, in: ``, wantErr: "escape format is not supported"},
		{name: "escape format octal", typ: Type{Kind: Bytes}, in: `\001`, wantErr: "escape format is not supported"},
		{name: "odd digits", typ: Type{Kind: Bytes}, in: `\x0af`, wantErr: `parse bytes "\\x0af": odd number of hex digits`},
		{name: "bad digit", typ: Type{Kind: Bytes}, in: `\x0g`, wantErr: "invalid hex digit"},
	})
}

func TestDecodeTextUUID(t *testing.T) {
	t.Parallel()
	const id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: Type{Kind: UUID}, in: id, want: id},
		{name: "upper case", typ: Type{Kind: UUID}, in: strings.ToUpper(id), want: id},
		{name: "nil uuid", typ: Type{Kind: UUID}, in: "00000000-0000-0000-0000-000000000000", want: "00000000-0000-0000-0000-000000000000"},
		{name: "max uuid", typ: Type{Kind: UUID}, in: "ffffffff-ffff-ffff-ffff-ffffffffffff", want: "ffffffff-ffff-ffff-ffff-ffffffffffff"},
		{name: "no hyphens", typ: Type{Kind: UUID}, in: "a0eebc999c0b4ef8bb6d6bb9bd380a11", wantErr: "parse uuid", errIs: strconv.ErrSyntax},
		{name: "braces", typ: Type{Kind: UUID}, in: "{" + id + "}", errIs: strconv.ErrSyntax},
		{name: "misplaced hyphen", typ: Type{Kind: UUID}, in: "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11", errIs: strconv.ErrSyntax},
		{name: "bad digit", typ: Type{Kind: UUID}, in: "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", errIs: strconv.ErrSyntax},
		{name: "empty", typ: Type{Kind: UUID}, in: "", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextUnsupported(t *testing.T) {
	t.Parallel()
	runDecodeCases(t, []decodeCase{
		{name: "unsupported", typ: Type{Kind: Unsupported, Name: "point"}, in: "(1,2)", wantErr: `decode text: kind unsupported is not supported (type "point")`},
		{name: "unknown kind", typ: Type{Kind: Kind(200)}, in: "1", wantErr: "kind kind(200) is not supported"},
	})
	t.Run("nil type", func(t *testing.T) {
		t.Parallel()
		if got, err := DecodeText(nil, []byte("1")); err == nil {
			t.Fatalf("DecodeText(nil, \"1\") = %#v, want error", got)
		}
	})
}

// FuzzDecodeFloat checks that every float64 and float32, printed the way
// float8out and float4out print them with extra_float_digits > 0 (shortest
// exact), decodes to itself, and that arbitrary text decodes to what
// strconv.ParseFloat reads whenever DecodeText accepts it.
func FuzzDecodeFloat(f *testing.F) {
	f.Add(uint64(0), "1.5")
	f.Add(math.Float64bits(math.Inf(-1)), "-Infinity")
	f.Add(math.Float64bits(math.NaN()), "NaN")
	f.Add(math.Float64bits(math.SmallestNonzeroFloat64), "1e-05")
	f.Fuzz(func(t *testing.T, bits uint64, s string) {
		x := math.Float64frombits(bits)
		for _, c := range []struct {
			kind Kind
			text string
			want any
		}{
			{Float64, pgFloat(x, 64), x},
			{Float32, pgFloat(float64(math.Float32frombits(uint32(bits))), 32), math.Float32frombits(uint32(bits))},
		} {
			got, err := DecodeText(&Type{Kind: c.kind}, []byte(c.text))
			if err != nil || !sameValue(got, c.want) {
				t.Fatalf("DecodeText(%s, %q) = %v, %v, want %v", c.kind, c.text, got, err, c.want)
			}
		}
		got, err := DecodeText(&Type{Kind: Float64}, []byte(s))
		if err != nil {
			return
		}
		want, werr := strconv.ParseFloat(s, 64)
		if werr != nil || !sameValue(got, want) {
			t.Fatalf("DecodeText(float64, %q) = %v; strconv.ParseFloat = %v, %v", s, got, want, werr)
		}
	})
}

// pgFloat prints v as float8out (bitSize 64) or float4out (32) does.
func pgFloat(v float64, bitSize int) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "Infinity"
	case math.IsInf(v, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(v, 'g', -1, bitSize)
}

// TestEveryKindIsDescribed: every Kind has a name and, but for
// Unsupported, a text decoding; a kind added without its entry in kinds
// fails here.
func TestEveryKindIsDescribed(t *testing.T) {
	t.Parallel()
	for k := Unsupported; k < kindEnd; k++ {
		d := kindOf(k)
		if d == nil || d.name == "" {
			t.Errorf("kind %d has no entry in kinds", k)
			continue
		}
		typ := &Type{Kind: k}
		if k == Array {
			typ.Elem = &Type{Kind: Int32}
		}
		_, err := DecodeText(typ, []byte("x"))
		var unsupported *unsupportedError
		if got := errors.As(err, &unsupported); got != (k == Unsupported) {
			t.Errorf("DecodeText of kind %s: got %v, want an unsupported-kind error only for unsupported", k, err)
		}
	}
}
