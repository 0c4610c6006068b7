package mapping

import (
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/relation"
)

// encodeFunc appends the Avro binary encoding of one non-NULL value, without
// any union index, to dst. Its errors say what was wrong with the value, never
// what the value was (row values stay out of logs).
type encodeFunc func(dst []byte, v any) ([]byte, error)

// Problems columnType reports; the caller adds the entity, column and fix.
var (
	errUnsupportedType = errors.New("which replicator cannot map to Avro")
	errNestedArray     = errors.New("an array of arrays, which replicator cannot map to Avro")
	errNoElemType      = errors.New("an array without an element type")
	errDecimalScale    = errors.New("with a scale outside 0..precision, which an Avro decimal cannot represent")
)

// columnType returns the Avro schema of a non-NULL value of type t (the
// nullable union is added by the caller) and the function that encodes it.
func columnType(t relation.Type, opts Options) (avro.Schema, encodeFunc, error) {
	switch t.Kind {
	case relation.Int16, relation.Int32:
		return avro.NewPrimitiveSchema(avro.Int, nil), encInt32, nil
	case relation.Int64:
		return avro.NewPrimitiveSchema(avro.Long, nil), encInt64, nil
	case relation.Float32:
		return avro.NewPrimitiveSchema(avro.Float, nil), encFloat32, nil
	case relation.Float64:
		return avro.NewPrimitiveSchema(avro.Double, nil), encFloat64, nil
	case relation.Numeric:
		if t.Precision == 0 && t.Scale == 0 {
			if opts.UnconstrainedNumeric == NumericAsDouble {
				return avro.NewPrimitiveSchema(avro.Double, nil), encNumericDouble, nil
			}
			return avro.NewPrimitiveSchema(avro.String, nil), encString, nil
		}
		// PostgreSQL 15 accepts numeric(2,-3) and numeric(2,5); the Avro
		// specification requires 0 <= scale <= precision.
		if t.Precision <= 0 || t.Scale < 0 || t.Scale > t.Precision {
			return nil, nil, errDecimalScale
		}
		return avro.NewPrimitiveSchema(avro.Bytes, avro.NewDecimalLogicalSchema(t.Precision, t.Scale)),
			encDecimal(t.Precision, t.Scale), nil
	case relation.Text, relation.JSON, relation.Enum:
		return avro.NewPrimitiveSchema(avro.String, nil), encString, nil
	case relation.Bool:
		return avro.NewPrimitiveSchema(avro.Boolean, nil), encBool, nil
	case relation.Bytes:
		return avro.NewPrimitiveSchema(avro.Bytes, nil), encBytes, nil
	case relation.UUID:
		return avro.NewPrimitiveSchema(avro.String, avro.NewPrimitiveLogicalSchema(avro.UUID)), encString, nil
	case relation.Date:
		return avro.NewPrimitiveSchema(avro.Int, avro.NewPrimitiveLogicalSchema(avro.Date)), encDate, nil
	case relation.Time:
		return avro.NewPrimitiveSchema(avro.Long, avro.NewPrimitiveLogicalSchema(avro.TimeMicros)), encTime, nil
	case relation.Timestamp:
		return avro.NewPrimitiveSchema(avro.Long, avro.NewPrimitiveLogicalSchema(avro.LocalTimestampMicros)), encLocalTimestamp, nil
	case relation.TimestampTZ:
		return avro.NewPrimitiveSchema(avro.Long, avro.NewPrimitiveLogicalSchema(avro.TimestampMicros)), encTimestamp, nil
	case relation.Array:
		if t.Elem == nil {
			return nil, nil, errNoElemType
		}
		if t.Elem.Kind == relation.Array {
			return nil, nil, errNestedArray
		}
		items, enc, err := columnType(*t.Elem, opts)
		switch {
		case errors.Is(err, errUnsupportedType):
			return nil, nil, fmt.Errorf("whose element type %s replicator cannot map to Avro", typeName(*t.Elem))
		case errors.Is(err, errDecimalScale):
			return nil, nil, fmt.Errorf("whose element type %s is a numeric %w", typeName(*t.Elem), err)
		case err != nil:
			return nil, nil, fmt.Errorf("whose element type %s is %w", typeName(*t.Elem), err)
		}
		u, err := nullable(items)
		if err != nil {
			return nil, nil, err
		}
		return avro.NewArraySchema(u), encArray(enc), nil
	default:
		return nil, nil, errUnsupportedType
	}
}

// nullable returns the union ["null", s], null first so that "default": null
// is valid.
func nullable(s avro.Schema) (*avro.UnionSchema, error) {
	return avro.NewUnionSchema([]avro.Schema{avro.NewNullSchema(), s})
}

// typeName is the SQL name of t for messages.
func typeName(t relation.Type) string {
	switch {
	case t.Name != "":
		return t.Name
	case t.Kind == relation.Array && t.Elem != nil:
		return typeName(*t.Elem) + "[]"
	default:
		return t.Kind.String()
	}
}
