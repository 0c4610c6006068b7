package mapping

import (
	"slices"
	"strings"
	"testing"

	"github.com/replicator/replicator/relation"
)

// TestSpecNullableKeepsRegisteredShape: a NOT NULL column listed in
// Nullable is a nullable field of the value (never of the key), and
// NullableColumns reads the list back from the schema, with the PostgreSQL
// names of sanitised fields.
func TestSpecNullableKeepsRegisteredShape(t *testing.T) {
	t.Parallel()
	table := &relation.Table{
		Schema: "public", Name: "orders", PrimaryKey: []string{"id"},
		Columns: []relation.Column{
			{Name: "id", Type: relation.Type{Kind: relation.Int64, OID: 20, Name: "bigint"}},
			{Name: "qty", Type: relation.Type{Kind: relation.Int32, OID: 23, Name: "integer"}},
			{Name: "Color Code", Type: relation.Type{Kind: relation.Text, OID: 25, Name: "text"}},
			{Name: "note", Type: relation.Type{Kind: relation.Text, OID: 25, Name: "text"}, Nullable: true},
		},
	}
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders", Nullable: []string{"Color Code", "id", "gone"}}, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.ValueSchema(), `"type":["null","string"],"default":null,"pg.column":"Color Code"`) {
		t.Errorf("value schema %s: want Color Code nullable", e.ValueSchema())
	}
	if strings.Contains(e.KeySchema(), "null") {
		t.Errorf("key schema %s: want id never nullable", e.KeySchema())
	}
	if _, err := e.AppendValue(nil, []any{int64(1), int32(2), nil, nil}); err != nil {
		t.Errorf("NULL in a column listed in Nullable: %v", err)
	}
	if _, err := e.AppendValue(nil, []any{int64(1), nil, "red", nil}); err == nil {
		t.Error("NULL in a NOT NULL column not listed in Nullable: got no error")
	}
	got, err := NullableColumns(e.ValueSchema())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"id", "Color Code", "note"}; !slices.Equal(got, want) {
		t.Errorf("NullableColumns: got %v, want %v", got, want)
	}
	if _, err := NullableColumns(`"string"`); err == nil {
		t.Error("NullableColumns of a non-record: got no error")
	}
}
