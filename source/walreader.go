package source

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/replicator/replicator/relation"
)

// walReader is the one receive loop over a START_REPLICATION session: the
// stream (stream.go) and the delete replay of a redone snapshot (ghosts.go)
// both read the WAL through it; a republish (republish.go) has no reader of
// its own: its requests and chunk watermarks are logical decoding messages
// that reach the stream's message callback. It owns what every reader of pgoutput
// needs and must get right once: the receive with its read deadline,
// keepalives and standby status updates, the relation map, the open
// transaction, and parsing; what a message means is its walHandler's.
//
// Row messages (INSERT, UPDATE, DELETE), nearly all of the traffic, are
// parsed by rowParser into reused tuples and handed over with one call; the
// rest goes through pglogrepl.Parse. Not safe for concurrent use: it is
// owned by the goroutine that calls run.
type walReader struct {
	conn *pgconn.PgConn
	slot string // for messages
	h    walHandler
	// interval is the period of standby status updates.
	interval time.Duration
	// guard, when set, answers the server while a handler call blocks.
	guard *stallGuard

	rels       map[uint32]*walRel
	txn        walTxn
	serverEnd  pglogrepl.LSN // newest server WAL end seen in a keepalive
	nextStatus time.Time
	rows       rowParser    // row messages, parsed without allocating
	deadline   readDeadline // bounds each receive (see armReceive)

	// tick, when set, is called from the receive loop every tickEvery
	// (the stream publishes its Stats with it): a clock comparison per
	// message rather than a call.
	tick      func(now time.Time)
	tickEvery time.Duration
	nextTick  time.Time

	// between, when set, is called before each receive with work the
	// handler does between messages (the stream hands a republished chunk
	// over in slices as the producer acknowledges them). While it reports
	// more, a receive waits at most betweenPoll, so the work goes on while
	// the WAL is idle: acknowledgements have no channel the receive could
	// wait on.
	between func(ctx context.Context) (more bool, err error)

	// gather holds the receive's wake-ups back while changes stream in.
	gather gather
}

// betweenPoll bounds a receive while the handler has work between
// messages: how late it may see the acknowledgements that let it go on.
const betweenPoll = time.Millisecond

// walTxn is the transaction being read: BEGIN seen, COMMIT not yet.
type walTxn struct {
	open bool
	lsn  pglogrepl.LSN // commit LSN (BEGIN's final LSN)
	time time.Time
	xid  uint32
}

// walRel is a pgoutput relation as a handler mapped it to a configured
// table.
type walRel struct {
	idx   int // -1: not configured (the publication holds more tables)
	table *relation.Table
	// at, when set, is per table column its position in the WAL's tuples
	// (-1: absent then); nil means the tuples have the table's columns.
	at []int
}

// walHandler is what a walReader calls for each message. Every method runs
// on the reader's goroutine, which owns the connection meanwhile; a method
// returns errStopReading to end run without an error.
type walHandler interface {
	// begin is called at BEGIN, with r.txn set.
	begin() error
	// commit is called at COMMIT, with r.txn still set. end is the end LSN
	// of the transaction, commitLSN its commit record's.
	commit(ctx context.Context, commitLSN, end pglogrepl.LSN) error
	// relation maps a RELATION message to a table; the reader keeps the
	// result for the rows that follow.
	relation(ctx context.Context, m *pglogrepl.RelationMessage) (*walRel, error)
	// row is called for a row change of a configured relation inside a
	// transaction. The tuples alias the received message: valid only
	// until row returns. oldTuple or newTuple is nil when not sent.
	row(ctx context.Context, op Op, rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error
	// truncate is called once per configured relation of a TRUNCATE.
	truncate(ctx context.Context, rel *walRel) error
	// message is called for a logical decoding message
	// (pg_logical_emit_message), transactional or not; sent only by
	// PostgreSQL 14 and later.
	message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error
	// keepalive is called after each keepalive, with the newest server
	// WAL end seen so far.
	keepalive(serverEnd pglogrepl.LSN) error
	// status returns the standby status update to send now.
	status() pglogrepl.StandbyStatusUpdate
	// statusSent is called once the update was sent.
	statusSent(u pglogrepl.StandbyStatusUpdate)
}

// errStopReading, returned by a walHandler method, ends walReader.run
// cleanly.
var errStopReading = errors.New("stop reading")

// maxReceiveWait bounds one blocking receive so that a stop request is seen
// promptly. The receive cannot watch run's ctx: cancelling a pgconn read
// closes the connection, and the final status update still has to go out
// on it.
const maxReceiveWait = 250 * time.Millisecond

func newWALReader(conn *pgconn.PgConn, slot string, h walHandler, interval time.Duration, guard *stallGuard) walReader {
	return walReader{conn: conn, slot: slot, h: h, interval: interval, guard: guard, rels: map[uint32]*walRel{}}
}

// start sends START_REPLICATION for the reader's slot from lsn, with
// pgoutput's protocol version 1 and, on PostgreSQL 14 and later, logical
// decoding messages.
func (r *walReader) start(ctx context.Context, publication string, lsn pglogrepl.LSN) error {
	args := []string{"proto_version '1'", "publication_names " + quoteLiteral(publication)}
	if serverMajor(r.conn) >= 14 {
		args = append(args, "messages 'true'")
	}
	err := pglogrepl.StartReplication(ctx, r.conn, r.slot, lsn, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		return fmt.Errorf("start replication on slot %s: %w", r.slot, err)
	}
	r.nextStatus = time.Now().Add(r.interval)
	r.gather = newGather(r.conn.Conn())
	return nil
}

// serverMajor is the server's major version from its server_version
// parameter ("16.4", "14.2 (Debian ...)"); 0 when unknown.
func serverMajor(conn *pgconn.PgConn) int {
	return majorVersion(conn.ParameterStatus("server_version"))
}

// majorVersion is serverMajor for a server_version text.
func majorVersion(v string) int {
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		v = v[:i]
	}
	n, _ := strconv.Atoi(v)
	return n
}

// run reads until ctx ends (it returns ctx's error), a handler method
// returns errStopReading (nil) or fails (its error), or the session ends.
func (r *walReader) run(ctx context.Context) error {
	defer r.gather.stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now() // once per message: reading the clock shows in the profile
		if r.tick != nil && !now.Before(r.nextTick) {
			r.tick(now)
			r.nextTick = now.Add(r.tickEvery)
		}
		if !now.Before(r.nextStatus) {
			if err := r.sendStatus(ctx); err != nil {
				return err
			}
		}
		until := r.nextStatus
		if r.between != nil {
			more, err := r.between(ctx)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return ctx.Err()
			default:
				return err
			}
			if poll := now.Add(betweenPoll); more && poll.Before(until) {
				until = poll
			}
		}
		if err := r.armReceive(now, r.gather.bound(now, until)); err != nil {
			return err
		}
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				r.gather.timedOut()
				continue
			}
			return fmt.Errorf("receive from slot %s: %w", r.slot, err)
		}
		r.gather.received()
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if r.guard != nil {
				r.guard.enter(now)
			}
			err := r.copyData(ctx, msg.Data)
			if r.guard != nil {
				r.guard.leave()
			}
			switch {
			case err == nil:
			case errors.Is(err, errStopReading):
				return nil
			case ctx.Err() != nil:
				// Stopped while a change was being handed over (Handle
				// blocked by back-pressure, a re-read): a stop like any
				// other. The interrupted change was never acknowledged.
				return ctx.Err()
			default:
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			return fmt.Errorf("replication stream on slot %s: %w", r.slot, errStreamEnded)
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
	}
}

// armReceive bounds the next blocking receive by maxReceiveWait and until
// (the next status update, or sooner), with a read deadline on the connection rather than a
// deadline context per message: that context costs a timer and a pgconn
// context watcher per message, a tenth of the receive loop's CPU in the
// stream profile (docs/BENCHMARKS.md, "What the profiles showed"). A
// deadline that has not passed and is not later than the next status
// update still holds, so a busy stream moves it a few times a second. A
// timeout leaves the connection usable (pgconn closes it on any other read
// error).
func (r *walReader) armReceive(now, until time.Time) error {
	if err := r.deadline.arm(r.conn.Conn(), now, until); err != nil {
		return fmt.Errorf("receive from slot %s: set read deadline: %w", r.slot, err)
	}
	return nil
}

// sendStatus sends the handler's standby status update.
func (r *walReader) sendStatus(ctx context.Context) error {
	u := r.h.status()
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, u); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	r.h.statusSent(u)
	r.nextStatus = time.Now().Add(r.interval)
	// pgconn clears the connection's deadline when a context it watched is
	// canceled during a call such as the one above: set it again.
	r.deadline = readDeadline{}
	return nil
}

func (r *walReader) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		if pkm.ServerWALEnd > r.serverEnd {
			r.serverEnd = pkm.ServerWALEnd
		}
		if pkm.ReplyRequested {
			r.nextStatus = time.Time{}
		}
		return r.h.keepalive(r.serverEnd)
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlogdata: %w", err)
		}
		return r.walData(ctx, xld.WALData)
	}
	return nil
}

func (r *walReader) walData(ctx context.Context, data []byte) error {
	if len(data) > 0 && (data[0] == 'I' || data[0] == 'U' || data[0] == 'D') {
		op, relID, oldTuple, newTuple, err := r.rows.parse(data)
		if err != nil {
			return err
		}
		rel := r.rels[relID]
		switch {
		case rel == nil:
			return fmt.Errorf("pgoutput: row for unknown relation %d", relID)
		case rel.idx < 0:
			return nil
		case !r.txn.open:
			return errors.New("pgoutput: row change outside a transaction")
		}
		return r.h.row(ctx, op, rel, oldTuple, newTuple)
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		r.txn = walTxn{open: true, lsn: m.FinalLSN, time: m.CommitTime, xid: m.Xid}
		return r.h.begin()
	case *pglogrepl.CommitMessage:
		if !r.txn.open {
			return errors.New("pgoutput: COMMIT without BEGIN")
		}
		err := r.h.commit(ctx, m.CommitLSN, m.TransactionEndLSN)
		r.txn.open = false
		return err
	case *pglogrepl.RelationMessage:
		rel, err := r.h.relation(ctx, m)
		if err != nil {
			return err
		}
		r.rels[m.RelationID] = rel
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel := r.rels[id]
			switch {
			case rel == nil:
				return fmt.Errorf("pgoutput: TRUNCATE of unknown relation %d", id)
			case rel.idx < 0:
				continue
			case !r.txn.open:
				return fmt.Errorf("pgoutput: TRUNCATE of %s outside a transaction", rel.table.QualifiedName())
			}
			if err := r.h.truncate(ctx, rel); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		return r.h.message(ctx, m)
	}
	return nil
}

// change starts a Change of rel in the open transaction.
func (r *walReader) change(op Op, rel *walRel) Change {
	return Change{Op: op, Table: rel.table, TableIndex: rel.idx, LSN: r.txn.lsn, CommitTime: r.txn.time, XID: r.txn.xid}
}
