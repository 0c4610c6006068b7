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
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/replicator/replicator/relation"
)

// maxReceiveWait bounds one blocking receive so that a stop request is seen
// promptly. The receive cannot watch Run's ctx: cancelling a pgconn read
// closes the connection, and the final status update still has to go out
// on it.
const maxReceiveWait = 250 * time.Millisecond

// stream is one START_REPLICATION session.
type stream struct {
	src  *Source
	repl *pgconn.PgConn
	sql  *pgx.Conn // for re-reading rows whose TOASTed values were not sent
	h    Handler
	cp   *checkpoint

	rels map[uint32]*streamRel
	// shapes is the shape each configured table (by index) is decoded
	// with in this session; nil until its first RELATION (see evolve.go).
	shapes map[int]*relation.Table

	// current transaction
	txn     *txnMark
	txnLSN  pglogrepl.LSN
	txnTime time.Time
	txnXID  uint32

	serverEnd  pglogrepl.LSN // newest server WAL end seen in a keepalive
	reported   pglogrepl.LSN // last LSN sent in a status update
	nextStatus time.Time
	nextStats  time.Time // next publishStats
	rowsSeen   uint64    // row changes handed over since the last publishStats
	change     Change
	rows       rowParser    // row messages, parsed without allocating
	deadline   readDeadline // bounds each receive (see armReceive)
	guard      stallGuard   // answers the server while a hand-over blocks
}

// streamRel maps a pgoutput relation to a configured table.
type streamRel struct {
	idx   int // -1: not configured (publication holds more tables)
	table *relation.Table
}

func (st *stream) run(ctx context.Context, start pglogrepl.LSN) error {
	s := st.src
	err := pglogrepl.StartReplication(ctx, st.repl, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(s.cfg.Publication)},
	})
	if err != nil {
		return s.setupFailed(ctx, fmt.Errorf("start replication on slot %s: %w", s.cfg.Slot, err))
	}
	s.log.Info("streaming", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "from_lsn", start)
	st.rels = map[uint32]*streamRel{}
	st.reported = start
	st.guard.confirmed(start)
	st.nextStatus = time.Now().Add(s.cfg.StatusInterval)
	s.stats.streaming(st, start)
	gctx, stopGuard := context.WithCancel(ctx)
	var guardDone sync.WaitGroup
	guardDone.Go(func() { st.guard.run(gctx, st.repl, s.cfg.StatusInterval, s.log) })
	defer func() {
		stopGuard()
		guardDone.Wait()
	}()

	for {
		if ctx.Err() != nil {
			return st.shutdown(ctx)
		}
		now := time.Now() // once per message: reading the clock shows in the profile
		if !now.Before(st.nextStats) {
			st.publishStats(now)
		}
		if !now.Before(st.nextStatus) {
			if err := st.sendStatus(ctx); err != nil {
				return err
			}
		}
		if err := st.armReceive(now); err != nil {
			return err
		}
		msg, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive from slot %s: %w", s.cfg.Slot, err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			st.guard.enter(now)
			err := st.copyData(ctx, msg.Data)
			st.guard.leave()
			if err != nil {
				if ctx.Err() != nil {
					// Stopped while a change was being handed over (Handle
					// blocked by back-pressure, a re-read): a stop like any
					// other. The interrupted change was never acknowledged.
					return st.shutdown(ctx)
				}
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			return fmt.Errorf("replication stream on slot %s: %w", s.cfg.Slot, errStreamEnded)
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
	}
}

// armReceive bounds the next blocking receive by maxReceiveWait and the
// next status update, with a read deadline on the connection rather than a
// deadline context per message: that context costs a timer and a pgconn
// context watcher per message, a tenth of the receive loop's CPU in the
// stream profile (docs/BENCHMARKS.md, "What the profiles showed"). A deadline that has not
// passed and is not later than the next status update still holds, so a
// busy stream moves it a few times a second. A timeout leaves the
// connection usable (pgconn closes it on any other read error).
func (st *stream) armReceive(now time.Time) error {
	if err := st.deadline.arm(st.repl.Conn(), now, st.nextStatus); err != nil {
		return fmt.Errorf("receive from slot %s: set read deadline: %w", st.src.cfg.Slot, err)
	}
	return nil
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

func (st *stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		if pkm.ServerWALEnd > st.serverEnd {
			st.serverEnd = pkm.ServerWALEnd
		}
		if pkm.ReplyRequested {
			st.nextStatus = time.Time{}
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlogdata: %w", err)
		}
		return st.walData(ctx, xld.WALData)
	}
	return nil
}

// sendStatus confirms what is durable. When nothing is in flight and no
// transaction is open, the server's WAL end from its last keepalive is
// durable too (it holds nothing for us), so the slot keeps advancing while
// only unpublished tables are written.
func (st *stream) sendStatus(ctx context.Context) error {
	if st.txn == nil {
		st.cp.skipTo(st.serverEnd)
	}
	lsn := st.cp.advance()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, st.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if lsn != st.reported {
		st.src.log.Debug("confirmed", "lsn", lsn, "in_flight_txns", st.cp.inFlight())
	}
	st.reported = lsn
	st.guard.confirmed(lsn)
	st.nextStatus = time.Now().Add(st.src.cfg.StatusInterval)
	// pgconn clears the connection's deadline when a context it watched is
	// canceled during a call such as the one above: set it again.
	st.deadline = readDeadline{}
	return nil
}

// shutdown stops reading, waits for what was handed over to be
// acknowledged, and confirms it.
func (st *stream) shutdown(ctx context.Context) error {
	s := st.src
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	flushErr := st.h.Flush(fctx)
	st.publishStats(time.Now())
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

func (st *stream) walData(ctx context.Context, data []byte) error {
	if len(data) > 0 && (data[0] == 'I' || data[0] == 'U' || data[0] == 'D') {
		op, relID, oldTuple, newTuple, err := st.rows.parse(data)
		if err != nil {
			return err
		}
		return st.row(ctx, op, relID, oldTuple, newTuple)
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		st.txn = st.cp.begin()
		st.txnLSN, st.txnTime, st.txnXID = m.FinalLSN, m.CommitTime, m.Xid
		st.txn.commit = m.CommitTime.UnixNano()
	case *pglogrepl.CommitMessage:
		if st.txn == nil {
			return errors.New("pgoutput: COMMIT without BEGIN")
		}
		st.cp.seal(st.txn, m.TransactionEndLSN)
		st.txn = nil
	case *pglogrepl.RelationMessage:
		return st.relation(ctx, m)
	case *pglogrepl.TruncateMessage:
		return st.truncate(ctx, m)
	}
	return nil
}

func (st *stream) row(ctx context.Context, op Op, relID uint32, oldTuple, newTuple *pglogrepl.TupleData) error {
	rel := st.rels[relID]
	if rel == nil {
		return fmt.Errorf("pgoutput: row for unknown relation %d", relID)
	}
	if rel.idx < 0 {
		return nil
	}
	if st.txn == nil {
		return errors.New("pgoutput: row change outside a transaction")
	}
	t := rel.table
	c := &st.change
	*c = Change{Op: op, Table: t, TableIndex: rel.idx, LSN: st.txnLSN, CommitTime: st.txnTime, XID: st.txnXID}
	var err error
	if oldTuple != nil {
		if c.Old, err = decodeTuple(t, oldTuple); err != nil {
			return fmt.Errorf("%s at LSN %s, old row: %w", op.verb(), st.txnLSN, err)
		}
	}
	if newTuple != nil {
		if c.New, err = decodeTuple(t, newTuple); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), st.txnLSN, err)
		}
		if err := st.resolveUnchanged(ctx, c, newTuple); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), st.txnLSN, err)
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
	st.rowsSeen++
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
	var keys []string
	for _, k := range t.PrimaryKey {
		_, idx, _ := t.Column(k)
		if newTuple.Columns[idx].DataType != pglogrepl.TupleDataTypeText {
			return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the value of key column %s too: set REPLICA IDENTITY FULL on it", t.QualifiedName(), k)
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
		_, idx, _ := c.Table.Column(k)
		if c.Old[idx] == nil {
			return false // not sent: the identity is not the key
		}
	}
	return true
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
