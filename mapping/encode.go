package mapping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/replicator/replicator/relation"
)

// The encoders below write the Avro binary encoding directly: every field of
// an entity is a primitive, a logical type over one, a ["null",T] union or an
// array of those, and writing them by hand costs no reflection, no map and no
// allocation per row. The tests check the bytes against hamba/avro's
// Marshal for every kind.

// errUnchangedTOAST is returned for a [relation.UnchangedTOAST] value: the
// value exists in PostgreSQL but was not sent, and a record must carry the
// whole state of the row (never a placeholder).
var errUnchangedTOAST = errors.New("unchanged TOAST value: the source must resolve it to the stored value before encoding")

// wrongType reports a Go value that does not match the column's kind.
func wrongType(v any, want string) error {
	if _, ok := v.(relation.UnchangedTOAST); ok {
		return errUnchangedTOAST
	}
	return fmt.Errorf("got Go type %T, want %s", v, want)
}

// appendLong appends v as an Avro int or long: zig-zag, then a base-128
// varint.
func appendLong(dst []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for u >= 0x80 {
		dst = append(dst, byte(u)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}

func encInt32(dst []byte, v any) ([]byte, error) {
	x, ok := v.(int32)
	if !ok {
		return dst, wrongType(v, "int32")
	}
	return appendLong(dst, int64(x)), nil
}

func encInt64(dst []byte, v any) ([]byte, error) {
	x, ok := v.(int64)
	if !ok {
		return dst, wrongType(v, "int64")
	}
	return appendLong(dst, x), nil
}

func encFloat32(dst []byte, v any) ([]byte, error) {
	x, ok := v.(float32)
	if !ok {
		return dst, wrongType(v, "float32")
	}
	return binary.LittleEndian.AppendUint32(dst, math.Float32bits(x)), nil
}

func encFloat64(dst []byte, v any) ([]byte, error) {
	x, ok := v.(float64)
	if !ok {
		return dst, wrongType(v, "float64")
	}
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(x)), nil
}

// encNumericDouble encodes an unconstrained numeric's text as a double.
func encNumericDouble(dst []byte, v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return dst, wrongType(v, "string")
	}
	// ParseFloat reads PostgreSQL's "NaN", "Infinity" and "-Infinity" too.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if !errors.Is(err, strconv.ErrRange) {
			return dst, errors.New("numeric text is not a number")
		}
		if math.IsInf(f, 0) {
			return dst, errors.New("numeric value is beyond the range of a double: export unconstrained numeric as string")
		}
		// An underflow rounds to zero or a subnormal: that is the
		// double's nearest value, as for any other rounding.
	}
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
}

func encString(dst []byte, v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return dst, wrongType(v, "string")
	}
	dst = appendLong(dst, int64(len(s)))
	return append(dst, s...), nil
}

func encBytes(dst []byte, v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return dst, wrongType(v, "[]byte")
	}
	dst = appendLong(dst, int64(len(b)))
	return append(dst, b...), nil
}

func encBool(dst []byte, v any) ([]byte, error) {
	b, ok := v.(bool)
	if !ok {
		return dst, wrongType(v, "bool")
	}
	if b {
		return append(dst, 1), nil
	}
	return append(dst, 0), nil
}

const secondsPerDay = 24 * 60 * 60

// encDate encodes the calendar date of a time.Time (UTC midnight by the
// relation contract; otherwise the date of its wall clock in its location)
// as days since 1970-01-01.
func encDate(dst []byte, v any) ([]byte, error) {
	t, ok := v.(time.Time)
	if !ok {
		return dst, wrongType(v, "time.Time")
	}
	return appendDate(dst, t)
}

func appendDate(dst []byte, t time.Time) ([]byte, error) {
	_, offset := t.Zone()
	sec := t.Unix() + int64(offset)
	days := sec / secondsPerDay
	if sec%secondsPerDay < 0 {
		days-- // floor, not truncation, before 1970
	}
	if days < math.MinInt32 || days > math.MaxInt32 {
		return dst, errors.New("date out of the range of an Avro date")
	}
	return appendLong(dst, days), nil
}

// encTime encodes a time of day as microseconds since midnight.
func encTime(dst []byte, v any) ([]byte, error) {
	d, ok := v.(time.Duration)
	if !ok {
		return dst, wrongType(v, "time.Duration")
	}
	return appendLong(dst, d.Microseconds()), nil
}

// The seconds range whose microseconds fit an int64 (about ±292,000 years;
// PostgreSQL's last 30,000 years of timestamps do not).
const (
	maxMicroSeconds = math.MaxInt64/1_000_000 - 1
	minMicroSeconds = math.MinInt64/1_000_000 + 1
)

// errTimestampRange is PostgreSQL's last 30,000 years of timestamps (up to
// 294276 AD), which PostgreSQL holds and an Avro long of microseconds
// since 1970 does not.
var errTimestampRange = errors.New("timestamp out of the range of Avro microseconds (years 290308 BC to 294247 AD): list the column in as_string: to export PostgreSQL's text")

// appendMicros appends the Unix time sec (+ nsec) in microseconds,
// rounding toward the past.
func appendMicros(dst []byte, sec int64, nsec int) ([]byte, error) {
	if sec < minMicroSeconds || sec > maxMicroSeconds {
		return dst, errTimestampRange
	}
	return appendLong(dst, sec*1_000_000+int64(nsec/1000)), nil
}

// encTimestamp encodes an instant as microseconds since the Unix epoch.
func encTimestamp(dst []byte, v any) ([]byte, error) {
	t, ok := v.(time.Time)
	if !ok {
		return dst, wrongType(v, "time.Time")
	}
	return appendTimestamp(dst, t)
}

func appendTimestamp(dst []byte, t time.Time) ([]byte, error) {
	return appendMicros(dst, t.Unix(), t.Nanosecond())
}

// encLocalTimestamp encodes the wall clock of a timestamp without time zone
// (a time.Time in UTC by the relation contract; otherwise its wall clock in
// its own location) as microseconds since 1970-01-01 00:00, with no zone.
func encLocalTimestamp(dst []byte, v any) ([]byte, error) {
	t, ok := v.(time.Time)
	if !ok {
		return dst, wrongType(v, "time.Time")
	}
	return appendLocalTimestamp(dst, t)
}

func appendLocalTimestamp(dst []byte, t time.Time) ([]byte, error) {
	_, offset := t.Zone()
	return appendMicros(dst, t.Unix()+int64(offset), t.Nanosecond())
}

// encArray encodes a one-dimensional array as one Avro block of
// ["null", T] items (a positive count, no byte size) and the end marker.
func encArray(elem encodeFunc) encodeFunc {
	return func(dst []byte, v any) ([]byte, error) {
		xs, ok := v.([]any)
		if !ok {
			return dst, wrongType(v, "[]any")
		}
		if len(xs) > 0 {
			dst = appendLong(dst, int64(len(xs)))
			for i, x := range xs {
				if x == nil {
					dst = append(dst, 0) // union index 0: null
					continue
				}
				dst = append(dst, 2) // union index 1
				var err error
				if dst, err = elem(dst, x); err != nil {
					return dst, fmt.Errorf("element %d: %w", i+1, err)
				}
			}
		}
		return append(dst, 0), nil
	}
}
