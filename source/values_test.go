package source

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

func valuesTable() *relation.Table {
	return &relation.Table{Schema: "Sales", Name: "Orders", PrimaryKey: []string{"Région", "id"}, Columns: []relation.Column{
		{Name: "Région", Type: relation.Type{Kind: relation.Text, Name: "text"}},
		{Name: "id", Type: relation.Type{Kind: relation.Int32, Name: "integer"}},
		{Name: "valid_until", Type: relation.Type{Kind: relation.Timestamp, Name: "timestamp without time zone"}},
		{Name: "shape", Type: relation.Type{Kind: relation.Unsupported, Name: "point"}, Unused: true},
		{Name: "hidden", Type: relation.Type{Kind: relation.Date, Name: "date"}, Unused: true},
		{Name: "tags", Type: relation.Type{Kind: relation.Array, Name: "integer[]", Elem: &relation.Type{Kind: relation.Int32, Name: "integer"}}},
	}}
}

func TestDecodeRowAndTuple(t *testing.T) {
	t.Parallel()
	tbl := valuesTable()
	tests := []struct {
		name    string
		raw     []string // "NULL" for NULL, "TOAST" for an unchanged TOAST value (tuples only)
		want    []any
		wantErr string
		isInf   bool
	}{
		{
			name: "unused columns are not decoded, whatever they hold",
			raw:  []string{"Île 😀", "7", "1969-12-31 23:59:59.5", "(1,2)", "infinity", "{1,NULL}"},
			want: []any{"Île 😀", int32(7), time.Date(1969, 12, 31, 23, 59, 59, 5e8, time.UTC), nil, nil, []any{int32(1), nil}},
		},
		{
			name:    "infinity names the table, key and column, and the way out",
			raw:     []string{"Île 😀", "7", "infinity", "NULL", "NULL", "NULL"},
			wantErr: `table Sales.Orders key ("Région", "id")=(Île 😀, 7) column "valid_until" (timestamp without time zone): parse timestamp "infinity": infinite date or timestamp has no time.Time value: an infinite date or timestamp has no Avro date or timestamp value; list the column in as_string: to export PostgreSQL's text ('infinity') instead, exclude it from columns:, or change the value`,
			isInf:   true,
		},
		{
			// PostgreSQL does not enforce an array column's dimensions.
			name:    "a two-dimensional value in an array column",
			raw:     []string{"a", "8", "NULL", "NULL", "NULL", "{{1,2},{3,4}}"},
			wantErr: `table Sales.Orders key ("Région", "id")=(a, 8) column "tags" (integer[]): parse array "{{1,2},{3,4}}": multi-dimensional arrays are not supported`,
		},
		{
			name:    "a key value that is not sent is shown as ?",
			raw:     []string{"NULL", "x", "NULL", "NULL", "NULL", "NULL"},
			wantErr: `table Sales.Orders key ("Région", "id")=(?, x) column "id" (integer): parse int32 "x": invalid syntax`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := make([][]byte, len(tt.raw))
			tuple := &pglogrepl.TupleData{}
			for i, s := range tt.raw {
				col := &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: []byte(s)}
				if s == "NULL" {
					col = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull}
				} else {
					raw[i] = []byte(s)
				}
				tuple.Columns = append(tuple.Columns, col)
			}
			for _, via := range []string{"snapshot row", "pgoutput tuple"} {
				var got []any
				var err error
				if via == "snapshot row" {
					got, err = decodeRow(tbl, raw)
				} else {
					got, err = decodeTuple(tbl, tuple)
				}
				if tt.wantErr != "" {
					if err == nil || err.Error() != tt.wantErr {
						t.Fatalf("%s: got %v, %v; want the error\n%s", via, got, err, tt.wantErr)
					}
					if errors.Is(err, relation.ErrInfinity) != tt.isInf {
						t.Errorf("%s: errors.Is(err, ErrInfinity) = %v, want %v", via, !tt.isInf, tt.isInf)
					}
					continue
				}
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: got %#v, %v; want %#v", via, got, err, tt.want)
				}
			}
		})
	}
}

func TestDecodeTupleUnusedTOAST(t *testing.T) {
	t.Parallel()
	tbl := valuesTable()
	tbl.Columns[2].Type = relation.Type{Kind: relation.Text, Name: "text"}
	tbl.Columns[3].Type = relation.Type{Kind: relation.Text, Name: "text"}
	col := func(typ byte, data string) *pglogrepl.TupleDataColumn {
		return &pglogrepl.TupleDataColumn{DataType: typ, Data: []byte(data)}
	}
	got, err := decodeTuple(tbl, &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		col('t', "a"), col('t', "1"), col('u', ""), col('u', ""), col('n', ""), col('n', ""),
	}})
	// An unused column never needs its value: no re-read for it.
	want := []any{"a", int32(1), relation.UnchangedTOAST{}, nil, nil, nil}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("decodeTuple: got %#v, %v; want %#v", got, err, want)
	}
}

func TestRowKey(t *testing.T) {
	t.Parallel()
	cols := []relation.Column{{Name: "id"}, {Name: "Mixed Case"}}
	long := strings.Repeat("é", 40) // 80 bytes
	tests := []struct {
		name string
		t    relation.Table
		vals []string
		want string
	}{
		{"primary key", relation.Table{Columns: cols, PrimaryKey: []string{"id"}}, []string{"5", "x"}, `("id")=(5)`},
		{"replica identity index without primary key", relation.Table{Columns: cols, Identity: []string{"Mixed Case"}}, []string{"5", "x"}, `("Mixed Case")=(x)`},
		{"no key", relation.Table{Columns: cols, IdentityFull: true}, []string{"5", "x"}, `(the table has no primary key)`},
		{"long value cut on a rune boundary", relation.Table{Columns: cols, PrimaryKey: []string{"Mixed Case"}}, []string{"5", long}, `("Mixed Case")=(` + strings.Repeat("é", 32) + `...)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := rowKey(&tt.t, func(i int) ([]byte, bool) { return []byte(tt.vals[i]), true })
			if got != tt.want {
				t.Errorf("rowKey: got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestGoneKeyChange(t *testing.T) {
	t.Parallel()
	tbl := &relation.Table{Columns: []relation.Column{{Name: "id"}, {Name: "body"}}, PrimaryKey: []string{"id"}}
	tests := []struct {
		name string
		c    Change
		want bool
	}{
		{"update without old tuple: key unchanged", Change{Op: OpUpdate, Table: tbl}, false},
		{"update with the old key: key changed", Change{Op: OpUpdate, Table: tbl, Old: []any{int32(3), nil}}, true},
		{"old tuple without the key (identity index)", Change{Op: OpUpdate, Table: tbl, Old: []any{nil, "x"}}, false},
		{"insert", Change{Op: OpInsert, Table: tbl}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := goneKeyChange(&tt.c); got != tt.want {
				t.Errorf("goneKeyChange: got %v, want %v", got, tt.want)
			}
		})
	}
}
