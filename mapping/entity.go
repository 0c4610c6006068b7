package mapping

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/relation"
)

// PropColumn is the custom Avro field property that holds the PostgreSQL
// column name when the field name had to be sanitised.
const PropColumn = "pg.column"

// Entity is a table as exported to one topic: its key and value schemas and
// the encoders that turn a row into their Avro binary encoding. An Entity is
// immutable and safe for concurrent use.
type Entity struct {
	name, topic string
	width       int // number of table columns: the length of every row
	key, value  record
}

// record is one Avro record of an entity and how to fill it from a row.
type record struct {
	schema  *avro.RecordSchema
	text    string // the schema's JSON, as registered
	fields  []field
	columns []string // PostgreSQL names, in field order
	isKey   bool
}

// field is one record field: which row value fills it and how.
type field struct {
	column   string // PostgreSQL name, for errors
	index    int    // position in the row
	nullable bool   // ["null", T]
	enc      encodeFunc
	encText  textEncodeFunc
}

// NewEntity validates spec against t and builds the entity's schemas and
// encoders. The columns listed in spec.AsString are exported as text first
// (see [ApplyOverrides]); t must be the table the source decodes rows with,
// with or without those overrides already applied.
//
// Every problem is reported, joined with [errors.Join]; each names the
// entity, the table, the column and its PostgreSQL type, and says how to fix
// it in the configuration.
func NewEntity(spec Spec, t *relation.Table, opts Options) (*Entity, error) {
	if t == nil {
		return nil, fmt.Errorf("entity %q: no table", spec.Name)
	}
	b := builder{spec: spec, opts: opts}
	b.where = fmt.Sprintf("entity %q (table %s)", spec.Name, t.QualifiedName())
	if err := opts.validate(); err != nil {
		b.fail("%v", err)
	}
	if spec.Name == "" {
		b.fail("the entity has no name")
	}
	if spec.Topic == "" {
		b.fail("the entity has no topic")
	}
	table, missing := applyOverrides(*t, spec.AsString)
	for _, name := range missing {
		b.fail("column %q listed in as_string: does not exist%s", name, columnList(t))
	}
	b.table = &table

	keyCols := b.keyColumns()
	valueCols := b.valueColumns()
	key := b.record(avroName(spec.Name)+"_key", keyCols, true)
	value := b.record(avroName(spec.Name), valueCols, false)
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	return &Entity{name: spec.Name, topic: spec.Topic, width: len(table.Columns), key: key, value: value}, nil
}

// builder collects NewEntity's problems.
type builder struct {
	spec  Spec
	opts  Options
	table *relation.Table
	where string // "entity … (table …)"
	errs  []error
}

func (b *builder) fail(format string, args ...any) {
	b.errs = append(b.errs, fmt.Errorf("%s: %s", b.where, fmt.Sprintf(format, args...)))
}

// keyColumns returns the indexes of the key columns in key order.
func (b *builder) keyColumns() []int {
	names, configured := b.spec.Key, true
	if len(names) == 0 {
		names, configured = b.table.PrimaryKey, false
		if len(names) == 0 {
			b.fail("the table has no primary key: set key: to NOT NULL columns that identify a row")
			return nil
		}
	}
	var idx []int
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			b.fail("key column %q is listed twice in key:", name)
			continue
		}
		seen[name] = true
		col, i, ok := b.table.Column(name)
		switch {
		case !ok && configured:
			b.fail("key column %q does not exist%s", name, columnList(b.table))
		case !ok:
			b.fail("primary key column %q is not a column of the table%s", name, columnList(b.table))
		case col.Nullable:
			b.fail("key column %q (%s) is nullable, but keys must be NOT NULL: declare it NOT NULL or choose other key: columns",
				name, typeName(col.Type))
		default:
			idx = append(idx, i)
		}
	}
	b.keyInIdentity(names)
	return idx
}

// keyInIdentity fails unless every key column is in the table's replica
// identity, the columns PostgreSQL writes into the old row of an UPDATE or
// DELETE: otherwise an UPDATE that changes the key arrives without the old
// key, whose last record would stay live on the topic forever, and a
// DELETE arrives without the key to tombstone. A table with no identity
// at all is left alone: PostgreSQL refuses its UPDATEs and DELETEs while it
// is published.
func (b *builder) keyInIdentity(names []string) {
	t := b.table
	if t.IdentityFull || len(t.Identity) == 0 {
		return
	}
	for _, name := range names {
		if !slices.Contains(t.Identity, name) {
			b.fail("key column %q is not in the table's replica identity (%s): the old key of an UPDATE that changes it, "+
				"and the key of a DELETE, would not reach replicator; choose key: columns within the identity, or run "+
				"ALTER TABLE %s.%s REPLICA IDENTITY FULL", name, strings.Join(t.Identity, ", "), sqlIdent(t.Schema), sqlIdent(t.Name))
		}
	}
}

// valueColumns returns the indexes of the exported columns in attribute
// order.
func (b *builder) valueColumns() []int {
	if len(b.spec.Columns) == 0 {
		idx := make([]int, len(b.table.Columns))
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	want := make([]bool, len(b.table.Columns))
	for _, name := range b.spec.Columns {
		_, i, ok := b.table.Column(name)
		switch {
		case !ok:
			b.fail("column %q listed in columns: does not exist%s", name, columnList(b.table))
		case want[i]:
			b.fail("column %q is listed twice in columns:", name)
		default:
			want[i] = true
		}
	}
	var idx []int
	for i, w := range want {
		if w {
			idx = append(idx, i)
		}
	}
	return idx
}

// record builds the record of the given columns, reporting unmappable types
// and field name collisions.
func (b *builder) record(name string, cols []int, isKey bool) record {
	r := record{isKey: isKey}
	var fields []*avro.Field
	byName := make(map[string]string, len(cols)) // Avro name → column
	for _, i := range cols {
		col := b.table.Columns[i]
		c, err := columnCodec(col.Type, b.opts)
		if err != nil {
			if isKey {
				b.fail("key column %q has type %s, %v: list it in as_string: or choose other key: columns",
					col.Name, typeName(col.Type), err)
			} else {
				b.fail("column %q has type %s, %v: exclude it from columns: or list it in as_string:",
					col.Name, typeName(col.Type), err)
			}
			continue
		}
		typ := c.schema
		fname := avroName(col.Name)
		if other, dup := byName[fname]; dup {
			what, fix := "columns", "exclude one of them from columns: or rename one"
			if isKey {
				what, fix = "key columns", "rename one of them"
			}
			b.fail("%s %q and %q both become the Avro field name %q: %s", what, other, col.Name, fname, fix)
			continue
		}
		byName[fname] = col.Name

		var opts []avro.SchemaOption
		if fname != col.Name {
			opts = append(opts, avro.WithProps(map[string]any{PropColumn: col.Name}))
		}
		optional := (col.Nullable || slices.Contains(b.spec.Nullable, col.Name)) && !isKey
		if optional {
			u, err := nullable(typ)
			if err != nil {
				b.fail("column %q: %v", col.Name, err)
				continue
			}
			typ = u
			opts = append(opts, avro.WithDefault(nil))
		}
		f, err := avro.NewField(fname, typ, opts...)
		if err != nil {
			b.fail("column %q: %v", col.Name, err)
			continue
		}
		fields = append(fields, f)
		r.fields = append(r.fields, field{column: col.Name, index: i, nullable: optional,
			enc: c.enc, encText: c.text})
		r.columns = append(r.columns, col.Name)
	}
	if len(b.errs) > 0 {
		return r
	}
	s, err := avro.NewRecordSchema(name, namespace(b.table.Schema), fields)
	if err != nil {
		b.fail("record %s: %v", name, err)
		return r
	}
	text, err := s.MarshalJSON()
	if err != nil {
		b.fail("record %s: %v", name, err)
		return r
	}
	r.schema, r.text = s, string(text)
	return r
}

// Name is the entity's configured name.
func (e *Entity) Name() string { return e.name }

// Topic is the Kafka topic the entity is produced to.
func (e *Entity) Topic() string { return e.topic }

// KeySubject is the schema-registry subject of the key schema, by the
// TopicNameStrategy: "<topic>-key".
func (e *Entity) KeySubject() string { return e.topic + "-key" }

// ValueSubject is the schema-registry subject of the value schema, by the
// TopicNameStrategy: "<topic>-value".
func (e *Entity) ValueSubject() string { return e.topic + "-value" }

// KeySchema is the key schema's JSON text, the text to register. It is
// deterministic: the same spec, table and options give the same bytes.
func (e *Entity) KeySchema() string { return e.key.text }

// ValueSchema is the value schema's JSON text, the text to register. It is
// deterministic: the same spec, table and options give the same bytes.
func (e *Entity) ValueSchema() string { return e.value.text }

// KeyAvroSchema is the parsed key schema. Callers must not modify it.
func (e *Entity) KeyAvroSchema() *avro.RecordSchema { return e.key.schema }

// ValueAvroSchema is the parsed value schema. Callers must not modify it.
func (e *Entity) ValueAvroSchema() *avro.RecordSchema { return e.value.schema }

// KeyColumns returns the PostgreSQL names of the key columns, in key order.
func (e *Entity) KeyColumns() []string { return slices.Clone(e.key.columns) }

// ValueColumns returns the PostgreSQL names of the exported columns, in
// field (attribute) order.
func (e *Entity) ValueColumns() []string { return slices.Clone(e.value.columns) }

// AppendKey appends the Avro binary encoding of row's key (no header) to dst.
// row holds one value per table column, in attribute order, as documented on
// [relation.Kind]; only the key columns are read, so the old key tuple of an
// UPDATE or DELETE (other columns nil) will do.
//
// An error names the column and the problem, never the value; dst is then
// returned unchanged. The caller adds the table and key.
func (e *Entity) AppendKey(dst []byte, row []any) ([]byte, error) {
	return e.key.append(dst, row, e.width)
}

// AppendValue appends the Avro binary encoding of row's exported columns (no
// header) to dst. row is as for [Entity.AppendKey], and must hold every
// exported value: a [relation.UnchangedTOAST] value is an error.
func (e *Entity) AppendValue(dst []byte, row []any) ([]byte, error) {
	return e.value.append(dst, row, e.width)
}

func (r *record) append(dst []byte, row []any, width int) ([]byte, error) {
	if len(row) != width {
		return dst, fmt.Errorf("row has %d values, want %d (one per table column)", len(row), width)
	}
	start := len(dst)
	for i := range r.fields {
		f := &r.fields[i]
		v := row[f.index]
		if v == nil {
			if !f.nullable {
				return dst[:start], r.nullError(f.column)
			}
			dst = append(dst, 0) // union index 0: null
			continue
		}
		if f.nullable {
			dst = append(dst, 2) // union index 1
		}
		var err error
		if dst, err = f.enc(dst, v); err != nil {
			return dst[:start], &ColumnError{Index: f.index, Column: f.column, Err: err}
		}
	}
	return dst, nil
}

// AppendKeyText is [Entity.AppendKey] for a row given as PostgreSQL's text
// output (as relation.DecodeText reads it): one value per table column, nil
// for NULL. It writes what AppendKey writes for the decoded row, and fails
// where decoding or encoding would, with a [*ColumnError].
func (e *Entity) AppendKeyText(dst []byte, row [][]byte) ([]byte, error) {
	return e.key.appendText(dst, row, e.width)
}

// AppendValueText is [Entity.AppendValue] for a row given as text, as for
// [Entity.AppendKeyText].
func (e *Entity) AppendValueText(dst []byte, row [][]byte) ([]byte, error) {
	return e.value.appendText(dst, row, e.width)
}

// appendText is append for text values. The two loops are kept apart on
// purpose: one loop calling a value getter per field cost twice the time
// of a key (BenchmarkAppendKey), on the path every row takes.
func (r *record) appendText(dst []byte, row [][]byte, width int) ([]byte, error) {
	if len(row) != width {
		return dst, fmt.Errorf("row has %d values, want %d (one per table column)", len(row), width)
	}
	start := len(dst)
	for i := range r.fields {
		f := &r.fields[i]
		text := row[f.index]
		if text == nil {
			if !f.nullable {
				return dst[:start], r.nullError(f.column)
			}
			dst = append(dst, 0) // union index 0: null
			continue
		}
		if f.nullable {
			dst = append(dst, 2) // union index 1
		}
		var err error
		if dst, err = f.encText(dst, text); err != nil {
			return dst[:start], &ColumnError{Index: f.index, Column: f.column, Err: err}
		}
	}
	return dst, nil
}

func (r *record) nullError(column string) error {
	if r.isKey {
		return fmt.Errorf("key column %q: NULL, but keys must be NOT NULL", column)
	}
	// pgoutput does not announce ALTER COLUMN ... DROP NOT NULL: the first
	// NULL is where it shows. A restart reads the column as nullable and
	// registers the union, which old readers cannot read (BACKWARD only).
	return fmt.Errorf("column %q: NULL in a column that was NOT NULL when the entity was built; "+
		"if its NOT NULL was dropped since, set the entity's compatibility: backward and restart, "+
		"so that the field is registered as nullable (docs/OPERATIONS.md, Schema changes)", column)
}

// MarkUnused sets [relation.Column.Unused] on every column of t that the
// entity reads neither as a key nor as a value field, and clears it on the
// others, so that the source leaves those columns undecoded: a column
// excluded from columns: may then have a type or hold a value (an infinite
// timestamp) that has no Avro form. t must be the table the entity was
// built from.
func (e *Entity) MarkUnused(t *relation.Table) {
	for i := range t.Columns {
		t.Columns[i].Unused = true
	}
	for _, r := range []*record{&e.key, &e.value} {
		for _, f := range r.fields {
			if f.index < len(t.Columns) {
				t.Columns[f.index].Unused = false
			}
		}
	}
}

// sqlIdent is name as an SQL identifier in a suggested statement: as is
// when PostgreSQL would read it unquoted, else double-quoted.
func sqlIdent(name string) string {
	plain := name != ""
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && (r >= '0' && r <= '9' || r == '$')) {
			plain = false
			break
		}
	}
	if plain {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
