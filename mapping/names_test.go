package mapping

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/linkedin/goavro/v2"

	"github.com/replicator/replicator/relation"
)

func TestReservedTypeNames(t *testing.T) {
	t.Parallel()
	for name := range reservedTypeNames {
		if got := avroTypeName(name); got != name+"_" {
			t.Errorf("avroTypeName(%q) = %q, want %q", name, got, name+"_")
		}
		if got := avroName(name); got != name {
			t.Errorf("avroName(%q) (field names) = %q, want it unchanged", name, got)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"Int", "Int"}, {"int_", "int_"}, {"integer", "integer"}, {"in t", "in_t"}, {"", "_"},
		// Schema keywords are valid names: a table named "error" keeps its
		// record name, or its existing topics would need an incompatible
		// new schema version.
		{"record", "record"}, {"error", "error"}, {"map", "map"}, {"enum", "enum"},
	} {
		if got := avroTypeName(tt.in); got != tt.want {
			t.Errorf("avroTypeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTableNamedAfterPrimitives builds an entity for every reserved name as
// schema, table and column: each schema parses in hamba/avro and goavro, and
// no named type or namespace part is a reserved name.
func TestTableNamedAfterPrimitives(t *testing.T) {
	t.Parallel()
	for name := range reservedTypeNames {
		table := &relation.Table{
			Schema: name, Name: name,
			Columns:    []relation.Column{col(name, tInt8, false), col("v", tText, true)},
			PrimaryKey: []string{name},
		}
		e, err := NewEntity(Spec{Name: name, Topic: "t"}, table, Options{})
		if err != nil {
			t.Fatalf("%s: NewEntity: %v", name, err)
		}
		for _, text := range []string{e.KeySchema(), e.ValueSchema()} {
			checkPortable(t, name, text)
		}
	}
}

// TestGoldenSchemasPortable: every golden schema parses in goavro as well.
func TestGoldenSchemasPortable(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.avsc"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden schemas: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkPortable(t, p, string(b))
	}
}

func checkPortable(t *testing.T, what, text string) {
	t.Helper()
	s, err := avro.Parse(text)
	if err != nil {
		t.Fatalf("%s: hamba/avro: %v", what, err)
	}
	if _, err := goavro.NewCodec(text); err != nil {
		t.Errorf("%s: goavro: %v", what, err)
	}
	rec, ok := s.(*avro.RecordSchema)
	if !ok {
		t.Fatalf("%s: not a record", what)
	}
	if reservedTypeNames[rec.Name()] {
		t.Errorf("%s: record named %q, an Avro type name", what, rec.Name())
	}
	for _, part := range strings.Split(rec.Namespace(), ".") {
		if reservedTypeNames[part] {
			t.Errorf("%s: namespace %q has the part %q, an Avro type name", what, rec.Namespace(), part)
		}
	}
}
