package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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

	// current transaction
	txn     *txnMark
	txnLSN  pglogrepl.LSN
	txnTime time.Time
	txnXID  uint32

	serverEnd  pglogrepl.LSN // newest server WAL end seen in a keepalive
	reported   pglogrepl.LSN // last LSN sent in a status update
	nextStatus time.Time
	change     Change
	rows       rowParser    // row messages, parsed without allocating
	deadline   readDeadline // bounds each receive (see armReceive)
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
	st.nextStatus = time.Now().Add(s.cfg.StatusInterval)

	for {
		if ctx.Err() != nil {
			return st.shutdown(ctx)
		}
		now := time.Now() // once per message: reading the clock shows in the profile
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
			if err := st.copyData(ctx, msg.Data); err != nil {
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
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
	}
}

// armReceive bounds the next blocking receive by maxReceiveWait and the
// next status update, with a read deadline on the connection rather than a
// deadline context per message: that context costs a timer and a pgconn
// context watcher per message, a tenth of the receive loop's CPU in the
// stream profile (docs/PERFORMANCE-NOTES.md). A deadline that has not
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
	case *pglogrepl.CommitMessage:
		if st.txn == nil {
			return errors.New("pgoutput: COMMIT without BEGIN")
		}
		st.cp.seal(st.txn, m.TransactionEndLSN)
		st.txn = nil
	case *pglogrepl.RelationMessage:
		return st.relation(m)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if rel := st.rels[id]; rel != nil && rel.idx >= 0 {
				return fmt.Errorf("TRUNCATE of %s at LSN %s: truncation is not supported yet; the replicator stops rather than leave deleted rows on the topic. Republish the entity after removing the slot position, or see docs/OPERATIONS.md", rel.table.QualifiedName(), st.txnLSN)
			}
		}
	}
	return nil
}

// relation maps a RELATION message to a configured table and checks that
// the columns pgoutput will send are the ones the table was loaded with.
func (st *stream) relation(m *pglogrepl.RelationMessage) error {
	idx, ok := st.src.byName[m.Namespace+"."+m.RelationName]
	if !ok {
		st.rels[m.RelationID] = &streamRel{idx: -1}
		return nil
	}
	t := &st.src.tables[idx]
	same := len(m.Columns) == len(t.Columns)
	for i := 0; same && i < len(m.Columns); i++ {
		same = m.Columns[i].Name == t.Columns[i].Name && m.Columns[i].DataType == t.Columns[i].Type.OID
	}
	if !same {
		have := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			have[i] = c.Name
		}
		got := make([]string, len(m.Columns))
		for i, c := range m.Columns {
			got[i] = c.Name
		}
		return fmt.Errorf("table %s changed while streaming (columns were [%s], WAL now has [%s]): schema changes are not supported yet; restart replicator after the change is complete",
			t.QualifiedName(), strings.Join(have, ", "), strings.Join(got, ", "))
	}
	st.rels[m.RelationID] = &streamRel{idx: idx, table: t}
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
			return err
		}
	}
	if newTuple != nil {
		if c.New, err = decodeTuple(t, newTuple); err != nil {
			return err
		}
		if err := st.resolveUnchanged(ctx, c, newTuple); err != nil {
			return err
		}
		if c.New == nil {
			return nil // the row is gone by now; the DELETE that follows in the WAL says so
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
			row[i] = relation.UnchangedTOAST{}
		case pglogrepl.TupleDataTypeText:
			if isPlainString(t.Columns[i].Type.Kind) {
				row[i], strs = strs[:len(col.Data)], strs[len(col.Data):]
				continue
			}
			v, err := relation.DecodeText(&t.Columns[i].Type, col.Data)
			if err != nil {
				return nil, fmt.Errorf("table %s column %s: %w", t.QualifiedName(), t.Columns[i].Name, err)
			}
			row[i] = v
		default:
			return nil, fmt.Errorf("table %s column %s: unexpected tuple data type %q", t.QualifiedName(), t.Columns[i].Name, col.DataType)
		}
	}
	return row, nil
}

// resolveUnchanged replaces unchanged TOAST markers in c.New with real
// values, so a record always carries the row's full state: from the old
// tuple when the table's replica identity is FULL, else by re-reading the
// row by its primary key. The re-read sees the row as it is now, possibly
// newer than this change; the changes in between follow in the WAL, so the
// topic still converges. When the row no longer exists c.New becomes nil.
// The key is sent as the text of newTuple, as the server printed it: pgx
// passes a string in text format for any type, whereas some decoded values
// (a time.Duration) have no parameter encoding of their own.
func (st *stream) resolveUnchanged(ctx context.Context, c *Change, newTuple *pglogrepl.TupleData) error {
	var missing []int
	for i, v := range c.New {
		if _, ok := v.(relation.UnchangedTOAST); ok {
			if c.Old != nil && c.Table.IdentityFull {
				if _, still := c.Old[i].(relation.UnchangedTOAST); !still {
					c.New[i] = c.Old[i]
					continue
				}
			}
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	t := c.Table
	if len(t.PrimaryKey) == 0 {
		return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the table has no primary key to re-read them by: set REPLICA IDENTITY FULL on it", t.QualifiedName())
	}
	cols := make([]string, len(missing))
	for i, idx := range missing {
		cols[i] = pgx.Identifier{t.Columns[idx].Name}.Sanitize()
	}
	var where []string
	var args []any
	for _, k := range t.PrimaryKey {
		_, idx, _ := t.Column(k)
		if newTuple.Columns[idx].DataType != pglogrepl.TupleDataTypeText {
			return fmt.Errorf("table %s: an UPDATE left TOASTed columns unsent and the value of key column %s too: set REPLICA IDENTITY FULL on it", t.QualifiedName(), k)
		}
		args = append(args, string(newTuple.Columns[idx].Data))
		where = append(where, fmt.Sprintf("%s = $%d", pgx.Identifier{k}.Sanitize(), len(args)))
	}
	sql := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize() + " WHERE " + strings.Join(where, " AND ")
	rows, err := st.sql.Query(ctx, sql, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return fmt.Errorf("re-read unchanged TOAST columns of %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("re-read unchanged TOAST columns of %s: %w", t.QualifiedName(), err)
		}
		c.New = nil
		return nil
	}
	raw := rows.RawValues()
	for i, idx := range missing {
		if raw[i] == nil {
			c.New[idx] = nil
			continue
		}
		v, err := relation.DecodeText(&t.Columns[idx].Type, raw[i])
		if err != nil {
			return fmt.Errorf("table %s column %s: %w", t.QualifiedName(), t.Columns[idx].Name, err)
		}
		c.New[idx] = v
	}
	return nil
}
