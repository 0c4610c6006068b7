package source

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/replicator/replicator/relation"
)

// A row value the source cannot decode stops it: the change is never
// handed over, so never acknowledged, and the confirmed LSN stays before
// its transaction. Skipping the row would lose it silently, and altering
// the value (a far date for 'infinity', say) would publish something the
// table does not hold. The error names the table, the row's key and the
// column, so the operator can find the row; restarting meets the same row
// again until the value or the configuration changes.

// maxKeyText bounds each key value repeated in an error message.
const maxKeyText = 64

// rowKey renders the key of a row for error messages, PostgreSQL style:
// ("id")=(5). The key is the primary key, else the replica identity
// index; text returns a column's value as PostgreSQL printed it, or false
// when it was not sent (NULL, unchanged TOAST). Key values identify a row;
// they are not its contents, and appear in errors as in pipeline's.
func rowKey(t *relation.Table, text func(col int) ([]byte, bool)) string {
	names := t.PrimaryKey
	if len(names) == 0 {
		names = t.Identity
	}
	if len(names) == 0 {
		return "(the table has no primary key)"
	}
	cols := make([]string, len(names))
	vals := make([]string, len(names))
	for i, name := range names {
		cols[i] = strconv.Quote(name)
		vals[i] = "?"
		if _, idx, ok := t.Column(name); ok {
			if b, ok := text(idx); ok {
				vals[i] = cut(b)
			}
		}
	}
	return "(" + strings.Join(cols, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
}

// cut returns b as a string of at most maxKeyText bytes, on a rune
// boundary, marked with "..." when cut.
func cut(b []byte) string {
	if len(b) <= maxKeyText {
		return string(b)
	}
	n := maxKeyText
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// valueError reports that column col of the row with the given key could
// not be decoded, and says how to carry the value where there is a way.
func valueError(t *relation.Table, key string, col int, err error) error {
	typ := t.Columns[col].Type.Name
	if typ == "" {
		typ = t.Columns[col].Type.Kind.String()
	}
	msg := fmt.Sprintf("table %s key %s column %q (%s)", t.QualifiedName(), key, t.Columns[col].Name, typ)
	if errors.Is(err, relation.ErrInfinity) {
		return fmt.Errorf("%s: %w: an infinite date or timestamp has no Avro date or timestamp value; list the column in as_string: to export PostgreSQL's text ('infinity') instead, exclude it from columns:, or change the value", msg, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// decodeRow decodes one row given as PostgreSQL's text output (nil for
// NULL), as the snapshot reads it, skipping unused columns.
func decodeRow(t *relation.Table, raw [][]byte) ([]any, error) {
	row := make([]any, len(raw))
	for i, b := range raw {
		if b == nil || t.Columns[i].Unused {
			continue
		}
		v, err := relation.DecodeText(&t.Columns[i].Type, b)
		if err != nil {
			key := rowKey(t, func(k int) ([]byte, bool) { return raw[k], raw[k] != nil })
			return nil, valueError(t, key, i, err)
		}
		row[i] = v
	}
	return row, nil
}
