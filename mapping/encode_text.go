package mapping

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/replicator/replicator/relation"
)

// The text path: a row given as PostgreSQL's text output, as the snapshot
// reads it, is encoded without decoding it into Go values first. Each value
// is parsed with relation's unboxed decoders and written at once, so a row
// costs no allocation (decoding into []any cost about fifteen: a boxed
// integer, time or array element each). What a text is accepted as, and the
// bytes written, are those of relation.DecodeText followed by the value
// encoder (TestTextEncodingMatchesValues).

// textEncodeFunc appends the Avro binary encoding of one non-NULL value,
// given as its PostgreSQL text, without any union index, to dst.
type textEncodeFunc func(dst, text []byte) ([]byte, error)

// The text encoders of each kind, as columnCodec pairs them with the
// kind's schema and value encoder. Each closes over its column's type.

func textInt(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeInt(&t, text)
		if err != nil {
			return dst, err
		}
		return appendLong(dst, v), nil
	}
}

func textFloat32(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeFloat(&t, text)
		if err != nil {
			return dst, err
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(v))), nil
	}
}

func textFloat64(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeFloat(&t, text)
		if err != nil {
			return dst, err
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v)), nil
	}
}

// textNumericDouble encodes an unconstrained numeric exported as a double.
func textNumericDouble(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		if err := relation.CheckNumeric(&t, text); err != nil {
			return dst, err
		}
		return encNumericDouble(dst, string(text))
	}
}

// textNumeric encodes an unconstrained numeric exported as its text.
func textNumeric(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		if err := relation.CheckNumeric(&t, text); err != nil {
			return dst, err
		}
		return appendText(dst, text), nil
	}
}

// textDecimal encodes a numeric(p,s) as an Avro decimal.
func textDecimal(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		if err := relation.CheckNumeric(&t, text); err != nil {
			return dst, err
		}
		return appendDecimal(dst, string(text), t.Precision, t.Scale)
	}
}

// textString encodes a value whose text is the value (text, json, enum).
func textString(dst, text []byte) ([]byte, error) { return appendText(dst, text), nil }

func textBool(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeBool(&t, text)
		if err != nil {
			return dst, err
		}
		if v {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	}
}

func textUUID(t relation.Type) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeUUID(&t, text)
		if err != nil {
			return dst, err
		}
		return appendText(dst, v[:]), nil
	}
}

// textDateTime encodes a date, timestamp or timestamptz with appendTime,
// the kind's value encoder on a time.Time.
func textDateTime(t relation.Type, appendTime func([]byte, time.Time) ([]byte, error)) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeDateTime(&t, text)
		if err != nil {
			return dst, err
		}
		return appendTime(dst, v)
	}
}

// textViaValue decodes the text into its Go value and encodes that with
// enc: for kinds rarely met in bulk (bytea, time), where a boxed value per
// row is not worth an unboxed path.
func textViaValue(t relation.Type, enc encodeFunc) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		v, err := relation.DecodeText(&t, text)
		if err != nil {
			return dst, err
		}
		return enc(dst, v)
	}
}

// arrayTextEncoder encodes an array as encArray does, one block of
// ["null", T] items and the end marker. The item count goes before the
// items but is known only after them: they are written first and the
// count is inserted in front.
func arrayTextEncoder(t relation.Type, elem textEncodeFunc) textEncodeFunc {
	return func(dst, text []byte) ([]byte, error) {
		start, i := len(dst), 0
		n, err := relation.ScanArray(&t, text, func(el []byte, null bool) error {
			i++
			if null {
				dst = append(dst, 0) // union index 0: null
				return nil
			}
			dst = append(dst, 2) // union index 1
			var err error
			if dst, err = elem(dst, el); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			return nil
		})
		if err != nil {
			return dst[:start], err
		}
		if n > 0 {
			var count [binary.MaxVarintLen64]byte
			dst = slices.Insert(dst, start, appendLong(count[:0], int64(n))...)
		}
		return append(dst, 0), nil
	}
}

// appendText appends text as an Avro string or bytes: its length, then
// the bytes.
func appendText(dst, text []byte) []byte {
	dst = appendLong(dst, int64(len(text)))
	return append(dst, text...)
}

// ColumnError is a column value an entity could not encode: which column
// (its position in the row and its PostgreSQL name) and why. The reason
// never quotes more of the value than relation's parse errors do.
type ColumnError struct {
	Index  int
	Column string
	Err    error
}

func (e *ColumnError) Error() string { return fmt.Sprintf("column %q: %v", e.Column, e.Err) }

func (e *ColumnError) Unwrap() error { return e.Err }
