package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
)

// Unchanged TOAST values: an UPDATE that did not touch a large column
// sends it as "unchanged", without its value. A record always carries the
// row's full state, so the value is filled in: from the old tuple under
// REPLICA IDENTITY FULL (exact, fillFromOld), otherwise by re-reading the
// row by its primary key. The re-read must return a state the row really
// had, at or after the change: never the one before (published last, it
// would never be corrected), never this change's columns beside later
// values of the others.
//
// Re-reads are batched per transaction and pipelined across
// transactions. From the first change that needs one, every change is held
// (st.held), in WAL order, and tracked in the checkpoint at once (its Ack
// pending); at COMMIT the transaction's mark is sealed and its held
// changes go, as one batch, to the re-read pipeline (rereadpipe.go), while
// the WAL reader goes on with the next transactions. The pipeline is one
// FIFO: its reader re-reads the batches in order (a statement per table
// and chunk; the batches waiting behind one are joined to it, so small
// transactions share statements, each key read as of its own
// transaction), its hand-over gives the changes to the handler in order, and
// while anything is in it every later change is held and queued behind it
// too. So the handler gets the changes in WAL order, as without re-reads:
// a later transaction's change of a key is never handed over before an
// earlier one's. The checkpoint stays exact because a transaction is
// confirmed only once every change of it was acknowledged, and a held
// change is acknowledged only after its hand-over (or, when its row was
// gone and it is dropped, at the point of its hand-over): a stop with
// changes in flight confirms nothing past them. Everything else that calls
// the handler or uses the SQL connection (RELATION, TRUNCATE, replicator's
// messages) first drains the pipeline.
//
// The statement reads only the columns that were not sent, and whether the
// row's current version was written by the change's own transaction (xmin
// = its xid). When it was, and no later change of the transaction names
// the key, that version is the one this change produced: its unsent
// columns are exactly the change's, and the change's own columns plus them
// are the row as the change left it. Any other row (updated again since,
// by a later transaction (read by the WAL reader already, or not yet) or a
// later change of this one, or written in a subtransaction) is re-read
// whole, as it is now: a later state it really had, whose changes in
// between follow in the WAL, and so in the pipeline. A row gone drops the
// change (a later DELETE or key change in the WAL removes its key), except
// a key-changing UPDATE, which becomes a delete of its old key: nothing
// later names that one.
//
// When the transaction cannot be read to its end first (maxHeld changes
// held, or a RELATION or TRUNCATE in between) the held rows go to the
// pipeline as they are and are re-read whole, which needs nothing from the
// rest of the transaction.

// maxHeld and maxHeldBytes bound the changes held for a batched re-read,
// by count and by the bytes of their tuples as received; beyond either,
// they go to the pipeline (re-read whole) before the COMMIT. The bytes
// matter for the changes held behind a re-read that need none: they carry
// all their values, and may be large whatever the table being re-read.
const (
	maxHeld      = 4096
	maxHeldBytes = 16 << 20
)

// heldChange is a change waiting in st.held.
type heldChange struct {
	c Change
	// toast: c.New holds unchanged TOAST values to re-read, by keys (the
	// text of the primary key columns after the change).
	toast bool
	keys  []string
	// named are the rows the change touches (newKey after it, oldKey
	// before it when sent), as table index and key text; "" when the
	// table has no primary key.
	newKey, oldKey string
	// gone: the row was gone when re-read and the change is dropped.
	gone bool
	// size is the bytes of the change's tuples as received, about what
	// its decoded values take until it is handed over.
	size int
}

// fillFromOld replaces unchanged TOAST markers in c.New with the old
// tuple's values under REPLICA IDENTITY FULL, and reports whether any are
// left to re-read.
func fillFromOld(c *Change) (missing bool) {
	for i, v := range c.New {
		if _, ok := v.(relation.UnchangedTOAST); ok {
			if c.Old != nil && c.Table.IdentityFull {
				if _, still := c.Old[i].(relation.UnchangedTOAST); !still {
					c.New[i] = c.Old[i]
					continue
				}
			}
			missing = true
		}
	}
	return missing
}

// hold adds c to st.held; toast says it needs a re-read. The tuples are
// read for the keys before they go (they alias the received message).
// The caller tracks its Ack, and pushes st.held once it holds maxHeld
// changes.
func (st *stream) hold(c *Change, oldTuple, newTuple *pglogrepl.TupleData, toast bool) error {
	t := c.Table
	h := heldChange{c: *c, toast: toast, size: tupleSize(oldTuple) + tupleSize(newTuple)}
	at, keyErr := keyIndexes(t)
	if toast {
		if len(t.PrimaryKey) == 0 {
			return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the table has no primary key to re-read them by: set REPLICA IDENTITY FULL on it", t.QualifiedName())
		}
		if keyErr != nil {
			return keyErr
		}
		for n, idx := range at {
			if newTuple.Columns[idx].DataType != pglogrepl.TupleDataTypeText {
				return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the value of key column %s too: set REPLICA IDENTITY FULL on it", t.QualifiedName(), t.PrimaryKey[n])
			}
			h.keys = append(h.keys, string(newTuple.Columns[idx].Data))
		}
	}
	if len(t.PrimaryKey) > 0 && keyErr == nil {
		h.newKey = namedKey(c.TableIndex, at, newTuple)
		h.oldKey = namedKey(c.TableIndex, at, oldTuple)
	}
	st.held = append(st.held, h)
	st.heldBytes += h.size
	return nil
}

// tupleSize is the size of tuple's values as received; 0 for nil.
func tupleSize(tuple *pglogrepl.TupleData) int {
	if tuple == nil {
		return 0
	}
	n := 0
	for _, col := range tuple.Columns {
		n += len(col.Data)
	}
	return n
}

// namedKey is the identity of the row with the key at the positions at of
// tuple, "" when tuple is nil or lacks a key column.
func namedKey(table int, at []int, tuple *pglogrepl.TupleData) string {
	if tuple == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(table))
	for _, i := range at {
		if i >= len(tuple.Columns) || tuple.Columns[i].DataType != pglogrepl.TupleDataTypeText {
			return ""
		}
		b.WriteByte(0) // text values never hold a NUL
		b.Write(tuple.Columns[i].Data)
	}
	return b.String()
}

// Bounds of the changes re-read per statement (a chunk). The pipeline's
// reader runs a transaction's statements a chunk at a time, so the
// hand-over of one chunk overlaps the re-read of the next; a chunk holds
// about rereadChunkBytes of re-read values (nextChunk), which bounds the
// memory the chunks in flight take whatever the size of the values. The
// size of a table's rows is learnt from its statements (rowSizes); a table
// not seen yet is taken to have rows of unseenRowBytes, so its first
// statement reads 4 keys: a few even if its values are very large.
// Statements of 1,024 keys read 8 KB values 15–20 % faster than statements of
// 256 (fewer round trips); larger ones gained nothing more.
const (
	maxRereadChunk   = 1024
	rereadChunkBytes = 8 << 20
	unseenRowBytes   = rereadChunkBytes / 4
)

// rowSizes is the size to expect of a re-read row per table (by qualified
// name), learnt from its statements that found rows; it belongs to the
// goroutine that re-reads.
type rowSizes map[string]int

// learn takes the average size of the rows a statement of t found. A
// larger size is taken at once, a smaller one halves the estimate at
// most: a statement of a few small rows (a row re-read whole after a
// later change shrank it) must not make the next statement read a
// thousand of the table's large ones.
func (r rowSizes) learn(t *relation.Table, avg int) {
	name := t.QualifiedName()
	if old, ok := r[name]; ok && avg < old/2 {
		avg = old / 2
	}
	r[name] = max(1, avg)
}

// of is the size to expect of a re-read row of t.
func (r rowSizes) of(t *relation.Table) int {
	if n, ok := r[t.QualifiedName()]; ok {
		return n
	}
	return unseenRowBytes
}

// nextChunk returns the end (exclusive) of the first chunk of held: the
// changes before the first change to re-read that would take the chunk
// past maxRereadChunk re-reads or rereadChunkBytes of rows (sizes), or all
// of them. A chunk re-reads one change at least.
func nextChunk(held []heldChange, sizes rowSizes) int {
	n, bytes := 0, 0
	for i := range held {
		if !held[i].toast {
			continue
		}
		b := sizes.of(held[i].c.Table)
		if n > 0 && (n == maxRereadChunk || bytes+b > rereadChunkBytes) {
			return i
		}
		n++
		bytes += b
	}
	return len(held)
}

// lastToName reports, per held change, whether it may be re-read narrowly:
// it needs a re-read, the transaction was read to its end, and no later
// change of it names the same row.
func lastToName(held []heldChange, complete bool) []bool {
	narrow := make([]bool, len(held))
	if !complete {
		return narrow
	}
	later := map[string]bool{}
	for i := len(held) - 1; i >= 0; i-- {
		h := &held[i]
		narrow[i] = h.toast && h.newKey != "" && !later[h.newKey]
		later[h.newKey], later[h.oldKey] = true, true
	}
	return narrow
}

// rereadHeld fills in the unchanged TOAST values of the held changes, one
// statement per table for the rows re-read narrowly (narrow), one for
// those re-read whole.
func (st *stream) rereadHeld(ctx context.Context, held []heldChange, narrow []bool) error {
	var tables []*relation.Table
	for i := range held {
		if held[i].toast && !slices.Contains(tables, held[i].c.Table) {
			tables = append(tables, held[i].c.Table)
		}
	}
	for _, t := range tables {
		var thin, whole []int
		for i := range held {
			switch {
			case !held[i].toast || held[i].c.Table != t:
			case narrow[i]:
				thin = append(thin, i)
			default:
				whole = append(whole, i)
			}
		}
		if len(thin) > 0 {
			again, err := st.rereadThin(ctx, t, held, thin)
			if err != nil {
				return err
			}
			whole = append(whole, again...)
			slices.Sort(whole)
		}
		if len(whole) > 0 {
			if err := st.rereadWhole(ctx, t, held, whole); err != nil {
				return err
			}
		}
	}
	return nil
}

// rereadThin reads the unsent columns of the held changes at idx (of
// table t) and fills them in where the row's current version is the
// change's own; it returns the indexes to re-read whole.
func (st *stream) rereadThin(ctx context.Context, t *relation.Table, held []heldChange, idx []int) (whole []int, err error) {
	var cols []int
	for _, i := range idx {
		for j, v := range held[i].c.New {
			if _, ok := v.(relation.UnchangedTOAST); ok && !slices.Contains(cols, j) {
				cols = append(cols, j)
			}
		}
	}
	slices.Sort(cols)
	rows, err := st.rereadRows(ctx, t, xidsOf(held, idx), keysOf(held, idx), cols, nil)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" { // undefined_column: dropped since
		return idx, nil // re-read whole, which copes with it
	}
	if err != nil {
		return nil, reReadError(held[idx[0]].c, err)
	}
	for n, i := range idx {
		r := rows[n]
		c := &held[i].c
		switch {
		case !r.exists:
			st.gone(&held[i])
		case !r.mine:
			whole = append(whole, i)
		default:
			for k, j := range cols {
				if _, ok := c.New[j].(relation.UnchangedTOAST); ok {
					c.New[j] = r.vals[k]
				}
			}
		}
	}
	return whole, nil
}

// rereadWhole replaces the rows of the held changes at idx (of table t)
// with the rows as they are now.
func (st *stream) rereadWhole(ctx context.Context, t *relation.Table, held []heldChange, idx []int) error {
	var dropped []int
	rows, err := st.rereadRows(ctx, t, xidsOf(held, idx), keysOf(held, idx), nil, nil)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" { // undefined_column
		if dropped, err = st.droppedColumns(ctx, t); err == nil {
			rows, err = st.rereadRows(ctx, t, xidsOf(held, idx), keysOf(held, idx), nil, dropped)
		}
	}
	if err != nil {
		return reReadError(held[idx[0]].c, err)
	}
	for n, i := range idx {
		c := &held[i].c
		if !rows[n].exists {
			st.gone(&held[i])
			continue
		}
		row := rows[n].vals
		// A column dropped since this change keeps the change's value;
		// an unchanged TOAST value of one is lost to the re-read.
		for _, j := range dropped {
			if _, ok := c.New[j].(relation.UnchangedTOAST); ok {
				return fmt.Errorf("%s at LSN %s: table %s key %s column %q: the UPDATE left its TOASTed value unsent and the column has been dropped since, so it cannot be re-read: set REPLICA IDENTITY FULL on tables whose large columns may be dropped while replicator lags; to go on, drop the slot and the state file and take a new snapshot (docs/OPERATIONS.md)",
					c.Op.verb(), c.LSN, t.QualifiedName(), keyText(t, held[i].keys), t.Columns[j].Name)
			}
			row[j] = c.New[j]
		}
		c.New = row
	}
	return nil
}

// gone handles a held change whose row no longer exists: dropped, but a
// key-changing UPDATE becomes a delete of its old key (see goneKeyChange).
func (st *stream) gone(h *heldChange) {
	h.c.New = nil
	if !goneKeyChange(&h.c) {
		h.gone = true
		return
	}
	h.c.Op = OpDelete
}

func reReadError(c Change, err error) error {
	return fmt.Errorf("%s at LSN %s: re-read unchanged TOAST columns: %w", c.Op.verb(), c.LSN, err)
}

// xidsOf returns the transaction of each held change at idx.
func xidsOf(held []heldChange, idx []int) []uint32 {
	xids := make([]uint32, len(idx))
	for n, i := range idx {
		xids[n] = held[i].c.XID
	}
	return xids
}

func keysOf(held []heldChange, idx []int) [][]string {
	keys := make([][]string, len(idx))
	for n, i := range idx {
		keys[n] = held[i].keys
	}
	return keys
}

// keyText renders a key given as text for an error message.
func keyText(t *relation.Table, key []string) string {
	at, _ := keyIndexes(t)
	return rowKey(t, func(i int) ([]byte, bool) {
		if n := slices.Index(at, i); n >= 0 && n < len(key) {
			return []byte(key[n]), true
		}
		return nil, false
	})
}

// Bounds of the wait for a committed transaction to become visible.
const (
	minVisibleWait = time.Millisecond
	maxVisibleWait = 100 * time.Millisecond
)

// rereadRow is one row as re-read.
type rereadRow struct {
	exists bool
	// mine: the row's current version was written by the transaction
	// re-read for (its xmin is that xid).
	mine bool
	// vals are the values of the columns read, decoded: the whole row, or
	// the columns asked for in their order.
	vals []any
}

// rereadRows reads the rows of t whose primary keys have the given text
// values (one []string per row, in key column order), each as of its
// transaction (xids, one per key: the keys of several transactions are
// read in one statement) or later: the columns at cols (every column when
// cols is nil; those in dropped read as NULL). The result has one entry
// per key, in order.
//
// The walsender may send a transaction as soon as its commit record is
// flushed, a moment before the transaction becomes visible to other
// sessions. A plain re-read in that moment sees the row before the change:
// published as the row's state, with no later change to correct it, the
// topic would never converge. So the statement also asks whether each
// key's transaction is visible in its own snapshot, reads the row only
// when it is, and is repeated until all are: then each row it read is its
// transaction's version or a later one.
//
// A xid is the 32-bit id from the BEGIN message; txid_current_snapshot's
// ids carry the epoch, which is taken from the snapshot's xmax (the xid is
// older than xmax, so it is in xmax's epoch or the one before). Key values
// are sent as text arrays, as the server printed them, and cast to the key
// column's type in the statement (some decoded values, a time.Duration,
// have no parameter encoding of their own), so the join uses the key's
// index.
func (st *stream) rereadRows(ctx context.Context, t *relation.Table, xids []uint32, keys [][]string, cols, dropped []int) ([]rereadRow, error) {
	from, err := st.tableRef(ctx, t, false)
	if err != nil {
		return nil, err
	}
	sql, err := rereadSQL(t, from, cols, dropped)
	if err != nil {
		return nil, err
	}
	x := make([]int64, len(xids))
	for i, id := range xids {
		x[i] = int64(id)
	}
	args := []any{pgx.QueryResultFormats{pgx.TextFormatCode}, x}
	for n := range t.PrimaryKey {
		col := make([]string, len(keys))
		for i, k := range keys {
			col[i] = k[n]
		}
		args = append(args, col)
	}
	renamed := false
	for wait := minVisibleWait; ; wait = min(2*wait, maxVisibleWait) {
		st.src.rereads.Add(1)
		rows, visible, err := st.rereadOnce(ctx, t, sql, args, keys, cols)
		var pgErr *pgconn.PgError
		if t.OID != 0 && !renamed && errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			// Renamed since its name was looked up: look again.
			renamed = true
			if from, err = st.tableRef(ctx, t, true); err != nil {
				return nil, err
			}
			if sql, err = rereadSQL(t, from, cols, dropped); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil || visible {
			return rows, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("wait for transaction %d to become visible: %w", slices.Max(xids), ctx.Err())
		case <-timer.C:
		}
	}
}

// rereadSQL is rereadRows' statement, reading t from the table named from
// (quoted, see tableRef): $1 is the xid array, $2… one text array per key
// column. It returns one row per key whose transaction is
// visible: the visibility test is a WHERE on the snapshot and the key,
// below the join, so a key read too early reads no row of the table
// (costing no more than a probe of its own would, without its round trip).
func rereadSQL(t *relation.Table, from string, cols, dropped []int) (string, error) {
	at, err := keyIndexes(t)
	if err != nil {
		return "", err
	}
	if cols == nil {
		cols = make([]int, len(t.Columns))
		for i := range cols {
			cols[i] = i
		}
	}
	sel := make([]string, len(cols))
	for n, i := range cols {
		sel[n] = "t." + pgx.Identifier{t.Columns[i].Name}.Sanitize()
		if slices.Contains(dropped, i) {
			sel[n] = "NULL"
		}
	}
	arrays := make([]string, len(at))
	names := make([]string, len(at))
	on := make([]string, len(at))
	for n, i := range at {
		arrays[n] = fmt.Sprintf("$%d::text[]", n+2)
		names[n] = fmt.Sprintf("k%d", n)
		col := "t." + pgx.Identifier{t.Columns[i].Name}.Sanitize()
		if typ := t.Columns[i].Type.Name; typ != "" {
			on[n] = fmt.Sprintf("%s = k.k%d::%s", col, n, typ)
		} else { // a table not read from the catalog (tests): no index
			on[n] = fmt.Sprintf("%s::text = k.k%d", col, n)
		}
	}
	return `SELECT k.n, t.ctid IS NOT NULL, t.xmin = k.x::text::xid, ` + strings.Join(sel, ", ") + `
		FROM txid_current_snapshot() s
		CROSS JOIN unnest($1::bigint[], ` + strings.Join(arrays, ", ") + `) WITH ORDINALITY AS k(x, ` + strings.Join(names, ", ") + `, n)
		LEFT JOIN ` + from + ` t ON ` + strings.Join(on, " AND ") + `
		WHERE txid_visible_in_snapshot((((txid_snapshot_xmax(s) >> 32)
			- CASE WHEN k.x >= (txid_snapshot_xmax(s) & 4294967295) THEN 1 ELSE 0 END) << 32) | k.x, s)`, nil
}

// rereadOnce runs rereadRows' statement once; visible is false when a
// transaction was not visible yet (the statement then returned no row for
// its keys).
func (st *stream) rereadOnce(ctx context.Context, t *relation.Table, sql string, args []any, keys [][]string, cols []int) (out []rereadRow, visible bool, err error) {
	n := len(keys)
	rows, err := st.sql.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	out = make([]rereadRow, n)
	got, found, size := 0, 0, 0
	for rows.Next() {
		raw := rows.RawValues()
		i, err := strconv.Atoi(string(raw[0]))
		if err != nil || i < 1 || i > n {
			return nil, false, fmt.Errorf("%s: the re-read returned row %q of %d", t.QualifiedName(), raw[0], n)
		}
		r := &out[i-1]
		got++
		if string(raw[1]) != "t" {
			continue // gone
		}
		r.exists, r.mine = true, string(raw[2]) == "t"
		found++
		for _, b := range raw {
			size += len(b)
		}
		if cols == nil {
			if r.vals, err = decodeRow(t, raw[3:]); err != nil {
				return nil, false, err
			}
			continue
		}
		r.vals = make([]any, len(cols))
		for k, j := range cols {
			b := raw[3+k]
			if b == nil || t.Columns[j].Unused {
				continue
			}
			if r.vals[k], err = relation.DecodeText(&t.Columns[j].Type, b); err != nil {
				return nil, false, valueError(t, keyText(t, keys[i-1]), j, err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("%s: %w", t.QualifiedName(), err)
	}
	if got < n {
		return nil, false, nil // a transaction not visible yet: its keys were not read
	}
	if got != n {
		return nil, false, fmt.Errorf("%s: the re-read returned %d rows for %d keys", t.QualifiedName(), got, n)
	}
	if found > 0 { // a row that is gone says nothing of the others' size
		if st.rowBytes == nil {
			st.rowBytes = rowSizes{}
		}
		st.rowBytes.learn(t, size/found)
	}
	return out, true, nil
}

// tableRef is the quoted name to read t by in SQL now. A table read from
// the catalog is looked up by its OID, as it may have been renamed since
// start: its configured name then names nothing, or another table. The
// name is kept per OID for the stream's life; fresh looks it up again
// (after a statement found no table by it). Like rowBytes, it belongs to
// the goroutine that re-reads.
func (st *stream) tableRef(ctx context.Context, t *relation.Table, fresh bool) (string, error) {
	if t.OID == 0 { // not read from the catalog (tests)
		return pgx.Identifier{t.Schema, t.Name}.Sanitize(), nil
	}
	if ref, ok := st.relNames[t.OID]; ok && !fresh {
		return ref, nil
	}
	var schema, name string
	err := st.sql.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`,
		t.OID).Scan(&schema, &name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("table %s (OID %d) no longer exists: it was dropped", t.QualifiedName(), t.OID)
	}
	if err != nil {
		return "", fmt.Errorf("look up the name of table %s (OID %d): %w", t.QualifiedName(), t.OID, err)
	}
	if st.relNames == nil {
		st.relNames = map[uint32]string{}
	}
	ref := pgx.Identifier{schema, name}.Sanitize()
	st.relNames[t.OID] = ref
	return ref, nil
}

// droppedColumns lists the indexes of t's columns the table no longer has.
func (st *stream) droppedColumns(ctx context.Context, t *relation.Table) ([]int, error) {
	var rows pgx.Rows
	var err error
	if t.OID != 0 { // by OID: the table may have been renamed since start
		rows, err = st.sql.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, t.OID)
	} else {
		rows, err = st.sql.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
			pgx.Identifier{t.Schema, t.Name}.Sanitize())
	}
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", t.QualifiedName(), err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", t.QualifiedName(), err)
	}
	dropped := []int{}
	for i, col := range t.Columns {
		if !slices.Contains(names, col.Name) {
			dropped = append(dropped, i)
		}
	}
	return dropped, nil
}
