package mapping

import (
	"testing"

	"github.com/replicator/replicator/relation"
)

func TestMarkUnused(t *testing.T) {
	t.Parallel()
	table := &relation.Table{Schema: "public", Name: "t", PrimaryKey: []string{"id"}, Columns: []relation.Column{
		{Name: "id", Type: tInt8},
		{Name: "shape", Type: tGeometry, Nullable: true},
		{Name: "name", Type: tText, Nullable: true},
		{Name: "tenant", Type: tInt4},
		{Name: "hidden", Type: tTimestamp, Nullable: true, Unused: false},
	}}
	tests := []struct {
		name string
		spec Spec
		want []bool // Unused per column
	}{
		{"columns: excludes a geometry and a timestamp", Spec{Name: "t", Topic: "t", Columns: []string{"name"}}, []bool{false, true, false, true, true}},
		{"a configured key is read too", Spec{Name: "t", Topic: "t", Key: []string{"tenant"}, Columns: []string{"name"}}, []bool{true, true, false, false, true}},
		{"as_string: makes the geometry readable", Spec{Name: "t", Topic: "t", AsString: []string{"shape"}}, []bool{false, false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tbl := *table
			tbl.Columns = append([]relation.Column(nil), table.Columns...)
			tbl.Columns[0].Unused = true // stale marks are cleared
			e, err := NewEntity(tt.spec, &tbl, Options{})
			if err != nil {
				t.Fatal(err)
			}
			e.MarkUnused(&tbl)
			for i, c := range tbl.Columns {
				if c.Unused != tt.want[i] {
					t.Errorf("column %q: got Unused %v, want %v", c.Name, c.Unused, tt.want[i])
				}
			}
		})
	}
}
