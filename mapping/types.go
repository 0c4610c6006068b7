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

// Problems columnCodec reports; the caller adds the entity, column and fix.
var (
	errUnsupportedType = errors.New("which replicator cannot map to Avro")
	errNestedArray     = errors.New("an array of arrays, which replicator cannot map to Avro")
	errNoElemType      = errors.New("an array without an element type")
	errDecimalScale    = errors.New("with a scale outside 0..precision, which an Avro decimal cannot represent")
)

// codec is everything mapping does with a non-NULL value of one column
// type: its Avro schema (the nullable union is added by the caller) and the
// two ways to encode it.
type codec struct {
	schema avro.Schema
	enc    encodeFunc     // from the Go value relation.DecodeText returns
	text   textEncodeFunc // from PostgreSQL's text, without decoding it (the snapshot)
}

// columnCodec is the one place mapping knows each relation kind: for a
// column of type t, its Avro schema, its value encoder and its text
// encoder together, so a new kind is one case here (TestEveryKindHasACodec
// fails until it has one). It runs when an entity is built, never per row.
func columnCodec(t relation.Type, opts Options) (codec, error) {
	prim := func(typ avro.Type, logical avro.LogicalType) avro.Schema {
		if logical == "" {
			return avro.NewPrimitiveSchema(typ, nil)
		}
		return avro.NewPrimitiveSchema(typ, avro.NewPrimitiveLogicalSchema(logical))
	}
	switch t.Kind {
	case relation.Int16, relation.Int32:
		return codec{prim(avro.Int, ""), encInt32, textInt(t)}, nil
	case relation.Int64:
		return codec{prim(avro.Long, ""), encInt64, textInt(t)}, nil
	case relation.Float32:
		return codec{prim(avro.Float, ""), encFloat32, textFloat32(t)}, nil
	case relation.Float64:
		return codec{prim(avro.Double, ""), encFloat64, textFloat64(t)}, nil
	case relation.Numeric:
		if t.Precision == 0 && t.Scale == 0 {
			if opts.UnconstrainedNumeric == NumericAsDouble {
				return codec{prim(avro.Double, ""), encNumericDouble, textNumericDouble(t)}, nil
			}
			return codec{prim(avro.String, ""), encString, textNumeric(t)}, nil
		}
		// PostgreSQL 15 accepts numeric(2,-3) and numeric(2,5); the Avro
		// specification requires 0 <= scale <= precision.
		if t.Precision <= 0 || t.Scale < 0 || t.Scale > t.Precision {
			return codec{}, errDecimalScale
		}
		return codec{avro.NewPrimitiveSchema(avro.Bytes, avro.NewDecimalLogicalSchema(t.Precision, t.Scale)),
			encDecimal(t.Precision, t.Scale), textDecimal(t)}, nil
	case relation.Text, relation.JSON, relation.Enum:
		return codec{prim(avro.String, ""), encString, textString}, nil
	case relation.Bool:
		return codec{prim(avro.Boolean, ""), encBool, textBool(t)}, nil
	case relation.Bytes:
		return codec{prim(avro.Bytes, ""), encBytes, textViaValue(t, encBytes)}, nil
	case relation.UUID:
		return codec{prim(avro.String, avro.UUID), encString, textUUID(t)}, nil
	case relation.Date:
		return codec{prim(avro.Int, avro.Date), encDate, textDateTime(t, appendDate)}, nil
	case relation.Time:
		return codec{prim(avro.Long, avro.TimeMicros), encTime, textViaValue(t, encTime)}, nil
	case relation.Timestamp:
		return codec{prim(avro.Long, avro.LocalTimestampMicros), encLocalTimestamp, textDateTime(t, appendLocalTimestamp)}, nil
	case relation.TimestampTZ:
		return codec{prim(avro.Long, avro.TimestampMicros), encTimestamp, textDateTime(t, appendTimestamp)}, nil
	case relation.Array:
		if t.Elem == nil {
			return codec{}, errNoElemType
		}
		if t.Elem.Kind == relation.Array {
			return codec{}, errNestedArray
		}
		elem, err := columnCodec(*t.Elem, opts)
		switch {
		case errors.Is(err, errUnsupportedType):
			return codec{}, fmt.Errorf("whose element type %s replicator cannot map to Avro", typeName(*t.Elem))
		case errors.Is(err, errDecimalScale):
			return codec{}, fmt.Errorf("whose element type %s is a numeric %w", typeName(*t.Elem), err)
		case err != nil:
			return codec{}, fmt.Errorf("whose element type %s is %w", typeName(*t.Elem), err)
		}
		u, err := nullable(elem.schema)
		if err != nil {
			return codec{}, err
		}
		return codec{avro.NewArraySchema(u), encArray(elem.enc), arrayTextEncoder(t, elem.text)}, nil
	default:
		return codec{}, errUnsupportedType
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
