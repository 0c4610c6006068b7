// Package relation describes a PostgreSQL table as logical replication sees
// it: its columns, their types reduced to the kinds replicator supports, the
// key, and the Go value every column decodes to.
//
// It is the contract between the source (which reads the catalog and decodes
// pgoutput tuples and snapshot rows) and mapping (which turns the same values
// into Avro). Neither side needs to know how the other is built.
package relation

import (
	"fmt"
	"strings"
)

// Kind is the replicator-level type of a column. Domains resolve to the kind
// of their base type; enums are [Enum]; arrays are [Array] with an element
// type.
type Kind uint8

// The supported kinds and the Go value a non-NULL column of that kind decodes
// to. NULL is always nil. [DecodeText] produces these values from
// PostgreSQL's text output.
const (
	Unsupported Kind = iota // no decoding; the column must be excluded or overridden
	Int16                   // int32
	Int32                   // int32
	Int64                   // int64
	Float32                 // float32
	Float64                 // float64
	Numeric                 // string: PostgreSQL's canonical text ("-12.50", "NaN", "Infinity")
	Text                    // string (text, varchar, char, name)
	Bool                    // bool
	Bytes                   // []byte
	UUID                    // string, canonical lower-case 8-4-4-4-12
	Date                    // time.Time at UTC midnight
	Time                    // time.Duration since midnight
	Timestamp               // time.Time in UTC holding the wall-clock value (no zone)
	TimestampTZ             // time.Time in UTC
	JSON                    // string (json and jsonb text)
	Enum                    // string: the label
	Array                   // []any of the element kind's values (nil for NULL elements); one dimension

	kindEnd // not a kind: the number of kinds (a new kind goes before it)
)

func (k Kind) String() string {
	if d := kindOf(k); d != nil {
		return d.name
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Type is a column's type as replicator understands it.
type Type struct {
	Kind Kind
	// OID is the PostgreSQL type OID of the column as declared (the domain's
	// OID for a domain column).
	OID uint32
	// Name is the SQL name of the declared type, e.g. "numeric(12,2)",
	// "character varying(40)", "public.mood". Used in messages.
	Name string
	// Precision and Scale of a numeric(p,s); both zero for an
	// unconstrained numeric.
	Precision, Scale int
	// Elem is the element type of an Array.
	Elem *Type
}

// Column is one attribute of a table, in attribute order.
type Column struct {
	Name     string
	Type     Type
	Nullable bool
	// Unused marks a column no entity reads (neither key nor exported):
	// the source does not decode it and its value is always nil. An
	// unused column may hold what no Avro type can (an Unsupported type,
	// an infinite timestamp) without stopping anything.
	Unused bool
}

// Table is a published table: its qualified name, every live column in
// attribute order (the order pgoutput sends tuples in), and its primary key
// column names (empty when the table has none).
type Table struct {
	Schema string
	Name   string
	// OID is the table's pg_class OID when read from the catalog (0 when
	// not, as in tests). It outlives a rename: the stream maps a renamed
	// configured table to its entity by it, and re-reads find it by it.
	OID        uint32
	Columns    []Column
	PrimaryKey []string
	// Identity lists the columns PostgreSQL writes into the old tuple of an
	// UPDATE or DELETE (the replica identity). nil with IdentityFull set
	// means every column; empty without it means none (REPLICA IDENTITY
	// NOTHING, or a default identity on a table without primary key).
	Identity     []string
	IdentityFull bool
}

// QualifiedName is schema.name, quoted only where needed for reading.
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Column returns the column with the given name and its index.
func (t *Table) Column(name string) (Column, int, bool) {
	for i, c := range t.Columns {
		if c.Name == name {
			return c, i, true
		}
	}
	return Column{}, -1, false
}

// ParseQualifiedName splits "schema.table" (or "table", meaning public) into
// its parts with PostgreSQL's rules: an unquoted part folds to lower case, a
// double-quoted part is taken as written (and may hold dots).
func ParseQualifiedName(s string) (schema, name string, err error) {
	parts, err := splitIdent(s)
	if err != nil {
		return "", "", fmt.Errorf("table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	default:
		return "", "", fmt.Errorf("table name %q: want table or schema.table", s)
	}
}

func splitIdent(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	inQuote, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			inQuote = !inQuote
			quoted = true
		case c == '.' && !inQuote:
			if cur.Len() == 0 && !quoted {
				return nil, fmt.Errorf("empty identifier")
			}
			parts = append(parts, fold(cur.String(), quoted))
			cur.Reset()
			quoted = false
		default:
			cur.WriteByte(c)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	if cur.Len() == 0 && !quoted {
		return nil, fmt.Errorf("empty identifier")
	}
	return append(parts, fold(cur.String(), quoted)), nil
}

func fold(ident string, quoted bool) string {
	if quoted {
		return ident
	}
	return strings.ToLower(ident)
}

// UnchangedTOAST is the value pgoutput reports for a TOASTed column that an
// UPDATE did not modify: the value exists but was not sent. It must never
// reach a record; the source resolves it to the real value first.
type UnchangedTOAST struct{}
