package source

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	txn  *txnMark     // the open transaction's mark; nil between transactions
	held []heldChange // changes waiting to go to pipe (reread.go)
	// heldBytes is the size of held's tuples (heldChange.size).
	heldBytes int
	pipe      *rereadPipe // re-reads and hands over held changes (rereadpipe.go)
	// rowBytes is the size of a re-read row per table (reread.go's
	// nextChunk); the re-reads' goroutine's.
	rowBytes rowSizes
	// relNames is the quoted current name of each configured table
	// re-read, by OID (reread.go's tableRef); it belongs to the goroutine
	// that re-reads, too.
	relNames map[uint32]string
	reported pglogrepl.LSN // last LSN sent in a status update
	change   Change
	guard    stallGuard // answers the server while a hand-over blocks
	rowsSeen uint64     // row changes handed over by this goroutine since the last publishStats

	rp     *republisher // republishes tables on request (republish.go)
	window *chunkWindow // the republish chunk between its watermarks; nil outside
	// handing are the chunks past their high watermark whose rows are
	// not all handed over yet, oldest first (republish.go, handRows);
	// chunkMarks the marks of the chunks handed over, wholly or partly,
	// whose rows may not all be acknowledged.
	handing    []*handover
	chunkMarks []*txnMark
	// commits are the latest transactions read, for the republish's
	// check of its chunks' snapshots (commitring.go).
	commits *commitRing
	txnRows bool // the open transaction changed a configured table
	// cancelledJobs are the republish jobs cancelled in this session:
	// a chunk of theirs whose low watermark comes after the cancel
	// (the republisher emitted it before it noticed) is dropped too.
	cancelledJobs map[string]struct{}
	// failedTables are the tables of republish jobs failed in this
	// session (failTable): their chunks are dropped like a cancelled
	// job's.
	failedTables map[jobTable]struct{}
}

func (st *stream) run(ctx context.Context, start pglogrepl.LSN) error {
	s := st.src
	st.r = newWALReader(st.repl, s.cfg.Slot, st, s.cfg.StatusInterval, &st.guard)
	st.r.tick, st.r.tickEvery = st.publishStats, statsInterval
	st.r.between = st.handRows
	if err := st.r.start(ctx, s.cfg.Publication, start); err != nil {
		return s.setupFailed(ctx, err)
	}
	s.log.Info("streaming", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "from_lsn", start)
	st.reported = start
	st.guard.confirmed(start)
	s.stats.streaming(st, start)
	gctx, stopGuard := context.WithCancel(ctx)
	var guardDone sync.WaitGroup
	guardDone.Go(func() { st.guard.run(gctx, st.repl, s.cfg.StatusInterval, s.log) })
	defer func() {
		stopGuard()
		guardDone.Wait()
	}()
	// The republisher lives as long as this session: a failure of it
	// ends the session like a lost connection (retried when transient),
	// and its job goes on from its last acknowledged chunk. A failure of
	// one table is not one (republish.go, tableError): the republisher
	// records it and goes on.
	rctx, stopRead := context.WithCancelCause(ctx)
	st.commits = newCommitRing()
	st.rp = newRepublisher(s, st.commits)
	var rpDone sync.WaitGroup
	rpDone.Go(func() {
		if err := st.rp.loop(rctx); err != nil {
			stopRead(fmt.Errorf("republish: %w", err))
		}
	})
	defer func() {
		stopRead(nil)
		rpDone.Wait()
	}()
	// The re-read pipeline stops before the shutdown flushes the handler:
	// it must not call the handler after that.
	pctx, stopPipe := context.WithCancel(rctx)
	var pipeDone sync.WaitGroup
	pipeDone.Go(func() {
		if err := st.pipe.run(pctx); err != nil && pctx.Err() == nil {
			stopRead(err)
		}
	})
	err := st.r.run(rctx)
	stopPipe()
	pipeDone.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return st.shutdown(ctx)
	}
	if ctx.Err() == nil && rctx.Err() != nil {
		return context.Cause(rctx)
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

// message acts on replicator's own messages (republish.go) and ignores
// any other.
func (st *stream) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	if m.Prefix != MessagePrefix {
		return nil
	}
	// A signal may hand rows over (a republish chunk): after the changes
	// before it.
	if err := st.drain(ctx); err != nil {
		return err
	}
	return st.handleSignal(ctx, m)
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

func (st *stream) begin() error {
	st.txnRows = false
	st.txn = st.cp.begin()
	st.txn.commit = st.r.txn.time.UnixNano()
	return nil
}

func (st *stream) commit(ctx context.Context, _, end pglogrepl.LSN) error {
	if err := st.push(ctx, true); err != nil {
		return err
	}
	st.cp.seal(st.txn, end)
	st.txn = nil
	if st.txnRows {
		st.commits.add(st.r.txn.xid)
	}
	return nil
}

func (st *stream) row(ctx context.Context, op Op, rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error {
	st.txnRows = true
	if st.window != nil || len(st.handing) > 0 {
		if err := st.noteRow(rel, oldTuple, newTuple); err != nil {
			return err
		}
	}
	t := rel.table
	c := &st.change
	*c = st.r.change(op, rel)
	var err error
	if oldTuple != nil {
		if c.Old, err = decodeTuple(t, oldTuple); err != nil {
			return fmt.Errorf("%s at LSN %s, old row: %w", op.verb(), c.LSN, err)
		}
	}
	missing := false
	if newTuple != nil {
		if c.New, err = decodeTuple(t, newTuple); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), c.LSN, err)
		}
		missing = fillFromOld(c)
	}
	if missing || len(st.held) > 0 || st.pipe.busy() {
		// Behind a change waiting for its re-read, every change waits
		// too: the handler gets them in WAL order (see reread.go).
		if err := st.hold(c, oldTuple, newTuple, missing); err != nil {
			return fmt.Errorf("%s at LSN %s: %w", op.verb(), c.LSN, err)
		}
		st.held[len(st.held)-1].c.Ack = st.cp.track(st.txn)
		if len(st.held) >= maxHeld || st.heldBytes >= maxHeldBytes {
			return st.push(ctx, false)
		}
		return nil
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

// changeKeyIndexes returns the positions of the columns by which a
// republish matches a chunk's rows with the stream's changes
// (chunkWindow.note): the replica identity, which PostgreSQL sends in the
// old row of every DELETE and of an UPDATE that changes it, and in every
// new row. A DELETE under an identity that is another unique index than
// the primary key sends no primary key, and an UPDATE of the primary key
// alone no old row, so matching by the primary key would miss both. Under
// REPLICA IDENTITY FULL (the old row holds every column) or NOTHING (no
// UPDATE or DELETE is published), the primary key.
func changeKeyIndexes(t *relation.Table) ([]int, error) {
	if t.IdentityFull || len(t.Identity) == 0 {
		return keyIndexes(t)
	}
	at := make([]int, len(t.Identity))
	for n, k := range t.Identity {
		_, i, found := t.Column(k)
		if !found {
			return nil, fmt.Errorf("table %s: replica identity column %s is no longer in the stream's shape of the table (columns [%s]): it was renamed or dropped while streaming; restore it, or drop the slot and the state file and take a new snapshot (docs/OPERATIONS.md)",
				t.QualifiedName(), k, columnNames(t))
		}
		at[n] = i
	}
	return at, nil
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
