package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/relation"
)

var update = flag.Bool("update", false, "rewrite the golden schemas in testdata/")

func TestSchemaGolden(t *testing.T) {
	t.Parallel()
	sanitised := &relation.Table{
		Schema: "Sales-EU", Name: "Order Lines",
		Columns: []relation.Column{
			col("Order ID", tInt8, false),
			col("1st line", tText, false),
			col("größe", numeric(10, 0), true),
			col("ok_name", tBool, true),
			col("$price", tNumeric, false),
		},
		PrimaryKey: []string{"Order ID"},
	}
	tests := []struct {
		name  string
		spec  Spec
		table *relation.Table
		opts  Options
	}{
		{"kitchen_sink", Spec{Name: "kitchen_sink", Topic: "kitchen"}, kitchenSink(), Options{}},
		{"numeric_as_double", Spec{Name: "kitchen_sink", Topic: "kitchen", Columns: []string{"id", "num", "num_n"}}, kitchenSink(), Options{UnconstrainedNumeric: NumericAsDouble}},
		{
			// key in configured order, columns in attribute order, as: string
			"configured", Spec{
				Name: "kitchen-sink.v2", Topic: "kitchen", Key: []string{"tenant", "id"},
				Columns: []string{"mood_n", "ts", "id", "dec"}, AsString: []string{"dec", "ts"},
			}, kitchenSink(), Options{},
		},
		{"sanitised", Spec{Name: "order lines", Topic: "sales.order-lines"}, sanitised, Options{}},
		// Avro type names as table, schema and column names.
		{"reserved", Spec{Name: "int", Topic: "int"}, &relation.Table{
			Schema: "string", Name: "int",
			Columns:    []relation.Column{col("null", tInt8, false), col("string", tText, true)},
			PrimaryKey: []string{"null"},
		}, Options{}},
	}
	c := NewCodec()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := NewEntity(tt.spec, tt.table, tt.opts)
			if err != nil {
				t.Fatalf("NewEntity: %v", err)
			}
			for _, s := range []struct{ suffix, text string }{
				{".key.avsc", e.KeySchema()}, {".value.avsc", e.ValueSchema()},
			} {
				path := filepath.Join("testdata", tt.name+s.suffix)
				checkGolden(t, path, s.text)

				// The registered text parses back to the schema the entity
				// encodes with.
				parsed, err := c.Parse(s.text)
				if err != nil {
					t.Fatalf("%s: parse: %v", path, err)
				}
				want := e.ValueAvroSchema().Fingerprint()
				if s.suffix == ".key.avsc" {
					want = e.KeyAvroSchema().Fingerprint()
				}
				if got := parsed.Fingerprint(); got != want {
					t.Errorf("%s: parsed fingerprint %x, want %x", path, got, want)
				}
			}
			// Determinism: the same input gives the same bytes.
			again, err := NewEntity(tt.spec, tt.table, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if again.KeySchema() != e.KeySchema() || again.ValueSchema() != e.ValueSchema() {
				t.Errorf("schemas differ between two NewEntity calls")
			}
		})
	}
}

// checkGolden compares text with the indented JSON in path, or rewrites path
// with -update. The golden file is indented for review; the comparison is on
// the exact compact text.
func checkGolden(t *testing.T, path, text string) {
	t.Helper()
	if *update {
		var buf bytes.Buffer
		if err := json.Indent(&buf, []byte(text), "", "  "); err != nil {
			t.Fatalf("%s: indent: %v", path, err)
		}
		buf.WriteByte('\n')
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, golden); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if text != want.String() {
		t.Errorf("%s:\ngot  %s\nwant %s\n(run go test -update to accept)", path, text, want.String())
	}
}

func TestEntityAccessors(t *testing.T) {
	t.Parallel()
	e, err := NewEntity(Spec{
		Name: "orders", Topic: "shop.orders", Key: []string{"tenant", "id"}, Columns: []string{"txt", "id"},
	}, kitchenSink(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"Name", e.Name(), "orders"},
		{"Topic", e.Topic(), "shop.orders"},
		{"KeySubject", e.KeySubject(), "shop.orders-key"},
		{"ValueSubject", e.ValueSubject(), "shop.orders-value"},
		{"key record", e.KeyAvroSchema().FullName(), "replicator.public.orders_key"},
		{"value record", e.ValueAvroSchema().FullName(), "replicator.public.orders"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if got, want := e.KeyColumns(), []string{"tenant", "id"}; !equalStrings(got, want) {
		t.Errorf("KeyColumns: got %q, want %q", got, want)
	}
	if got, want := e.ValueColumns(), []string{"id", "txt"}; !equalStrings(got, want) {
		t.Errorf("ValueColumns: got %q, want %q", got, want)
	}
	e.KeyColumns()[0] = "changed"
	if got := e.KeyColumns()[0]; got != "tenant" {
		t.Errorf("KeyColumns after modifying a returned slice: got %q, want %q", got, "tenant")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestEveryKindHasACodec: every kind relation decodes has a schema, a value
// encoder and a text encoder in columnCodec; a kind added without its case
// fails here.
func TestEveryKindHasACodec(t *testing.T) {
	t.Parallel()
	n := 0
	for k := relation.Kind(1); !strings.HasPrefix(k.String(), "kind("); k++ {
		n++
		typ := relation.Type{Kind: k}
		if k == relation.Array {
			typ.Elem = &relation.Type{Kind: relation.Int32}
		}
		c, err := columnCodec(typ, Options{})
		if err != nil || c.schema == nil || c.enc == nil || c.text == nil {
			t.Errorf("kind %s: got schema %v, value encoder set %t, text encoder set %t, error %v; want all three",
				k, c.schema, c.enc != nil, c.text != nil, err)
		}
	}
	if n < 17 {
		t.Errorf("walked %d kinds, want every kind after unsupported (17 when this test was written)", n)
	}
	if _, err := columnCodec(relation.Type{Kind: relation.Unsupported}, Options{}); !errors.Is(err, errUnsupportedType) {
		t.Errorf("unsupported kind: got %v, want errUnsupportedType", err)
	}
}
