package mapping

import (
	"fmt"
	"time"

	"github.com/hamba/avro/v2"
)

// MaxDecodedSize bounds a single string or bytes value a [Codec] decodes, so
// that a corrupt length prefix cannot make it allocate without bound.
const MaxDecodedSize = 64 << 20

// Codec parses schemas and decodes Avro records with its own frozen
// avro.API: it never touches avro.DefaultConfig or hamba's global schema
// cache. A Codec is safe for concurrent use.
type Codec struct {
	api avro.API
}

// NewCodec returns a Codec.
func NewCodec() *Codec {
	return &Codec{api: avro.Config{MaxByteSliceSize: MaxDecodedSize}.Freeze()}
}

// Parse parses a schema's JSON text, such as one fetched from the registry.
// Each text is parsed on its own (with a fresh schema cache): two versions of
// one record name never see each other.
func (c *Codec) Parse(schema string) (avro.Schema, error) {
	s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	return s, nil
}

// Decode decodes payload, the Avro binary encoding of a record written with
// schema (no header: see [SplitConfluent]), into a map from field name to
// value. Values have the Go types of the [relation.Kind] documentation, so
// decoding what [Entity.AppendValue] wrote gives back the row's values:
//
//	null                          nil
//	int / long                    int32 / int64
//	float / double                float32 / float64
//	string (uuid too)             string
//	bytes                         []byte
//	decimal(p,s), bytes or fixed  string as PostgreSQL prints numeric(p,s): "-12.50"
//	date                          time.Time, UTC midnight
//	time-micros, time-millis      time.Duration
//	timestamp-micros/millis       time.Time in UTC
//	local-timestamp-micros/millis time.Time in UTC holding the wall clock
//	["null", T] and other unions  nil or the branch's value, unwrapped
//	array                         []any
//	record, map                   map[string]any
//	fixed                         [size]byte
//	enum                          string (the symbol)
//
// Field names are Avro names; the PostgreSQL column name of a sanitised
// field is its [PropColumn] property. Trailing bytes after the record are an
// error. schema must be the schema the payload was written with (the one its
// registry id names): Decode does not resolve it against a reader schema.
func (c *Codec) Decode(schema avro.Schema, payload []byte) (map[string]any, error) {
	if ref, ok := schema.(*avro.RefSchema); ok {
		schema = ref.Schema()
	}
	rec, ok := schema.(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("decode: schema is a %s, want a record", schema.Type())
	}
	r := avro.NewReader(nil, 0, avro.WithReaderConfig(c.api)).Reset(payload)
	m := readRecord(r, rec)
	if r.Error != nil {
		return nil, fmt.Errorf("decode %s: %w", rec.FullName(), r.Error)
	}
	if r.Peek(); r.Error == nil {
		return nil, fmt.Errorf("decode %s: trailing bytes after the record", rec.FullName())
	}
	return m, nil
}

func readRecord(r *avro.Reader, s *avro.RecordSchema) map[string]any {
	fields := s.Fields()
	m := make(map[string]any, len(fields))
	for _, f := range fields {
		m[f.Name()] = readValue(r, f.Type())
		if r.Error != nil {
			return nil
		}
	}
	return m
}

// readValue reads one value of schema s, as documented on [Codec.Decode].
func readValue(r *avro.Reader, s avro.Schema) any {
	var logical avro.LogicalType
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		logical = ls.Logical().Type()
	}
	switch s.Type() {
	case avro.Null:
		return nil
	case avro.Boolean:
		return r.ReadBool()
	case avro.Int:
		v := r.ReadInt()
		switch logical {
		case avro.Date:
			return time.Unix(int64(v)*secondsPerDay, 0).UTC()
		case avro.TimeMillis:
			return time.Duration(v) * time.Millisecond
		}
		return v
	case avro.Long:
		v := r.ReadLong()
		switch logical {
		case avro.TimeMicros:
			return time.Duration(v) * time.Microsecond
		case avro.TimestampMicros, avro.LocalTimestampMicros:
			return time.UnixMicro(v).UTC()
		case avro.TimestampMillis, avro.LocalTimestampMillis:
			return time.UnixMilli(v).UTC()
		}
		return v
	case avro.Float:
		return r.ReadFloat()
	case avro.Double:
		return r.ReadDouble()
	case avro.String:
		return r.ReadString()
	case avro.Bytes:
		b := r.ReadBytes()
		if r.Error != nil {
			return nil // b may be a zeroed buffer of the declared length
		}
		if logical == avro.Decimal {
			return readDecimal(r, b, s.(avro.LogicalTypeSchema).Logical().(*avro.DecimalLogicalSchema))
		}
		return b
	case avro.Union:
		types := s.(*avro.UnionSchema).Types()
		i := r.ReadLong()
		if i < 0 || i >= int64(len(types)) {
			r.ReportError("decode union", fmt.Sprintf("branch %d of %d", i, len(types)))
			return nil
		}
		return readValue(r, types[i])
	case avro.Array:
		items := s.(*avro.ArraySchema).Items()
		xs := []any{}
		for r.Error == nil {
			n, _ := r.ReadBlockHeader()
			if n == 0 {
				break
			}
			if n < 0 || n > MaxDecodedSize-int64(len(xs)) { // items of type null take no bytes
				r.ReportError("decode array", "too many items")
				break
			}
			for ; n > 0 && r.Error == nil; n-- {
				xs = append(xs, readValue(r, items))
			}
		}
		return xs
	case avro.Map:
		values := s.(*avro.MapSchema).Values()
		m := map[string]any{}
		for r.Error == nil {
			n, _ := r.ReadBlockHeader()
			if n == 0 {
				break
			}
			if n < 0 || n > MaxDecodedSize-int64(len(m)) {
				r.ReportError("decode map", "too many entries")
				break
			}
			for ; n > 0 && r.Error == nil; n-- {
				k := r.ReadString()
				m[k] = readValue(r, values)
			}
		}
		return m
	case avro.Record:
		return readRecord(r, s.(*avro.RecordSchema))
	case avro.Ref:
		return readValue(r, s.(*avro.RefSchema).Schema())
	case avro.Fixed:
		if logical == avro.Decimal {
			b := make([]byte, s.(*avro.FixedSchema).Size())
			if r.Read(b); r.Error != nil {
				return nil
			}
			return readDecimal(r, b, s.(*avro.FixedSchema).Logical().(*avro.DecimalLogicalSchema))
		}
		return r.ReadNext(s)
	default: // enum
		return r.ReadNext(s)
	}
}

// readDecimal renders decimal bytes as text, refusing more bytes than the
// precision needs (10^p < 2^(3.33p), plus a sign bit): formatting an
// unbounded integer costs quadratic time.
func readDecimal(r *avro.Reader, b []byte, d *avro.DecimalLogicalSchema) any {
	if len(b) > d.Precision()/2+2 {
		r.ReportError("decode decimal", fmt.Sprintf("%d bytes for precision %d", len(b), d.Precision()))
		return nil
	}
	return decimalText(b, d.Scale())
}
