package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
)

// stream is one START_REPLICATION session: the walHandler that turns the
// WAL into changes for the Handler and confirms what they acknowledged.
type stream struct {
	src  *Source
	repl *pgconn.PgConn
	sql  *pgx.Conn // for re-reading rows whose TOASTed values were not sent
	h    Handler
	cp   *checkpoint
	r    walReader

	// shapes is the shape each configured table (by index) is decoded
	// with in this session; nil until its first RELATION (see evolve.go).
	shapes map[int]*relation.Table

	txn      *txnMark      // the open transaction's mark; nil between transactions
	reported pglogrepl.LSN // last LSN sent in a status update
	change   Change
	guard    stallGuard // answers the server while a hand-over blocks
}

func (st *stream) run(ctx context.Context, start pglogrepl.LSN) error {
	s := st.src
	st.r = newWALReader(st.repl, s.cfg.Slot, st, s.cfg.StatusInterval, &st.guard)
	if err := st.r.start(ctx, s.cfg.Publication, start); err != nil {
		return s.setupFailed(ctx, err)
	}
	s.log.Info("streaming", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "from_lsn", start)
	st.reported = start
	st.guard.confirmed(start)
	gctx, stopGuard := context.WithCancel(ctx)
	var guardDone sync.WaitGroup
	guardDone.Go(func() { st.guard.run(gctx, st.repl, s.cfg.StatusInterval, s.log) })
	defer func() {
		stopGuard()
		guardDone.Wait()
	}()
	err := st.r.run(ctx)
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return st.shutdown(ctx)
	}
	return err
}

// readDeadline is the read deadline last set, and on which connection (a
// new one, after a reconnect, always gets its own). The zero value sets
// one at the next arm.
type readDeadline struct {
	at   time.Time
	conn net.Conn
}

// arm makes sure conn's read deadline is at most maxReceiveWait after now
// and not after next (the next status update), moving it only when needed.
func (r *readDeadline) arm(conn net.Conn, now, next time.Time) error {
	if conn == r.conn && now.Before(r.at) && !r.at.After(next) {
		return nil
	}
	d := now.Add(maxReceiveWait)
	if next.Before(d) {
		d = next
	}
	if err := conn.SetReadDeadline(d); err != nil {
		return err
	}
	r.at, r.conn = d, conn
	return nil
}

// status confirms what is durable. When nothing is in flight and no
// transaction is open, the server's WAL end from its last keepalive is
// durable too (it holds nothing for us), so the slot keeps advancing while
// only unpublished tables are written.
func (st *stream) status() pglogrepl.StandbyStatusUpdate {
	if st.txn == nil {
		st.cp.skipTo(st.r.serverEnd)
	}
	return pglogrepl.StandbyStatusUpdate{WALWritePosition: st.cp.advance()}
}

func (st *stream) statusSent(u pglogrepl.StandbyStatusUpdate) {
	lsn := u.WALWritePosition
	if lsn != st.reported {
		st.src.log.Debug("confirmed", "lsn", lsn, "in_flight_txns", st.cp.inFlight())
	}
	st.reported = lsn
	st.guard.confirmed(lsn)
}

func (st *stream) keepalive(pglogrepl.LSN) error { return nil }

// message ignores logical decoding messages: nothing emits them for the
// stream yet.
func (st *stream) message(context.Context, *pglogrepl.LogicalDecodingMessage) error { return nil }

// shutdown stops reading, waits for what was handed over to be
// acknowledged, and confirms it.
func (st *stream) shutdown(ctx context.Context) error {
	s := st.src
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	flushErr := st.h.Flush(fctx)
	lsn := st.cp.advance()
	if err := pglogrepl.SendStandbyStatusUpdate(fctx, st.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn}); err != nil {
		return errors.Join(flushErr, fmt.Errorf("send final standby status: %w", err))
	}
	s.log.Info("stopped streaming", "confirmed_lsn", lsn, "unconfirmed_txns", st.cp.inFlight())
	if flushErr != nil {
		return fmt.Errorf("flush on shutdown (unacknowledged changes will be replayed on restart): %w", flushErr)
	}
	return nil
}

func (st *stream) begin() error {
	st.txn = st.cp.begin()
	return nil
}

func (st *stream) commit(_ context.Context, _, end pglogrepl.LSN) error {
	st.cp.seal(st.txn, end)
	st.txn = nil
	return nil
}

func (st *stream) row(ctx context.Context, op Op, rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error {
	t := rel.table
	c := &st.change
	*c = st.r.change(op, rel)
	var err error
	if oldTuple != nil {
		if c.Old, err = decodeTuple(t, oldTuple); err != nil {
			return fmt.Errorf("%s at LSN %s, old row: %w", op.verb(), c.LSN, err)
		}
	}
	if newTuple != nil {
		if c.New, err = decodeTuple(t, newTuple); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), c.LSN, err)
		}
		if err := st.resolveUnchanged(ctx, c, newTuple); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), c.LSN, err)
		}
		if c.New == nil {
			// The row is gone by now: a later change in the WAL removes
			// its current key (a DELETE, or an UPDATE moving it away).
			// Nothing later names the key this UPDATE moved it from,
			// so that one is removed here.
			if !goneKeyChange(c) {
				return nil
			}
			c.Op = OpDelete
		}
	}
	c.Ack = st.cp.track(st.txn)
	return st.h.Handle(ctx, c)
}

func decodeTuple(t *relation.Table, tuple *pglogrepl.TupleData) ([]any, error) {
	if len(tuple.Columns) != len(t.Columns) {
		return nil, fmt.Errorf("table %s: tuple has %d columns, want %d", t.QualifiedName(), len(tuple.Columns), len(t.Columns))
	}
	row := make([]any, len(t.Columns))
	strs := rowStrings(t, tuple)
	for i, col := range tuple.Columns {
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			if !t.Columns[i].Unused {
				row[i] = relation.UnchangedTOAST{}
			}
		case pglogrepl.TupleDataTypeText:
			if t.Columns[i].Unused {
				continue
			}
			if isPlainString(t.Columns[i].Type.Kind) {
				row[i], strs = strs[:len(col.Data)], strs[len(col.Data):]
				continue
			}
			v, err := relation.DecodeText(&t.Columns[i].Type, col.Data)
			if err != nil {
				return nil, valueError(t, tupleKey(t, tuple), i, err)
			}
			row[i] = v
		default:
			return nil, fmt.Errorf("table %s column %s: unexpected tuple data type %q", t.QualifiedName(), t.Columns[i].Name, col.DataType)
		}
	}
	return row, nil
}

// resolveUnchanged replaces unchanged TOAST markers in c.New with real
// values, so a record always carries the row's full state. When the
// table's replica identity is FULL they come from the old tuple: exact.
// Otherwise the whole row is re-read by its primary key (see [reread]) and
// c.New becomes the row as of this change or later: a state the row really
// had, never this change's columns beside later values of the others. The
// changes after it follow in the WAL, so the topic converges. When the row
// no longer exists c.New becomes nil.
func (st *stream) resolveUnchanged(ctx context.Context, c *Change, newTuple *pglogrepl.TupleData) error {
	missing := false
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
	if !missing {
		return nil
	}
	t := c.Table
	if len(t.PrimaryKey) == 0 {
		return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the table has no primary key to re-read them by: set REPLICA IDENTITY FULL on it", t.QualifiedName())
	}
	at, err := keyIndexes(t)
	if err != nil {
		return err
	}
	var keys []string
	for n, idx := range at {
		if newTuple.Columns[idx].DataType != pglogrepl.TupleDataTypeText {
			return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the value of key column %s too: set REPLICA IDENTITY FULL on it", t.QualifiedName(), t.PrimaryKey[n])
		}
		keys = append(keys, string(newTuple.Columns[idx].Data))
	}
	row, dropped, err := st.reread(ctx, t, c.XID, keys)
	if err != nil {
		return fmt.Errorf("re-read unchanged TOAST columns: %w", err)
	}
	if row == nil {
		c.New = nil
		return nil
	}
	// A column dropped since this change keeps the change's value; an
	// unchanged TOAST value of one is lost to the re-read.
	for _, i := range dropped {
		if _, ok := c.New[i].(relation.UnchangedTOAST); ok {
			return fmt.Errorf("table %s key %s column %q: the UPDATE left its TOASTed value unsent and the column has been dropped since, so it cannot be re-read: set REPLICA IDENTITY FULL on tables whose large columns may be dropped while replicator lags; to go on, drop the slot and the state file and take a new snapshot (docs/OPERATIONS.md)",
				t.QualifiedName(), tupleKey(t, newTuple), t.Columns[i].Name)
		}
		row[i] = c.New[i]
	}
	c.New = row
	return nil
}

// Bounds of the wait for a committed transaction to become visible.
const (
	minVisibleWait = time.Millisecond
	maxVisibleWait = 100 * time.Millisecond
)

// reread reads the row of t whose primary key has the given text values,
// as of transaction xid or later, and returns it decoded (nil when the row
// does not exist).
//
// The walsender may send a transaction as soon as its commit record is
// flushed, a moment before the transaction becomes visible to other
// sessions. A plain re-read in that moment sees the row before the change:
// published as the row's state, with no later change to correct it, the
// topic would never converge. So the statement also asks whether xid is
// visible in its own snapshot, and is repeated until it is: then the row it
// read is xid's version or a later one.
//
// The catalog may be ahead of the stream: a column of t may have been
// dropped since. The columns t has that the table no longer has are then
// read as NULL and listed in dropped, for the caller to fill.
//
// xid is the 32-bit id from the BEGIN message; txid_current_snapshot's ids
// carry the epoch, which is taken from the snapshot's xmax (xid is older
// than xmax, so it is in xmax's epoch or the one before). The key values
// are sent as text, as the server printed them: pgx passes a string in text
// format for any type, whereas some decoded values (a time.Duration) have
// no parameter encoding of their own.
func (st *stream) reread(ctx context.Context, t *relation.Table, xid uint32, keys []string) (row []any, dropped []int, err error) {
	sql, args := rereadSQL(t, xid, keys, nil)
	for wait := minVisibleWait; ; wait = min(2*wait, maxVisibleWait) {
		row, visible, err := st.rereadOnce(ctx, t, sql, args)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42703" && dropped == nil { // undefined_column
			if dropped, err = st.droppedColumns(ctx, t); err != nil {
				return nil, nil, err
			}
			sql, args = rereadSQL(t, xid, keys, dropped)
			continue
		}
		if err != nil || visible {
			return row, dropped, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, nil, fmt.Errorf("wait for transaction %d to become visible: %w", xid, ctx.Err())
		case <-timer.C:
		}
	}
}

// rereadSQL is reread's statement and arguments; the columns at the
// indexes in dropped are read as NULL.
func rereadSQL(t *relation.Table, xid uint32, keys []string, dropped []int) (string, []any) {
	cols := make([]string, len(t.Columns))
	for i, col := range t.Columns {
		cols[i] = "t." + pgx.Identifier{col.Name}.Sanitize()
		if slices.Contains(dropped, i) {
			cols[i] = "NULL"
		}
	}
	args := []any{pgx.QueryResultFormats{pgx.TextFormatCode}, int64(xid)}
	where := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		args = append(args, keys[i])
		where[i] = fmt.Sprintf("t.%s = $%d", pgx.Identifier{k}.Sanitize(), len(args)-1)
	}
	sql := `SELECT txid_visible_in_snapshot(x.id, x.s), t.ctid IS NOT NULL, ` + strings.Join(cols, ", ") + `
		FROM (SELECT s, (((txid_snapshot_xmax(s) >> 32)
				- CASE WHEN $1::bigint >= (txid_snapshot_xmax(s) & 4294967295) THEN 1 ELSE 0 END) << 32) | $1::bigint AS id
			FROM txid_current_snapshot() s) x
		LEFT JOIN ` + pgx.Identifier{t.Schema, t.Name}.Sanitize() + ` t ON ` + strings.Join(where, " AND ")
	return sql, args
}

// droppedColumns lists the indexes of t's columns the table no longer has.
func (st *stream) droppedColumns(ctx context.Context, t *relation.Table) ([]int, error) {
	rows, err := st.sql.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
		pgx.Identifier{t.Schema, t.Name}.Sanitize())
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

// rereadOnce runs reread's statement once.
func (st *stream) rereadOnce(ctx context.Context, t *relation.Table, sql string, args []any) (row []any, visible bool, err error) {
	rows, err := st.sql.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, false, fmt.Errorf("%s: %w", t.QualifiedName(), err)
		}
		return nil, false, fmt.Errorf("%s: the re-read returned no row", t.QualifiedName())
	}
	raw := rows.RawValues()
	if string(raw[0]) != "t" {
		return nil, false, nil
	}
	if string(raw[1]) != "t" {
		return nil, true, nil // gone
	}
	row, err = decodeRow(t, raw[2:])
	return row, true, err
}

// goneKeyChange reports whether c, an UPDATE whose row was gone when
// re-read, may have moved the row away from a key that must now be
// removed: its old tuple holds the key. PostgreSQL sends the old tuple when
// the replica identity changed, which under the default identity means the
// key did. Under an identity index that changed while the key did not, the
// delete is early but harmless: the row is gone, and a later change in the
// WAL removes that key anyway.
func goneKeyChange(c *Change) bool {
	if c.Op != OpUpdate || c.Old == nil {
		return false
	}
	for _, k := range c.Table.PrimaryKey {
		_, idx, found := c.Table.Column(k)
		if !found || c.Old[idx] == nil {
			return false // not sent: the identity is not the key
		}
	}
	return true
}

// keyIndexes returns the positions of t's primary key columns. The key
// list is kept across a schema change (shapeFromRelation) and can go stale
// when a key column is renamed or dropped while streaming: that is an
// error naming the column, never an index of -1.
func keyIndexes(t *relation.Table) ([]int, error) {
	at := make([]int, len(t.PrimaryKey))
	for n, k := range t.PrimaryKey {
		_, i, found := t.Column(k)
		if !found {
			return nil, fmt.Errorf("table %s: primary key column %s is no longer in the stream's shape of the table (columns [%s]): it was renamed or dropped while streaming; restore it, or drop the slot and the state file and take a new snapshot (docs/OPERATIONS.md)",
				t.QualifiedName(), k, columnNames(t))
		}
		at[n] = i
	}
	return at, nil
}

// tupleKey renders the key of a pgoutput tuple for error messages.
func tupleKey(t *relation.Table, tuple *pglogrepl.TupleData) string {
	return rowKey(t, func(i int) ([]byte, bool) {
		if i >= len(tuple.Columns) || tuple.Columns[i].DataType != pglogrepl.TupleDataTypeText {
			return nil, false
		}
		return tuple.Columns[i].Data, true
	})
}
