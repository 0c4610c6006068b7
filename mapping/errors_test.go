package mapping

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/relation"
)

func TestNewEntityErrors(t *testing.T) {
	t.Parallel()
	noPK := &relation.Table{Schema: "public", Name: "events", Columns: []relation.Column{
		col("id", tInt8, false), col("email", tText, true), col("geom", tGeometry, true),
	}}
	geo := &relation.Table{Schema: "gis", Name: "places", PrimaryKey: []string{"id"}, Columns: []relation.Column{
		col("id", tInt8, false),
		col("name", tText, false),
		col("shape", tGeometry, true),
		col("shapes", arrayOf(tGeometry), true),
		col("grid", relation.Type{Kind: relation.Array, Name: "integer[][]", Elem: &relation.Type{Kind: relation.Array, Name: "integer[]", Elem: &tInt4}}, true),
		col("odd", numeric(2, -3), true),
		col("odds", arrayOf(numeric(2, 5)), true),
		col("a-b", tText, true),
		col("a_b", tText, true),
		col("a.b", tText, true),
	}}
	tests := []struct {
		name  string
		spec  Spec
		table *relation.Table
		opts  Options
		want  []string // one entry per joined error; each substring must appear in that error
	}{
		{
			name: "unknown key column", table: kitchenSink(),
			spec: Spec{Name: "k", Topic: "k", Key: []string{"idd"}},
			want: []string{`entity "k" (table public.kitchen_sink): key column "idd" does not exist (columns: "id", "tenant",`},
		},
		{
			name: "unknown exported column", table: kitchenSink(),
			spec: Spec{Name: "k", Topic: "k", Columns: []string{"id", "nope"}},
			want: []string{`entity "k" (table public.kitchen_sink): column "nope" listed in columns: does not exist (columns: "id",`},
		},
		{
			name: "no primary key and no key", table: noPK,
			spec: Spec{Name: "ev", Topic: "ev", Columns: []string{"id"}},
			want: []string{`entity "ev" (table public.events): the table has no primary key: set key: to NOT NULL columns that identify a row`},
		},
		{
			name: "nullable key column", table: noPK,
			spec: Spec{Name: "ev", Topic: "ev", Key: []string{"email"}, Columns: []string{"id"}},
			want: []string{`entity "ev" (table public.events): key column "email" (text) is nullable, but keys must be NOT NULL: declare it NOT NULL or choose other key: columns`},
		},
		{
			name: "unsupported exported column", table: geo,
			spec: Spec{Name: "places", Topic: "places", Columns: []string{"id", "shape"}},
			want: []string{`entity "places" (table gis.places): column "shape" has type geometry, which replicator cannot map to Avro: exclude it from columns: or list it in as_string:`},
		},
		{
			name: "unsupported key column", table: geo,
			spec: Spec{Name: "places", Topic: "places", Key: []string{"id", "shape"}, Columns: []string{"id"}},
			want: []string{
				`key column "shape" (geometry) is nullable`,
			},
		},
		{
			name: "unsupported NOT NULL key column", table: &relation.Table{Schema: "gis", Name: "tiles", Columns: []relation.Column{col("cell", tGeometry, false)}},
			spec: Spec{Name: "tiles", Topic: "tiles", Key: []string{"cell"}, Columns: []string{}},
			want: []string{
				`entity "tiles" (table gis.tiles): key column "cell" has type geometry, which replicator cannot map to Avro: list it in as_string: or choose other key: columns`,
				`entity "tiles" (table gis.tiles): column "cell" has type geometry, which replicator cannot map to Avro: exclude it from columns: or list it in as_string:`,
			},
		},
		{
			name: "array of unsupported", table: geo,
			spec: Spec{Name: "places", Topic: "places", Columns: []string{"id", "shapes"}},
			want: []string{`column "shapes" has type geometry[], whose element type geometry replicator cannot map to Avro: exclude it from columns: or list it in as_string:`},
		},
		{
			name: "array of arrays", table: geo,
			spec: Spec{Name: "places", Topic: "places", Columns: []string{"id", "grid"}},
			want: []string{`column "grid" has type integer[][], an array of arrays, which replicator cannot map to Avro: exclude it from columns: or list it in as_string:`},
		},
		{
			name: "numeric scale outside 0..precision", table: geo,
			spec: Spec{Name: "places", Topic: "places", Columns: []string{"id", "odd", "odds"}},
			want: []string{
				`column "odd" has type numeric(2,-3), with a scale outside 0..precision, which an Avro decimal cannot represent: exclude it from columns: or list it in as_string:`,
				`column "odds" has type numeric(2,5)[], whose element type numeric(2,5) is a numeric with a scale outside 0..precision`,
			},
		},
		{
			name: "sanitised names collide", table: geo,
			spec: Spec{Name: "places", Topic: "places", Columns: []string{"a_b", "a.b", "a-b"}},
			want: []string{
				`entity "places" (table gis.places): columns "a-b" and "a_b" both become the Avro field name "a_b": exclude one of them from columns: or rename one`,
				`columns "a-b" and "a.b" both become the Avro field name "a_b"`,
			},
		},
		{
			name: "sanitised key names collide",
			table: &relation.Table{Schema: "public", Name: "t", Columns: []relation.Column{
				col("Zone ID", tInt4, false), col("Zone-ID", tInt4, false),
			}},
			spec: Spec{Name: "t", Topic: "t", Key: []string{"Zone-ID", "Zone ID"}, Columns: []string{"Zone ID"}},
			want: []string{
				`entity "t" (table public.t): key columns "Zone-ID" and "Zone ID" both become the Avro field name "Zone_ID": rename one of them`,
			},
		},
		{
			name: "as: string names a missing column", table: kitchenSink(),
			spec: Spec{Name: "k", Topic: "k", AsString: []string{"i4", "geom"}},
			want: []string{`entity "k" (table public.kitchen_sink): column "geom" listed in as_string: does not exist (columns: "id",`},
		},
		{
			name: "no name, no topic", table: kitchenSink(),
			spec: Spec{},
			want: []string{`entity "" (table public.kitchen_sink): the entity has no name`, `the entity has no topic`},
		},
		{
			name: "key outside the replica identity", table: &relation.Table{Schema: "public", Name: "users", PrimaryKey: []string{"id"}, Identity: []string{"id"},
				Columns: []relation.Column{col("id", tInt8, false), col("email", tText, false)}},
			spec: Spec{Name: "users", Topic: "users", Key: []string{"email"}},
			want: []string{`entity "users" (table public.users): key column "email" is not in the table's replica identity (id): ` +
				`the old key of an UPDATE that changes it, and the key of a DELETE, would not reach replicator; ` +
				`choose key: columns within the identity, or run ALTER TABLE public.users REPLICA IDENTITY FULL`},
		},
		{
			name: "listed twice", table: kitchenSink(),
			spec: Spec{Name: "k", Topic: "k", Key: []string{"id", "id"}, Columns: []string{"i4", "i4"}},
			want: []string{`key column "id" is listed twice in key:`, `column "i4" is listed twice in columns:`},
		},
		{
			name: "primary key column missing from the columns", table: &relation.Table{Schema: "public", Name: "t", PrimaryKey: []string{"gone"}, Columns: []relation.Column{col("x", tInt4, false)}},
			spec: Spec{Name: "t", Topic: "t"},
			want: []string{`entity "t" (table public.t): primary key column "gone" is not a column of the table (columns: "x")`},
		},
		{
			name: "unknown numeric mode", table: kitchenSink(),
			spec: Spec{Name: "k", Topic: "k"}, opts: Options{UnconstrainedNumeric: 7},
			want: []string{`entity "k" (table public.kitchen_sink): unknown unconstrained numeric mode NumericMode(7): want string or double`},
		},
		{
			name: "every problem at once", table: geo,
			spec: Spec{Name: "places", Topic: "places", Key: []string{"nope"}, Columns: []string{"id", "shape", "missing"}, AsString: []string{"absent"}},
			want: []string{
				`column "absent" listed in as_string: does not exist`,
				`key column "nope" does not exist`,
				`column "missing" listed in columns: does not exist`,
				`column "shape" has type geometry`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := NewEntity(tt.spec, tt.table, tt.opts)
			if err == nil {
				t.Fatalf("got entity %q, want an error", e.Name())
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, want := range tt.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("error %d:\ngot  %s\nwant it to contain %s", i, got[i], want)
				}
			}
		})
	}
}

func TestNewEntityNilTable(t *testing.T) {
	t.Parallel()
	_, err := NewEntity(Spec{Name: "x", Topic: "x"}, nil, Options{})
	if got, want := errString(err), `entity "x": no table`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// An as: string override is the fix the errors suggest: it must work, for
// exported and key columns alike.
func TestAsStringFixesUnsupported(t *testing.T) {
	t.Parallel()
	table := &relation.Table{Schema: "gis", Name: "tiles", Columns: []relation.Column{
		col("cell", tGeometry, false), col("shapes", arrayOf(tGeometry), true), col("odd", numeric(2, -3), true),
	}}
	e, err := NewEntity(Spec{Name: "tiles", Topic: "tiles", Key: []string{"cell"}, AsString: []string{"cell", "shapes", "odd"}}, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"replicator.gis.tiles","type":"record","fields":[{"name":"cell","type":"string"},{"name":"shapes","type":["null","string"],"default":null},{"name":"odd","type":["null","string"],"default":null}]}`
	if got := e.ValueSchema(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	b, err := e.AppendKey(nil, []any{"0101000000", nil, nil})
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewCodec().Decode(e.KeyAvroSchema(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got["cell"] != "0101000000" {
		t.Errorf("got cell %#v, want %q", got["cell"], "0101000000")
	}
}

func TestApplyOverrides(t *testing.T) {
	t.Parallel()
	orig := kitchenSink()
	_, decIdx, _ := orig.Column("decs")
	before := orig.Columns[decIdx]

	got, err := ApplyOverrides(*orig, []string{"decs", "id", "decs"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := got.Column("decs")
	if c.Type.Kind != relation.Text || c.Type.Elem != nil || c.Type.Name != "numeric(5,2)[]" || c.Nullable {
		t.Errorf("decs: got %+v, want kind text, no element type, name numeric(5,2)[], NOT NULL", c)
	}
	if c, _, _ := got.Column("id"); c.Type.Kind != relation.Text {
		t.Errorf("id: got kind %v, want text", c.Type.Kind)
	}
	if c, _, _ := got.Column("i4"); c.Type.Kind != relation.Int32 {
		t.Errorf("i4: got kind %v, want int32 (not listed)", c.Type.Kind)
	}
	if after := orig.Columns[decIdx]; after.Type.Kind != before.Type.Kind || after.Type.Elem != before.Type.Elem {
		t.Errorf("the input table was modified: got %+v, want %+v", after, before)
	}

	_, err = ApplyOverrides(*orig, []string{"x", "id", "y"})
	want := `table public.kitchen_sink: column "x" listed in as_string: does not exist (columns: "id", "tenant", "i2"`
	lines := strings.Split(errString(err), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], want) || !strings.HasPrefix(lines[1], `table public.kitchen_sink: column "y" listed in as_string:`) {
		t.Errorf("got %v, want two errors, the first starting %s", err, want)
	}
}

func TestAppendErrors(t *testing.T) {
	t.Parallel()
	table := kitchenSink()
	e, err := NewEntity(Spec{Name: "k", Topic: "k"}, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dbl, err := NewEntity(Spec{Name: "k", Topic: "k"}, table, Options{UnconstrainedNumeric: NumericAsDouble})
	if err != nil {
		t.Fatal(err)
	}
	set := func(column string, v any) []any {
		row := kitchenRow()
		_, i, ok := table.Column(column)
		if !ok {
			t.Fatalf("no column %q", column)
		}
		row[i] = v
		return row
	}
	big := "1" + strings.Repeat("0", 29) // 30 integer digits: numeric(38,9) allows 29
	tests := []struct {
		name   string
		entity *Entity
		key    bool
		row    []any
		want   string
	}{
		{"wrong Go type", e, false, set("i4", int64(1)), `column "i4": got Go type int64, want int32`},
		{"wrong Go type in array", e, false, set("ints", []any{int32(1), "2"}), `column "ints": element 2: got Go type string, want int32`},
		{"array not a slice", e, false, set("ints", []int32{1}), `column "ints": got Go type []int32, want []any`},
		{"unchanged TOAST", e, false, set("txt_n", relation.UnchangedTOAST{}), `column "txt_n": unchanged TOAST value: the source must resolve it to the stored value before encoding`},
		{"NULL in a NOT NULL column", e, false, set("txt", nil), `column "txt": NULL in a column that was NOT NULL when the entity was built; if its NOT NULL was dropped since, set the entity's compatibility: backward and restart, so that the field is registered as nullable (docs/OPERATIONS.md, Schema changes)`},
		{"NULL key", e, true, set("tenant", nil), `key column "tenant": NULL, but keys must be NOT NULL`},
		{"key wrong type", e, true, set("id", int32(1)), `column "id": got Go type int32, want int64`},
		{"NaN in a decimal", e, false, set("dec", "NaN"), `column "dec": NaN cannot be represented as an Avro decimal: list it in as_string: to export this column as text`},
		{"Infinity in a decimal", e, false, set("dec_n", "-Infinity"), `column "dec_n": -Infinity cannot be represented as an Avro decimal: list it in as_string: to export this column as text`},
		{"NaN in a decimal array", e, false, set("decs", []any{"NaN"}), `column "decs": element 1: NaN cannot be represented as an Avro decimal: list it in as_string: to export this column as text`},
		{"too many fractional digits", e, false, set("dec", "1.0000000001"), `column "dec": numeric value has 10 fractional digits, more than scale 9`},
		{"too many integer digits", e, false, set("dec", big), `column "dec": numeric value has 30 integer digits, more than precision 38 with scale 9 allows`},
		{"exponent form", e, false, set("dec", "1e5"), `column "dec": numeric text is not a plain decimal number`},
		{"empty decimal", e, false, set("dec", "-"), `column "dec": numeric text is not a plain decimal number`},
		{"numeric beyond double", dbl, false, set("num", "1"+strings.Repeat("0", 400)), `column "num": numeric value is beyond the range of a double: export unconstrained numeric as string`},
		{"numeric not a number", dbl, false, set("num_n", "abc"), `column "num_n": numeric text is not a number`},
		{"date out of range", e, false, set("d", time.Date(6000000, 1, 1, 0, 0, 0, 0, time.UTC)), `column "d": date out of the range of an Avro date`},
		{"timestamp out of range", e, false, set("ts", time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)), `column "ts": timestamp out of the range of Avro microseconds (years 290308 BC to 294247 AD): list the column in as_string: to export PostgreSQL's text`},
		{"timestamptz out of range", e, false, set("tstz_n", time.Date(-300000, 1, 1, 0, 0, 0, 0, time.UTC)), `column "tstz_n": timestamp out of the range of Avro microseconds (years 290308 BC to 294247 AD): list the column in as_string: to export PostgreSQL's text`},
		{"short row", e, false, kitchenRow()[:3], `row has 3 values, want 42 (one per table column)`},
		{"short key row", e, true, []any{int64(1), "t"}, `row has 2 values, want 42 (one per table column)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dst := []byte("prefix")
			var got []byte
			var err error
			if tt.key {
				got, err = tt.entity.AppendKey(dst, tt.row)
			} else {
				got, err = tt.entity.AppendValue(dst, tt.row)
			}
			if errString(err) != tt.want {
				t.Errorf("got error %q, want %q", errString(err), tt.want)
			}
			if string(got) != "prefix" {
				t.Errorf("got dst %q after the error, want it unchanged: %q", got, "prefix")
			}
		})
	}
	t.Run("unchanged TOAST is errors.Is-able", func(t *testing.T) {
		t.Parallel()
		_, err := e.AppendValue(nil, set("doc", relation.UnchangedTOAST{}))
		if !errors.Is(err, errUnchangedTOAST) {
			t.Errorf("got %v, want it to wrap errUnchangedTOAST", err)
		}
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Keys the replica identity covers are accepted: within the identity's
// columns, any key under REPLICA IDENTITY FULL, and any key of a table
// without identity (PostgreSQL refuses its UPDATEs and DELETEs itself).
func TestKeyWithinReplicaIdentity(t *testing.T) {
	t.Parallel()
	cols := []relation.Column{col("id", tInt8, false), col("email", tText, false)}
	for _, tt := range []struct {
		name     string
		identity []string
		full     bool
	}{
		{"identity index on the key", []string{"email"}, false},
		{"key within a wider identity", []string{"id", "email"}, false},
		{"identity full", nil, true},
		{"no identity", nil, false},
	} {
		table := &relation.Table{Schema: "public", Name: "users", PrimaryKey: []string{"id"}, Identity: tt.identity, IdentityFull: tt.full, Columns: cols}
		if _, err := NewEntity(Spec{Name: "users", Topic: "users", Key: []string{"email"}}, table, Options{}); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestSQLIdent(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"users": "users", "user_2": "user_2", "Sales": `"Sales"`, "a b": `"a b"`, `x"y`: `"x""y"`, "2x": `"2x"`, "": `""`} {
		if got := sqlIdent(in); got != want {
			t.Errorf("sqlIdent(%q): got %s, want %s", in, got, want)
		}
	}
}
