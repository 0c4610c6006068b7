package sink

import (
	"bytes"
	"slices"
)

// copyAhead is a batch's rows encoded as COPY text with its decoding
// (decodeAhead), so that the batch's COPY is a send only: encoded as the
// COPY reads it, the text held the server back (bench/analysis.md,
// "rebuildpg3"). It is the text of rows, in that order, with the column
// types types (pgColumnTypes' cache when it was encoded); upsertCopy uses
// it only for those very rows (the same cells) with the types its batch
// checked under the table's lock, and encodes as before otherwise (a
// batch deduplicated or filtered by the offsets, a type altered since).
type copyAhead struct {
	table string
	rows  [][]any
	types []string
	text  []byte
}

// encodeAhead encodes rows, the rows of table's columns cols converted
// ahead, with the column types cached for table; nil when none are
// cached yet (the first batch), or when a value has no COPY text form.
// size is the text's expected size (the last batch's), to grow once.
func (s *store) encodeAhead(table string, cols []string, rows [][]any, size int) *copyAhead {
	if _, ok := s.d.(postgresDialect); !ok || len(rows) == 0 {
		return nil
	}
	s.mu.Lock()
	known := s.pgTypes[table]
	s.mu.Unlock()
	if known == nil {
		return nil
	}
	types, err := typesOf(s.d, table, known, cols)
	if err != nil {
		return nil
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	c := &copyRows{rows: rows, types: types, buf: buf}
	if !c.encodeAll() {
		return nil
	}
	return &copyAhead{table: table, rows: rows, types: types, text: buf.Bytes()}
}

// use makes data's text the one encoded ahead when it is that of data's
// rows with data's types and nothing of data was encoded yet; it reports
// whether it did.
func (a *copyAhead) use(table string, data *copyRows) bool {
	if a == nil || a.table != table || data.next > 0 || data.buf.Len() > 0 ||
		len(a.rows) != len(data.rows) || !slices.Equal(a.types, data.types) {
		return false
	}
	for i, r := range data.rows {
		// The same cells, not equal ones: a row's cells are not changed
		// once converted, so the text encoded from them is still theirs.
		if len(r) != len(a.rows[i]) || len(r) == 0 || &r[0] != &a.rows[i][0] {
			return false
		}
	}
	data.buf = bytes.NewBuffer(a.text)
	data.next = len(data.rows)
	return true
}
