package sink

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"time"

	"github.com/hamba/avro/v2"
)

// kind is what a column holds, derived once from the Avro field type
// (typeOf): the one place the sink decides what an Avro type is as a
// column; dialects map a kind to a SQL type and a decoded value to a
// driver value. The direct readers (fastdecode.go, copyline.go) switch
// over Avro types too, but to read the wire encoding (which Reader call
// reads or skips a value), and they hand any type they do not read
// themselves to hamba/avro's decoder; they derive no column type.
type kind int

const (
	kindString kind = iota
	kindInt
	kindLong
	kindFloat
	kindDouble
	kindBool
	kindBytes
	kindDecimal
	kindUUID
	kindDate
	kindTime           // time-micros / time-millis
	kindTimestamp      // timestamp-micros / -millis (an instant)
	kindLocalTimestamp // local-timestamp-micros / -millis (wall clock)
	kindJSON           // arrays, maps and anything else: JSON text
)

// fieldType is a column's kind plus what the SQL type needs.
type fieldType struct {
	kind      kind
	nullable  bool
	precision int // decimal
	scale     int // decimal
	// items is the kind of an array's elements (kindJSON for an array of
	// something without a plain SQL element type, and for non-arrays).
	items kind
	array bool
}

// typeOf derives the column type of an Avro field schema.
func typeOf(s avro.Schema) fieldType {
	var t fieldType
	if u, ok := s.(*avro.UnionSchema); ok {
		var inner avro.Schema
		for _, m := range u.Types() {
			if m.Type() == avro.Null {
				t.nullable = true
				continue
			}
			if inner != nil { // a union of several non-null types: JSON
				t.kind = kindJSON
				return t
			}
			inner = m
		}
		if inner == nil {
			t.kind = kindJSON
			return t
		}
		s = inner
	}
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		switch l := ls.Logical().(type) {
		case *avro.DecimalLogicalSchema:
			t.kind, t.precision, t.scale = kindDecimal, l.Precision(), l.Scale()
			return t
		default:
			switch l.Type() {
			case avro.UUID:
				t.kind = kindUUID
			case avro.Date:
				t.kind = kindDate
			case avro.TimeMillis, avro.TimeMicros:
				t.kind = kindTime
			case avro.TimestampMillis, avro.TimestampMicros:
				t.kind = kindTimestamp
			case avro.LocalTimestampMillis, avro.LocalTimestampMicros:
				t.kind = kindLocalTimestamp
			default:
				t.kind = kindFromPrimitive(s.Type())
			}
			return t
		}
	}
	t.kind = kindFromPrimitive(s.Type())
	if a, ok := s.(*avro.ArraySchema); ok {
		t.array = true
		t.items = kindJSON
		it := typeOf(a.Items())
		switch {
		case it.array, it.kind == kindJSON:
		case it.kind == kindString && !isLogical(a.Items()):
			t.items = kindString
		case it.kind == kindInt, it.kind == kindLong, it.kind == kindFloat, it.kind == kindDouble, it.kind == kindBool:
			t.items = it.kind
		}
	}
	return t
}

// isLogical reports whether s (or its non-null union branch) carries a
// logical type.
func isLogical(s avro.Schema) bool {
	if u, ok := s.(*avro.UnionSchema); ok {
		for _, m := range u.Types() {
			if m.Type() != avro.Null {
				s = m
			}
		}
	}
	ls, ok := s.(avro.LogicalTypeSchema)
	return ok && ls.Logical() != nil
}

// typedArray converts a decoded array of plain elements into a slice of
// pointers (nil for a null element), which pgx encodes as a PostgreSQL
// array; ok is false for elements without a plain SQL type.
func typedArray(items kind, v any) (any, bool) {
	list, isList := v.([]any)
	if !isList {
		return nil, false
	}
	// The elements point into one backing array: an allocation per
	// array, not per element.
	switch items {
	case kindString:
		out, vals := make([]*string, len(list)), make([]string, len(list))
		for i, e := range list {
			if x, ok := e.(string); ok {
				vals[i] = x
				out[i] = &vals[i]
			}
		}
		return out, true
	case kindInt, kindLong:
		out, vals := make([]*int64, len(list)), make([]int64, len(list))
		for i, e := range list {
			switch x := e.(type) {
			case int:
				vals[i] = int64(x)
			case int32:
				vals[i] = int64(x)
			case int64:
				vals[i] = x
			default:
				continue
			}
			out[i] = &vals[i]
		}
		return out, true
	case kindFloat, kindDouble:
		out, vals := make([]*float64, len(list)), make([]float64, len(list))
		for i, e := range list {
			switch x := e.(type) {
			case float32:
				vals[i] = float64(x)
			case float64:
				vals[i] = x
			default:
				continue
			}
			out[i] = &vals[i]
		}
		return out, true
	case kindBool:
		out, vals := make([]*bool, len(list)), make([]bool, len(list))
		for i, e := range list {
			if x, ok := e.(bool); ok {
				vals[i] = x
				out[i] = &vals[i]
			}
		}
		return out, true
	}
	return nil, false
}

func kindFromPrimitive(t avro.Type) kind {
	switch t {
	case avro.String, avro.Enum:
		return kindString
	case avro.Int:
		return kindInt
	case avro.Long:
		return kindLong
	case avro.Float:
		return kindFloat
	case avro.Double:
		return kindDouble
	case avro.Boolean:
		return kindBool
	case avro.Bytes, avro.Fixed:
		return kindBytes
	}
	return kindJSON
}

// unwrapUnions undoes hamba/avro's decoding of a union's value into a map
// of one entry (branch name → value), guided by the schema, at every depth
// (a union inside an array, a map or a record), so that the rest of the
// sink sees plain values. Only a union is unwrapped: an Avro map of one
// entry is a map, not a branch.
func unwrapUnions(s avro.Schema, v any) any {
	if v == nil {
		return nil
	}
	switch s := s.(type) {
	case *avro.UnionSchema:
		// hamba/avro wraps a complex or named branch ({"map": {…}}) and
		// returns a primitive one as is: a map of one entry is a wrapper
		// only when its key names a branch.
		if m, ok := v.(map[string]any); ok && len(m) == 1 {
			for k, x := range m {
				for _, t := range s.Types() {
					if t.Type() != avro.Null && unionBranchName(t) == k {
						return unwrapUnions(t, x)
					}
				}
			}
		}
		for _, t := range s.Types() {
			if t.Type() != avro.Null {
				return unwrapUnions(t, v) // the value of the one non-null branch
			}
		}
		return v
	case *avro.ArraySchema:
		if list, ok := v.([]any); ok {
			for i, e := range list {
				list[i] = unwrapUnions(s.Items(), e)
			}
		}
	case *avro.MapSchema:
		if m, ok := v.(map[string]any); ok {
			for k, e := range m {
				m[k] = unwrapUnions(s.Values(), e)
			}
		}
	case *avro.RecordSchema:
		if m, ok := v.(map[string]any); ok {
			for _, f := range s.Fields() {
				if e, ok := m[f.Name()]; ok {
					m[f.Name()] = unwrapUnions(f.Type(), e)
				}
			}
		}
	}
	return v
}

// unionBranchName is the key hamba/avro gives a union branch of schema t
// when it decodes the union into a map: a named type's full name, else its
// type name (with a logical type: "long.timestamp-micros" and the like).
func unionBranchName(t avro.Schema) string {
	if n, ok := t.(avro.NamedSchema); ok {
		return n.FullName()
	}
	if l, ok := t.(avro.LogicalTypeSchema); ok && l.Logical() != nil {
		return string(t.Type()) + "." + string(l.Logical().Type())
	}
	return string(t.Type())
}

// valueText renders decoded values the way every store can hold them as
// text: ISO-8601 times, decimals at their scale, JSON for the rest. Dialects
// use it for what they store as text.
func valueText(t fieldType, v any) (string, error) {
	switch t.kind {
	case kindDecimal:
		r, ok := v.(*big.Rat)
		if !ok {
			return "", fmt.Errorf("decimal: got %T", v)
		}
		return decimalText(r, t.scale), nil
	case kindTimestamp:
		tm, ok := v.(time.Time)
		if !ok {
			return "", fmt.Errorf("timestamp: got %T", v)
		}
		return timestampText(tm), nil
	case kindLocalTimestamp:
		tm, ok := v.(time.Time)
		if !ok {
			return "", fmt.Errorf("local timestamp: got %T", v)
		}
		return tm.UTC().Format("2006-01-02T15:04:05.000000"), nil
	case kindDate:
		tm, ok := v.(time.Time)
		if !ok {
			return "", fmt.Errorf("date: got %T", v)
		}
		return tm.UTC().Format("2006-01-02"), nil
	case kindTime:
		d, ok := v.(time.Duration)
		if !ok {
			return "", fmt.Errorf("time: got %T", v)
		}
		us := d.Microseconds()
		return fmt.Sprintf("%02d:%02d:%02d.%06d", us/3_600_000_000, us/60_000_000%60, us/1_000_000%60, us%1_000_000), nil
	case kindJSON:
		b, err := json.Marshal(jsonSafe(v))
		return string(b), err
	}
	return fmt.Sprint(v), nil
}

// timestampLayout is how an instant is stored as text.
const timestampLayout = "2006-01-02T15:04:05.000000Z"

// timestampText is tm.UTC().Format(timestampLayout), written by hand for
// the years Format prints with four digits: Format's general layout
// interpreter was a tenth of the value conversion of a rebuild.
func timestampText(tm time.Time) string {
	tm = tm.UTC()
	if y := tm.Year(); y < 0 || y > 9999 {
		return tm.Format(timestampLayout)
	}
	var b [len(timestampLayout)]byte
	putDateTime(b[:], tm, 'T')
	putDigits(b[20:26], tm.Nanosecond()/1000) // truncated, as Format does
	b[26] = 'Z'
	return string(b[:])
}

// putDateTime writes t's date and time of day to the second, of a year
// from 0 to 9999, as "2006-01-02" sep "15:04:05." into b[:20]: the digits
// both hand-written time texts share (timestampText, appendTimeText).
func putDateTime(b []byte, t time.Time, sep byte) {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	putDigits(b[0:4], y)
	b[4] = '-'
	putDigits(b[5:7], int(mo))
	b[7] = '-'
	putDigits(b[8:10], d)
	b[10] = sep
	putDigits(b[11:13], h)
	b[13] = ':'
	putDigits(b[14:16], mi)
	b[16] = ':'
	putDigits(b[17:19], s)
	b[19] = '.'
}

// putDigits writes v, at least 0, as len(b) decimal digits, zero-padded
// (its low digits when longer).
func putDigits(b []byte, v int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// decimalText is r.FloatString(scale) without big-number arithmetic when
// r's numerator and denominator fit in 64 bits (the usual decimal column):
// FloatString's divisions were a tenth of a rebuild's CPU.
func decimalText(r *big.Rat, scale int) string {
	num, den := r.Num(), r.Denom()
	if scale > 19 || !num.IsInt64() || !den.IsUint64() || num.Int64() == math.MinInt64 || den.Uint64() == 0 {
		return r.FloatString(scale)
	}
	n, d := num.Int64(), den.Uint64()
	neg := n < 0
	if neg {
		n = -n
	}
	if d == 1 { // FloatString prints an integer as is, with zeros
		var b [48]byte
		out := strconv.AppendInt(b[:0], num.Int64(), 10)
		if scale > 0 {
			out = append(out, '.')
			for range scale {
				out = append(out, '0')
			}
		}
		return string(out)
	}
	p := uint64(1)
	for range scale {
		p *= 10
	}
	q, rem := uint64(n)/d, uint64(n)%d
	hi, lo := bits.Mul64(rem, p)
	frac, rem2 := bits.Div64(hi, lo, d) // hi < d: rem < d
	// FloatString rounds half away from zero: up when 2·rem2 ≥ d.
	if sum, carry := bits.Add64(rem2, rem2, 0); carry != 0 || sum >= d {
		frac++
		if frac >= p {
			q++
			frac -= p
		}
	}
	var b [64]byte
	out := b[:0]
	if neg {
		out = append(out, '-')
	}
	out = strconv.AppendUint(out, q, 10)
	if scale > 0 {
		out = append(out, '.')
		var fb [20]byte
		fs := strconv.AppendUint(fb[:0], frac, 10)
		for i := scale - len(fs); i > 0; i-- {
			out = append(out, '0')
		}
		out = append(out, fs...)
	}
	return string(out)
}

// jsonSafe turns decoded Avro values into values encoding/json renders
// without loss: bytes as base64, decimals as strings, times as ISO-8601,
// non-finite floats as strings.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonSafe(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonSafe(e)
		}
		return out
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case *big.Rat:
		return x.RatString()
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return x.Microseconds()
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return strconv.FormatFloat(float64(x), 'g', -1, 32)
		}
	}
	return v
}
