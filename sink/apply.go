package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// entry is one decoded record, the latest of its (source, topic key) in a
// batch.
type entry struct {
	src   int
	rec   *kgo.Record
	key   fields
	value fields // none() for a tombstone
	// tk is the decoded topic key's identity: its hash, or for the
	// owner's records its JSON text, or "" when tn is the key.
	tk string
	tn int64 // the owner's topic key when it is one integer (tk "")
	// row is the read model's row of an owner's record (not a
	// tombstone) as driver values, when it was converted with the
	// decoding, ahead of its batch (decodeAhead, a read model of one
	// source); nil otherwise, and write converts it itself.
	row []any
	// line is the row of an owner's record (not a tombstone) as COPY
	// text, written straight from its bytes with its decoding ahead
	// (copyline.go) for the column types lineTypes; value is then not
	// decoded (none()), and write converts the record itself only if
	// the text cannot be used.
	line      []byte
	lineTypes []string
}

// applier applies decoded batches of one read model to its store.
type applier struct {
	p  *plan
	st *store
}

// decode decodes a record of source src. A record-level failure wraps
// errUndecodable; a *SchemaError or a registry outage is returned as is.
func (a *applier) decode(ctx context.Context, src int, rec *kgo.Record) (entry, error) {
	return a.decodeWith(ctx, a.p.sources[src].decoder, src, rec)
}

// decodeWith is decode with one of the source's decoders.
func (a *applier) decodeWith(ctx context.Context, dec *recordDecoder, src int, rec *kgo.Record) (entry, error) {
	e := entry{src: src, rec: rec}
	var err error
	if e.key, err = dec.decodeKey(ctx, rec.Key); err != nil {
		return e, fmt.Errorf("key: %w", err)
	}
	if rec.Value != nil {
		if e.value, err = dec.decodeValue(ctx, rec.Value); err != nil {
			return e, fmt.Errorf("value: %w", err)
		}
	}
	a.identify(&e)
	return e, nil
}

// identify sets e's topic key identity from its decoded key.
func (a *applier) identify(e *entry) {
	// Every key field, in the reader's order. The owner's identity only
	// deduplicates a batch, where the key's JSON text serves as well as
	// its hash; the other sources' is kept in the side table: the hash.
	// A one-integer key (the usual owner key) is its own identity: no
	// text to build per record.
	if e.src == a.p.owner {
		if n, ok := oneInt(e.key.vals); ok {
			e.tn = n
		} else {
			e.tk = keyText(e.key.vals)
		}
	} else {
		e.tk = hashValues(e.key.vals)
	}
}

// hashValues is the identity of decoded key values: never the raw key
// bytes, which carry a schema id that changes with the schema version.
// It is the SHA-256 of the values' JSON array; side tables keep these
// hashes, so the text hashed must never change.
func hashValues(vals []any) string {
	var buf [64]byte
	sum := sha256.Sum256(appendKeyJSON(buf[:0], vals))
	return hex.EncodeToString(sum[:])
}

// oneInt is the integer of a key of one integer value.
func oneInt(vals []any) (int64, bool) {
	if len(vals) != 1 {
		return 0, false
	}
	switch x := vals[0].(type) {
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// latest keeps the latest entry of each (source, topic key), in the
// entries' order: the final state depends on nothing else, so the
// survivors may be applied in any order. entries is returned as is when
// every key is there once (a rebuild's usual batch).
func latest(entries []entry) []entry {
	type sk struct {
		src int
		tn  int64
		tk  string
	}
	last := make(map[sk]int, len(entries))
	for i, e := range entries {
		last[sk{e.src, e.tn, e.tk}] = i
	}
	if len(last) == len(entries) {
		return entries
	}
	out := make([]entry, 0, len(last))
	for i, e := range entries {
		if last[sk{e.src, e.tn, e.tk}] == i {
			out = append(out, e)
		}
	}
	return out
}

// keyText is the JSON text hashValues hashes: as distinct as the hash.
func keyText(vals []any) string {
	var buf [64]byte
	return string(appendKeyJSON(buf[:0], vals))
}

// appendKeyJSON appends the JSON array of decoded key values.
func appendKeyJSON(b []byte, vals []any) []byte {
	if out, ok := appendIntsJSON(b, vals); ok {
		return out
	}
	j, _ := json.Marshal(jsonSafe(vals)) // jsonSafe leaves nothing json cannot encode
	return append(b, j...)
}

// appendIntsJSON appends the JSON array of vals when every one is an
// integer (the usual key), exactly as encoding/json writes it, without
// its reflection and allocations: a key is hashed once or twice for every
// record a sink applies.
func appendIntsJSON(b []byte, vals []any) ([]byte, bool) {
	b = append(b, '[')
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		switch x := v.(type) {
		case int:
			b = strconv.AppendInt(b, int64(x), 10)
		case int32:
			b = strconv.AppendInt(b, int64(x), 10)
		case int64:
			b = strconv.AppendInt(b, x, 10)
		default:
			return nil, false
		}
	}
	return append(b, ']'), true
}

// rowKey is the row key of a source's decoded record (raw decoded values).
func (a *applier) rowKey(src int, key, value fields) ([]any, error) {
	return a.rowKeyInto(make([]any, len(a.p.sources[src].keyFields)), src, key, value)
}

// rowKeyInto is rowKey into out, as long as the source's key fields.
func (a *applier) rowKeyInto(out []any, src int, key, value fields) ([]any, error) {
	sp := &a.p.sources[src]
	for i, f := range sp.keyFields {
		m := value
		if f.fromKey {
			m = key
		}
		v, ok := m.at(f.slot)
		if !ok || v == nil {
			return nil, fmt.Errorf("row key field %q is null or missing", f.name)
		}
		out[i] = v
	}
	return out, nil
}

// nullRowKey reports whether a decoded record of src has a null row-key
// field: a non-owner's record that belongs to no row.
func (a *applier) nullRowKey(src int, key, value fields) bool {
	for _, f := range a.p.sources[src].keyFields {
		m := value
		if f.fromKey {
			m = key
		}
		if v, ok := m.at(f.slot); ok && v == nil {
			return true
		}
	}
	return false
}

// storeKey converts a row key to driver values.
func (a *applier) storeKey(rk []any) ([]any, error) {
	out := make([]any, len(rk))
	return out, a.storeKeyInto(out, rk)
}

// storeKeyInto is storeKey into the first len(rk) of dst (a row: the key
// columns come first).
func (a *applier) storeKeyInto(dst, rk []any) error {
	for i, v := range rk {
		sv, err := a.st.d.value(a.p.columns[i].typ, a.p.columns[i].override, v)
		if err != nil {
			return fmt.Errorf("key column %q: %w", a.p.columns[i].name, err)
		}
		dst[i] = sv
	}
	return nil
}

// ownerRowInto sets row, in the columns' order, from a decoded record of
// the owner of a read model of one source: the key columns and the
// owner's, every column (a second source's would be filled from the side
// table). rk is scratch for the row key, as long as the owner's key
// fields.
func (a *applier) ownerRowInto(row, rk []any, e *entry) error {
	rk, err := a.rowKeyInto(rk, a.p.owner, e.key, e.key)
	if err != nil {
		return err
	}
	if err := a.storeKeyInto(row, rk); err != nil {
		return err
	}
	return a.sourceValuesInto(row, a.p.owner, e.key, e.value)
}

// sourceValues are the driver values of src's columns from a decoded
// record (nil record: all null).
func (a *applier) sourceValues(src int, key, value fields) ([]any, error) {
	sp := &a.p.sources[src]
	out := make([]any, len(sp.cols))
	if value.none() {
		return out, nil
	}
	for i := range sp.cols {
		sv, err := a.sourceValue(src, i, key, value)
		if err != nil {
			return nil, err
		}
		out[i] = sv
	}
	return out, nil
}

// sourceValuesInto sets src's columns of row (a row in the columns'
// order) from a decoded record (nil record: all null).
func (a *applier) sourceValuesInto(row []any, src int, key, value fields) error {
	for i, ci := range a.p.sources[src].cols {
		if value.none() {
			row[ci] = nil
			continue
		}
		sv, err := a.sourceValue(src, i, key, value)
		if err != nil {
			return err
		}
		row[ci] = sv
	}
	return nil
}

// sourceValue is the driver value of src's i-th column (nil for a null).
func (a *applier) sourceValue(src, i int, key, value fields) (any, error) {
	sp := &a.p.sources[src]
	f := sp.fields[i]
	m := value
	if f.fromKey {
		m = key
	}
	v, _ := m.at(f.slot)
	if v == nil {
		return nil, nil
	}
	ci := sp.cols[i]
	sv, err := a.st.d.value(a.p.columns[ci].typ, a.p.columns[ci].override, v)
	if err != nil {
		return nil, fmt.Errorf("column %q: %w", a.p.columns[ci].name, err)
	}
	return sv, nil
}

// decodeSide decodes a side row back into its record.
func (a *applier) decodeSide(ctx context.Context, src int, r sideRow) (key, value fields, err error) {
	dec := a.p.sources[src].decoder
	if key, err = dec.decodeKey(ctx, r.key); err != nil {
		return fields{}, fields{}, fmt.Errorf("side table record of topic %s: key: %w", r.topic, err)
	}
	if value, err = dec.decodeValue(ctx, r.value); err != nil {
		return fields{}, fields{}, fmt.Errorf("side table record of topic %s: value: %w", r.topic, err)
	}
	return key, value, nil
}

func (a *applier) sourceOf(topic string) int {
	for i, s := range a.p.sources {
		if s.topic == topic {
			return i
		}
	}
	return -1
}

// write applies entries (at most one per source and topic key) in tx. The
// rule (docs/ARCHITECTURE.md, "The sink"): the table holds exactly the rows
// whose owner record is live; a non-owner source's latest record per topic
// key lives in the side table, and a row's columns of that source are those
// of the latest-applied (highest seq) side row mapping to it, or null.
// Non-owner entries go first, so an owner row inserted in the same batch
// is filled from the side table as it stands after them.
func (a *applier) write(ctx context.Context, tx batchTx, entries []entry, seq int64) error {
	table, name := a.p.model.Table, a.p.model.Name
	keyCols := a.p.model.Key
	bySrc := make([][]entry, len(a.p.sources))
	if len(bySrc) == 1 {
		bySrc[0] = entries
	} else {
		n := make([]int, len(bySrc))
		for _, e := range entries {
			n[e.src]++
		}
		for src := range bySrc {
			bySrc[src] = make([]entry, 0, n[src])
		}
		for _, e := range entries {
			bySrc[e.src] = append(bySrc[e.src], e)
		}
	}
	for src, list := range bySrc {
		if src == a.p.owner || len(list) == 0 {
			continue
		}
		topic := a.p.sources[src].topic
		hashes := make([]string, len(list))
		for i, e := range list {
			hashes[i] = e.tk
		}
		old, err := a.st.sideByTopicKey(ctx, tx, name, topic, hashes)
		if err != nil {
			return err
		}
		affected := map[string][]any{} // row hash → raw row key
		var puts []sideRow
		var dels []string
		for _, e := range list {
			if o, ok := old[e.tk]; ok {
				k, v, err := a.decodeSide(ctx, src, o)
				if err != nil {
					return err
				}
				rk, err := a.rowKey(src, k, v)
				if err != nil {
					return fmt.Errorf("side table record of topic %s: %w", topic, err)
				}
				affected[o.rowKey] = rk
			}
			if e.value.none() || a.nullRowKey(src, e.key, e.value) {
				// A tombstone, or a record whose row key is null (a
				// nullable foreign key set to NULL): it belongs to no
				// row. The row it wrote before (affected above) is
				// cleared, and nothing is remembered.
				dels = append(dels, e.tk)
				continue
			}
			rk, err := a.rowKey(src, e.key, e.value)
			if err != nil {
				return recordError(e.rec, err)
			}
			h := hashValues(rk)
			affected[h] = rk
			puts = append(puts, sideRow{topic: topic, topicKey: e.tk, rowKey: h, seq: seq, key: e.rec.Key, value: e.rec.Value})
			seq++
		}
		if err := a.st.deleteSide(ctx, tx, name, topic, dels); err != nil {
			return fmt.Errorf("delete from the side table: %w", err)
		}
		if err := a.st.putSide(ctx, tx, name, puts); err != nil {
			return fmt.Errorf("write the side table: %w", err)
		}
		rowHashes := make([]string, 0, len(affected))
		for h := range affected {
			rowHashes = append(rowHashes, h)
		}
		latest, err := a.latestSide(ctx, tx, rowHashes)
		if err != nil {
			return err
		}
		cols := make([]string, len(a.p.sources[src].cols))
		for i, ci := range a.p.sources[src].cols {
			cols[i] = a.p.columns[ci].name
		}
		var updates [][]any
		for h, rk := range affected {
			var vals []any
			if r, ok := latest[sideKey{topic, h}]; ok {
				k, v, err := a.decodeSide(ctx, src, r)
				if err != nil {
					return err
				}
				if vals, err = a.sourceValues(src, k, v); err != nil {
					return err
				}
			} else {
				vals = make([]any, len(cols))
			}
			sk, err := a.storeKey(rk)
			if err != nil {
				return err
			}
			updates = append(updates, append(vals, sk...))
		}
		if err := a.st.updateRows(ctx, tx, table, keyCols, cols, updates); err != nil {
			return fmt.Errorf("update columns of topic %s: %w", topic, err)
		}
	}

	// The owner: tombstones delete rows, records upsert them, filled with
	// the other sources' columns from the side table.
	var dels [][]any
	type up struct {
		hash string
		row  []any  // the key and the owner's columns; the others' are filled below
		line []byte // or its COPY line, encoded ahead (row nil)
		ent  int    // the line's entry in owned
	}
	owned := bySrc[a.p.owner]
	nc := len(a.p.columns)
	var cells []any // one allocation for the rows not converted ahead
	ups := make([]up, 0, len(owned))
	// The owner's row key is converted (storeKey, storeKeyInto) or hashed
	// before the next record: one scratch slice serves every record.
	scratch := make([]any, len(a.p.sources[a.p.owner].keyFields))
	var lineTypes []string // set when any entry was encoded ahead
	for k, e := range owned {
		if e.line != nil {
			// Encoded with its decoding (a read model of one source);
			// converted below only if the text cannot be used.
			lineTypes = e.lineTypes
			ups = append(ups, up{line: e.line, ent: k})
			continue
		}
		if e.row != nil {
			// Converted with its decoding (a read model of one source:
			// nothing to fill, no hash to find side rows by).
			ups = append(ups, up{row: e.row})
			continue
		}
		rk, err := a.rowKeyInto(scratch, a.p.owner, e.key, e.key)
		if err != nil {
			return recordError(e.rec, err)
		}
		if e.value.none() {
			sk, err := a.storeKey(rk)
			if err != nil {
				return recordError(e.rec, err)
			}
			dels = append(dels, sk)
			continue
		}
		if cells == nil {
			cells = make([]any, len(owned)*nc)
		}
		i := len(ups)
		row := cells[i*nc : (i+1)*nc : (i+1)*nc]
		if err := a.storeKeyInto(row, rk); err != nil {
			return recordError(e.rec, err)
		}
		if err := a.sourceValuesInto(row, a.p.owner, e.key, e.value); err != nil {
			return recordError(e.rec, err)
		}
		u := up{row: row}
		if len(a.p.sources) > 1 { // the hash finds the other sources' side rows
			u.hash = hashValues(rk)
		}
		ups = append(ups, u)
	}
	if err := a.st.deleteRows(ctx, tx, table, keyCols, dels); err != nil {
		return fmt.Errorf("delete rows: %w", err)
	}
	if len(ups) == 0 {
		return nil
	}
	var fill map[sideKey]sideRow
	if len(a.p.sources) > 1 {
		hashes := make([]string, len(ups))
		for i, u := range ups {
			hashes[i] = u.hash
		}
		var err error
		if fill, err = a.latestSide(ctx, tx, hashes); err != nil {
			return err
		}
	}
	rows := make([][]any, len(ups))
	if lineTypes != nil { // a read model of one source: nothing to fill
		expand := func(i int) ([]any, error) {
			e := owned[ups[i].ent]
			d, err := a.decode(ctx, e.src, e.rec)
			if err != nil {
				if errors.Is(err, errUndecodable) {
					return nil, recordError(e.rec, err)
				}
				// A registry outage, a schema the read model cannot
				// read: the batch's, not the record's.
				return nil, &redecodeError{err}
			}
			row := make([]any, nc)
			if err := a.ownerRowInto(row, scratch, &d); err != nil {
				return nil, recordError(e.rec, err)
			}
			return row, nil
		}
		lines := make([][]byte, len(ups))
		for i, u := range ups {
			rows[i], lines[i] = u.row, u.line
		}
		if err := a.st.upsertEncoded(ctx, tx, table, a.p.columnNames(), len(keyCols), rows, lines, lineTypes, expand); err != nil {
			return fmt.Errorf("upsert rows: %w", err)
		}
		return nil
	}
	for i, u := range ups {
		row := u.row
		for src, sp := range a.p.sources {
			if src == a.p.owner {
				continue
			}
			r, ok := fill[sideKey{sp.topic, u.hash}]
			if !ok {
				continue
			}
			k, v, err := a.decodeSide(ctx, src, r)
			if err != nil {
				return err
			}
			if err := a.sourceValuesInto(row, src, k, v); err != nil {
				return err
			}
		}
		rows[i] = row
	}
	if err := a.st.upsertRows(ctx, tx, table, a.p.columnNames(), len(keyCols), rows); err != nil {
		return fmt.Errorf("upsert rows: %w", err)
	}
	return nil
}

// redecodeError is a failure to decode again, as values, a record of a
// batch encoded ahead (a registry outage, a schema the read model cannot
// read): the batch fails as it would have had the record failed its first
// decoding, never the record as a poison one.
type redecodeError struct{ err error }

func (e *redecodeError) Error() string { return "decode a record again: " + e.err.Error() }
func (e *redecodeError) Unwrap() error { return e.err }

// sideKey is a source topic and a row hash.
type sideKey struct{ topic, row string }

// latestSide returns, per source topic and row, the side row applied last.
func (a *applier) latestSide(ctx context.Context, tx batchTx, rowHashes []string) (map[sideKey]sideRow, error) {
	all, err := a.st.sideByRowKey(ctx, tx, a.p.model.Name, rowHashes)
	if err != nil {
		return nil, err
	}
	out := map[sideKey]sideRow{}
	for _, r := range all {
		k := sideKey{r.topic, r.rowKey}
		if cur, ok := out[k]; !ok || r.seq > cur.seq {
			out[k] = r
		}
	}
	return out, nil
}

// recordError ties a failure to the record that caused it.
func recordError(rec *kgo.Record, err error) error {
	return &PoisonError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Err: err, rec: rec}
}
