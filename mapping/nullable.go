package mapping

import (
	"fmt"

	"github.com/hamba/avro/v2"
)

// NullableColumns returns the PostgreSQL names of the fields of a value
// schema (as registered, JSON) whose type is a union with null: what
// [Spec.Nullable] needs to keep those fields nullable in a later version.
func NullableColumns(valueSchema string) ([]string, error) {
	s, err := avro.ParseWithCache(valueSchema, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("parse value schema: %w", err)
	}
	rs, ok := s.(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("value schema is a %s, not a record", s.Type())
	}
	var cols []string
	for _, f := range rs.Fields() {
		u, ok := f.Type().(*avro.UnionSchema)
		if !ok || !u.Nullable() {
			continue
		}
		name := f.Name()
		if col, ok := f.Prop(PropColumn).(string); ok {
			name = col
		}
		cols = append(cols, name)
	}
	return cols, nil
}
