// Package barereader is the ceiling that replicator's stream benchmarks are
// measured against: the least a client must do to consume a pgoutput slot.
// It starts replication, parses every pgoutput message, decodes every
// column's text into a typed value (unless Config.Lean), and confirms each
// transaction's end LSN as soon as it has been read. No Avro, no Kafka, no buffering.
//
// It confirms the way replicator's source does (status updates every
// StatusInterval, an immediate reply when the server asks for one, the
// server's WAL end confirmed while idle). It bounds each receive with a
// deadline context, which replicator gave up for a cheaper read deadline;
// on loopback a cheaper client is not a faster one (Config.Lean and the
// lean-reader benchmark measure that), so this reader is kept as the
// higher ceiling.
package barereader

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/replicator/replicator/bench/stats"
)

// maxReceiveWait bounds one blocking receive, as in replicator's source.
const maxReceiveWait = 250 * time.Millisecond

// Config configures [Run].
type Config struct {
	// URL is the PostgreSQL connection URL; the replication=database
	// parameter is added.
	URL string
	// Slot is an existing pgoutput slot; streaming starts at its
	// confirmed position.
	Slot string
	// Publication is passed to pgoutput.
	Publication string
	// AppName is the session's application_name (how the benchmark finds
	// this reader's walsender in pg_stat_replication). Default "barereader".
	AppName string
	// StatusInterval is how often the confirmed LSN is reported. Default 10s.
	StatusInterval time.Duration
	// Latency records, for every row, the time from its transaction's
	// commit (as stamped by PostgreSQL) to its arrival here.
	Latency bool
	// LatencySkip leaves the first LatencySkip rows out of the latencies
	// (a warm-up).
	LatencySkip int64
	// Lean reads as cheaply as a client can: a read deadline moved a few
	// times a second instead of a deadline context per receive, and of a
	// row change only its first byte (the row is counted, nothing parsed or
	// decoded). Not a ceiling: it is there to check that a cheaper client
	// is not a higher one (the lean-reader benchmark).
	Lean bool
	// Started, if set, is called once START_REPLICATION has succeeded.
	Started func()
}

// Result is what one [Run] read.
type Result struct {
	Rows      int64           `json:"rows"`
	Txns      int64           `json:"txns"`
	WALBytes  int64           `json:"wal_bytes"` // pgoutput payload bytes
	Confirmed string          `json:"confirmed_lsn"`
	Latency   stats.Latencies `json:"latency"`
}

// sessionParams are replicator's: the walsender formats values with them,
// so both readers cost the server the same.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, MDY",
	"TimeZone":           "UTC",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"replication":        "database",
}

// reader is the state of one Run.
type reader struct {
	cfg  Config
	conn *pgconn.PgConn
	res  Result

	rels      map[uint32][]uint32 // relation ID → column type OIDs
	row       []value             // decoded columns of the current tuple, reused
	inTxn     bool
	commitAt  time.Time
	confirmed pglogrepl.LSN // end of the last transaction read
	serverEnd pglogrepl.LSN // newest WAL end from a keepalive
	latencies []time.Duration
	next      time.Time // next status update
	deadline  time.Time // the connection's read deadline (Lean)
}

// Run streams the slot until ctx ends, then confirms what it read and
// returns the totals. It returns an error only for a failure before ctx
// ended.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.AppName == "" {
		cfg.AppName = "barereader"
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.Lean && cfg.Latency {
		return Result{}, errors.New("a lean reader does not look at rows' transactions: Lean and Latency do not go together")
	}
	pcfg, err := pgconn.ParseConfig(cfg.URL)
	if err != nil {
		return Result{}, fmt.Errorf("parse url: %w", err)
	}
	for k, v := range sessionParams {
		pcfg.RuntimeParams[k] = v
	}
	pcfg.RuntimeParams["application_name"] = cfg.AppName
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())

	err = pglogrepl.StartReplication(ctx, conn, cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", cfg.Publication)},
	})
	if err != nil {
		return Result{}, fmt.Errorf("start replication on slot %s: %w", cfg.Slot, err)
	}
	if cfg.Started != nil {
		cfg.Started()
	}
	r := &reader{cfg: cfg, conn: conn, rels: map[uint32][]uint32{}, next: time.Now().Add(cfg.StatusInterval)}
	err = r.loop(ctx)
	if ctx.Err() != nil {
		err = r.sendStatus(context.Background())
	}
	r.res.Confirmed = r.confirmed.String()
	r.res.Latency = stats.SummarizeLatencies(r.latencies)
	return r.res, err
}

func (r *reader) loop(ctx context.Context) error {
	for ctx.Err() == nil {
		if !time.Now().Before(r.next) {
			if err := r.sendStatus(ctx); err != nil {
				return err
			}
		}
		wait := time.Now().Add(maxReceiveWait)
		if r.next.Before(wait) {
			wait = r.next
		}
		msg, err := r.receive(wait)
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.copyData(msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
	}
	return nil
}

// receive reads one message, waiting until wait at most.
func (r *reader) receive(wait time.Time) (pgproto3.BackendMessage, error) {
	if !r.cfg.Lean {
		ctx, cancel := context.WithDeadline(context.Background(), wait)
		defer cancel()
		return r.conn.ReceiveMessage(ctx)
	}
	if deadlineStale(time.Now(), r.deadline, wait) {
		if err := r.conn.Conn().SetReadDeadline(wait); err != nil {
			return nil, fmt.Errorf("set read deadline: %w", err)
		}
		r.deadline = wait
	}
	return r.conn.ReceiveMessage(context.Background())
}

// deadlineStale reports whether the read deadline set must move before a
// receive that may wait until wait: it has passed, or it is later than
// wait. One that still holds is kept, so a busy stream moves it a few
// times a second rather than once per message.
func deadlineStale(now, set, wait time.Time) bool {
	return !now.Before(set) || set.After(wait)
}

// sendStatus confirms the last transaction read or, when idle, the
// server's WAL end.
func (r *reader) sendStatus(ctx context.Context) error {
	if !r.inTxn && r.serverEnd > r.confirmed {
		r.confirmed = r.serverEnd
	}
	r.next = time.Now().Add(r.cfg.StatusInterval)
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: r.confirmed}); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	// Defensive: should a call that watched a context have cleared the
	// connection's deadline, the next receive sets it again rather than
	// block without one.
	r.deadline = time.Time{}
	return nil
}

func (r *reader) copyData(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		r.serverEnd = max(r.serverEnd, pkm.ServerWALEnd)
		if pkm.ReplyRequested {
			r.next = time.Time{}
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlogdata: %w", err)
		}
		r.res.WALBytes += int64(len(xld.WALData))
		return r.message(xld.WALData)
	}
	return nil
}

func (r *reader) message(data []byte) error {
	if r.cfg.Lean && isRowChange(data) {
		r.res.Rows++
		return nil
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		r.inTxn, r.commitAt = true, m.CommitTime
	case *pglogrepl.CommitMessage:
		r.inTxn = false
		r.confirmed = m.TransactionEndLSN
		r.res.Txns++
	case *pglogrepl.RelationMessage:
		oids := make([]uint32, len(m.Columns))
		for i, c := range m.Columns {
			oids[i] = c.DataType
		}
		r.rels[m.RelationID] = oids
	case *pglogrepl.InsertMessage:
		return r.tuple(m.RelationID, m.Tuple)
	case *pglogrepl.UpdateMessage:
		if m.OldTuple != nil {
			if err := r.decodeTuple(m.RelationID, m.OldTuple); err != nil {
				return err
			}
		}
		return r.tuple(m.RelationID, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return r.tuple(m.RelationID, m.OldTuple)
	}
	return nil
}

// isRowChange reports whether a pgoutput message is an INSERT, UPDATE or
// DELETE.
func isRowChange(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
		return true
	}
	return false
}

// tuple decodes one row change's tuple and counts the row.
func (r *reader) tuple(rel uint32, t *pglogrepl.TupleData) error {
	if err := r.decodeTuple(rel, t); err != nil {
		return err
	}
	r.res.Rows++
	if r.cfg.Latency && r.res.Rows > r.cfg.LatencySkip {
		r.latencies = append(r.latencies, time.Since(r.commitAt))
	}
	return nil
}

func (r *reader) decodeTuple(rel uint32, t *pglogrepl.TupleData) error {
	oids, ok := r.rels[rel]
	if !ok {
		return fmt.Errorf("pgoutput: row for unknown relation %d", rel)
	}
	if t == nil {
		return errors.New("pgoutput: row change without a tuple")
	}
	if len(t.Columns) != len(oids) {
		return fmt.Errorf("relation %d: tuple has %d columns, want %d", rel, len(t.Columns), len(oids))
	}
	if cap(r.row) < len(oids) {
		r.row = make([]value, len(oids))
	}
	row := r.row[:len(oids)]
	for i, c := range t.Columns {
		v := &row[i]
		v.null = c.DataType != pglogrepl.TupleDataTypeText
		if v.null {
			continue
		}
		if err := decode(oids[i], c.Data, v); err != nil {
			return fmt.Errorf("relation %d column %d: %w", rel, i, err)
		}
	}
	return nil
}
