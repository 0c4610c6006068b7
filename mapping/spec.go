package mapping

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/replicator/replicator/relation"
)

// Spec is an entity as configured: which table columns identify a record and
// which ones it exports.
type Spec struct {
	// Name names the entity; it becomes the Avro record name (sanitised).
	// Required.
	Name string
	// Topic is the Kafka topic the entity is produced to; the registry
	// subjects are derived from it. Required.
	Topic string
	// Key lists the key columns in key order. Empty means the table's
	// primary key. Every key column must be NOT NULL.
	Key []string
	// Columns lists the exported columns. Empty means every column. The
	// value record keeps the table's attribute order whatever the order here.
	Columns []string
	// AsString lists columns exported as their PostgreSQL text whatever
	// their type (see [ApplyOverrides]).
	AsString []string
	// Nullable lists value columns exported as ["null", T] with default
	// null even though the table declares them NOT NULL: a column added
	// while streaming got such a field (its NOT NULL could not be known),
	// and making it required later would be an incompatible schema change.
	// Names the table does not have are ignored. Fields of the key
	// record are never nullable.
	Nullable []string
}

// NumericMode says how a numeric column without a declared precision and
// scale is exported: such a column can hold any number of digits, NaN and
// ±Infinity, so no Avro decimal can hold every value.
type NumericMode uint8

const (
	// NumericAsString exports unconstrained numeric as PostgreSQL's text
	// ("-12.50", "NaN", "Infinity"): exact, and the default.
	NumericAsString NumericMode = iota
	// NumericAsDouble exports unconstrained numeric as an Avro double: it
	// keeps NaN and ±Infinity but rounds to about 15 significant digits, and
	// a value beyond the double range is an encoding error.
	NumericAsDouble
)

// String returns the mode as configured: "string" or "double".
func (m NumericMode) String() string {
	switch m {
	case NumericAsString:
		return "string"
	case NumericAsDouble:
		return "double"
	default:
		return fmt.Sprintf("NumericMode(%d)", uint8(m))
	}
}

// Options tune the type mapping of every entity.
type Options struct {
	// UnconstrainedNumeric is the Avro type of a numeric column declared
	// without precision and scale. Default [NumericAsString].
	UnconstrainedNumeric NumericMode
}

func (o Options) validate() error {
	switch o.UnconstrainedNumeric {
	case NumericAsString, NumericAsDouble:
		return nil
	default:
		return fmt.Errorf("unknown unconstrained numeric mode %v: want string or double", o.UnconstrainedNumeric)
	}
}

// ApplyOverrides returns a copy of t in which every column named in asString
// has kind [relation.Text]: the source then decodes it as PostgreSQL's text
// output, verbatim, and the entity exports it as an Avro string. The column
// keeps its OID and type name. t itself is not modified.
//
// Applying the same overrides twice gives the same table. The error names the
// table and every listed column it does not have; the table is then the zero
// Table.
func ApplyOverrides(t relation.Table, asString []string) (relation.Table, error) {
	out, missing := applyOverrides(t, asString)
	if len(missing) == 0 {
		return out, nil
	}
	errs := make([]error, len(missing))
	for i, name := range missing {
		errs[i] = fmt.Errorf("table %s: column %q listed in as_string: does not exist%s",
			t.QualifiedName(), name, columnList(&t))
	}
	return relation.Table{}, errors.Join(errs...)
}

// applyOverrides is ApplyOverrides returning the missing column names, so
// that each caller words its own error.
func applyOverrides(t relation.Table, asString []string) (relation.Table, []string) {
	out := t
	out.Columns = slices.Clone(t.Columns)
	out.PrimaryKey = slices.Clone(t.PrimaryKey)
	var missing []string
	for _, name := range asString {
		_, i, ok := out.Column(name)
		if !ok {
			missing = append(missing, name)
			continue
		}
		typ := &out.Columns[i].Type
		typ.Kind = relation.Text
		typ.Precision, typ.Scale, typ.Elem = 0, 0, nil
	}
	return out, missing
}

// PresentColumns splits names into those t has and those it lacks, each in
// order.
func PresentColumns(t *relation.Table, names []string) (present, missing []string) {
	for _, n := range names {
		if _, _, ok := t.Column(n); ok {
			present = append(present, n)
		} else {
			missing = append(missing, n)
		}
	}
	return present, missing
}

// AsStringNotInTable words the note for an as_string: name that table t
// lacks: ignored for t's shape, not refused, because a column dropped
// while older changes were still to stream must stay listed for them
// (docs/OPERATIONS.md, Schema changes).
func AsStringNotInTable(t *relation.Table, name string) string {
	return fmt.Sprintf("column %q listed in as_string: is not in table %s%s: ignored for its current shape; changes from before it was dropped, if any are still to stream, export it as text; remove it from as_string: once they have (or fix the name, if it is a typo)",
		name, t.QualifiedName(), columnList(t))
}

// columnList renders the table's column names for "does not exist" errors.
func columnList(t *relation.Table) string {
	if len(t.Columns) == 0 {
		return " (the table has no columns)"
	}
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = fmt.Sprintf("%q", c.Name)
	}
	return " (columns: " + strings.Join(names, ", ") + ")"
}
