package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/replicator/replicator/relation"
)

// Redoing an interrupted snapshot from a new consistent point leaves one
// hole if nothing else is done: a row published by the interrupted run (or
// streamed before the snapshot state was lost) and deleted before the new
// consistent point is in neither the new snapshot nor the new stream, so
// its stale record would stay on the topic for good.
//
// So the old slot is not simply dropped: it is first copied to a "previous"
// slot (pg_copy_logical_replication_slot, same position), the main slot is
// recreated with a new exported snapshot, and before that snapshot is read
// the previous slot is streamed from its position up to the new consistent
// point, turning every DELETE (and the old key of every key-changing
// UPDATE) of a configured table into a tombstone. Only then is it dropped.
// A tombstone for a key that exists at the new consistent point is
// harmless: the new snapshot's record for it follows. Crash-safe: a
// previous slot left behind by an interrupted restart is older than the
// main slot and is kept and replayed instead of a new copy.

// prevSlotName is the slot holding the position of an abandoned snapshot.
func prevSlotName(slot string) string {
	const suffix = "_prev"
	if len(slot)+len(suffix) > 63 {
		slot = slot[:63-len(suffix)]
	}
	return slot + suffix
}

// keepPrevSlot makes sure a previous slot exists at (or before) the main
// slot's position, before the main slot is dropped.
func (s *Source) keepPrevSlot(ctx context.Context, conn *pgx.Conn) error {
	prev := prevSlotName(s.cfg.Slot)
	info, err := lookupSlot(ctx, conn, prev)
	if err != nil {
		return err
	}
	if info.exists {
		return nil // left by an interrupted restart: it is the older one
	}
	if _, err := conn.Exec(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)`, s.cfg.Slot, prev); err != nil {
		return fmt.Errorf("copy replication slot %s to %s (to tombstone rows deleted while the snapshot is redone): %w", s.cfg.Slot, prev, err)
	}
	return nil
}

// replayDeletes streams the previous slot, if there is one, up to until,
// hands a delete to h for every row deleted in it (and every old key of an
// update that changed the key), waits until all are acknowledged, and
// drops the slot. The main replication connection must stay idle
// meanwhile (its exported snapshot is in use), so this uses its own.
func (s *Source) replayDeletes(ctx context.Context, conn *pgx.Conn, until pglogrepl.LSN, h Handler) error {
	prev := prevSlotName(s.cfg.Slot)
	info, err := lookupSlot(ctx, conn, prev)
	if err != nil || !info.exists {
		return err
	}
	repl, err := connectReplication(ctx, s.cfg.URL)
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	err = pglogrepl.StartReplication(ctx, repl, prev, info.confirmed, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(s.cfg.Publication)},
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %s: %w", prev, err)
	}
	s.log.Info("tombstoning rows deleted since the interrupted snapshot's position", "slot", prev,
		"from_lsn", info.confirmed, "to_lsn", until)
	r := &deleteReplay{src: s, h: h, rels: map[uint32]*replayRel{}, cp: newCheckpoint(0)}
	r.mark = r.cp.begin()
	if err := r.run(ctx, repl, until); err != nil {
		return fmt.Errorf("tombstone rows deleted since slot %s's position %s: %w", prev, info.confirmed, err)
	}
	r.cp.seal(r.mark, until)
	if err := h.Flush(ctx); err != nil {
		return fmt.Errorf("wait for tombstone acknowledgements: %w", err)
	}
	if r.cp.advance() != until {
		return fmt.Errorf("tombstones: %d flushed but not acknowledged", r.mark.pending.Load())
	}
	// The replay connection holds the slot until it is closed.
	repl.Close(ctx)
	if err := s.dropSlotSQL(ctx, conn, prev); err != nil {
		return err
	}
	s.log.Info("tombstoned rows deleted while the snapshot was interrupted", "slot", prev,
		"from_lsn", info.confirmed, "to_lsn", until, "tombstones", r.n, "truncations", r.truncated)
	return nil
}

// dropSlotSQL drops a slot from an SQL connection, waiting for its last
// user to let go of it.
func (s *Source) dropSlotSQL(ctx context.Context, conn *pgx.Conn, name string) error {
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	for {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		// 55006: still active, released a moment after its connection ends.
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return fmt.Errorf("drop replication slot %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // poll until released
		}
	}
}

type deleteReplay struct {
	src  *Source
	h    Handler
	rels map[uint32]*replayRel
	cp   *checkpoint
	mark *txnMark
	n    int64 // deletes handed over
	// truncated counts the TRUNCATEs of configured tables handed over
	// (each tombstones what its topic holds).
	truncated int64

	inTxn   bool
	txnLSN  pglogrepl.LSN
	txnTime time.Time
	txnXID  uint32
	change  Change
}

// run reads until the walsender has sent everything before until: a
// transaction committed at or after it, or a keepalive past it outside a
// transaction. Status updates ask for keepalives and confirm nothing, so a
// crash here replays from the same position.
func (r *deleteReplay) run(ctx context.Context, repl *pgconn.PgConn, until pglogrepl.LSN) error {
	nextStatus := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !time.Now().Before(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, repl, pglogrepl.StandbyStatusUpdate{ReplyRequested: true}); err != nil {
				return fmt.Errorf("send standby status: %w", err)
			}
			nextStatus = time.Now().Add(maxReceiveWait)
		}
		rctx, cancel := context.WithDeadline(context.Background(), nextStatus)
		msg, err := repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		var data []byte
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			data = m.Data
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return fmt.Errorf("parse keepalive: %w", err)
			}
			if !r.inTxn && pkm.ServerWALEnd >= until {
				return nil
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("parse xlogdata: %w", err)
			}
			done, err := r.walData(ctx, xld.WALData, until)
			if err != nil || done {
				return err
			}
		}
	}
}

func (r *deleteReplay) walData(ctx context.Context, data []byte, until pglogrepl.LSN) (bool, error) {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return false, fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		r.inTxn = true
		r.txnLSN, r.txnTime, r.txnXID = m.FinalLSN, m.CommitTime, m.Xid
	case *pglogrepl.CommitMessage:
		r.inTxn = false
		return m.CommitLSN >= until, nil
	case *pglogrepl.RelationMessage:
		r.rels[m.RelationID] = r.relation(m)
	case *pglogrepl.DeleteMessage:
		return false, r.tombstone(ctx, m.RelationID, m.OldTuple, nil)
	case *pglogrepl.UpdateMessage:
		if m.OldTuple != nil {
			return false, r.tombstone(ctx, m.RelationID, m.OldTuple, m.NewTuple)
		}
	case *pglogrepl.TruncateMessage:
		return false, r.truncate(ctx, m)
	}
	return false, nil
}

// replayRel is a relation of the replayed stream: the configured table,
// and where each of its columns is in the tuples of the shape the WAL had
// then, which may differ from the table's shape now (columns added or
// dropped since): columns are matched by name.
type replayRel struct {
	idx   int // -1: not configured
	table *relation.Table
	at    []int // per table column, its position in the WAL's tuples; -1: absent then
}

func (r *deleteReplay) relation(m *pglogrepl.RelationMessage) *replayRel {
	idx, ok := r.src.byName[m.Namespace+"."+m.RelationName]
	if !ok {
		return &replayRel{idx: -1}
	}
	t := &r.src.tables[idx]
	rel := &replayRel{idx: idx, table: t, at: make([]int, len(t.Columns))}
	for i := range t.Columns {
		rel.at[i] = slices.IndexFunc(m.Columns, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == t.Columns[i].Name })
	}
	return rel
}

// text is the value of table column i in tuple, if the tuple has one.
func (rel *replayRel) text(tuple *pglogrepl.TupleData, i int) ([]byte, bool) {
	at := rel.at[i]
	if at < 0 || at >= len(tuple.Columns) || tuple.Columns[at].DataType != pglogrepl.TupleDataTypeText {
		return nil, false
	}
	return tuple.Columns[at].Data, true
}

// truncate hands a TRUNCATE of configured tables to the handler, which
// tombstones every key live on their topics: rows the interrupted run
// published and the TRUNCATE removed are in neither the new snapshot nor
// the new stream. The new snapshot's records follow the tombstones.
func (r *deleteReplay) truncate(ctx context.Context, m *pglogrepl.TruncateMessage) error {
	for _, id := range m.RelationIDs {
		rel := r.rels[id]
		if rel == nil {
			return fmt.Errorf("pgoutput: TRUNCATE of unknown relation %d", id)
		}
		if rel.idx < 0 {
			continue
		}
		r.change = Change{Op: OpTruncate, Table: rel.table, TableIndex: rel.idx, LSN: r.txnLSN, CommitTime: r.txnTime, XID: r.txnXID}
		if err := handOverTruncate(ctx, r.h, &r.change, r.cp, r.mark); err != nil {
			return err
		}
		r.truncated++
	}
	return nil
}

// tombstone hands a delete of the old tuple's key to the handler; for an
// update only when the primary key changed.
func (r *deleteReplay) tombstone(ctx context.Context, relID uint32, oldTuple, newTuple *pglogrepl.TupleData) error {
	rel := r.rels[relID]
	if rel == nil {
		return fmt.Errorf("pgoutput: row for unknown relation %d", relID)
	}
	if rel.idx < 0 || oldTuple == nil {
		return nil
	}
	t := rel.table
	// Columns are taken by name from the WAL's shape and decoded as the
	// table has them now: a row deleted before a column was added or
	// dropped still gets its tombstone.
	for _, k := range t.PrimaryKey {
		_, i, _ := t.Column(k)
		if _, ok := rel.text(oldTuple, i); !ok {
			// The key then was not the key now (changed since): its
			// records were keyed otherwise and cannot be named.
			r.src.log.Warn("a row deleted while the snapshot was interrupted lacks today's key column: no tombstone for it",
				"table", t.QualifiedName(), "column", k, "lsn", r.txnLSN)
			return nil
		}
	}
	if newTuple != nil {
		same := true
		for _, k := range t.PrimaryKey {
			_, i, _ := t.Column(k)
			o, _ := rel.text(oldTuple, i)
			n, _ := rel.text(newTuple, i)
			same = same && bytes.Equal(o, n)
		}
		if same {
			return nil
		}
	}
	old := make([]any, len(t.Columns))
	for i := range t.Columns {
		text, ok := rel.text(oldTuple, i)
		if !ok || t.Columns[i].Unused {
			continue
		}
		v, err := relation.DecodeText(&t.Columns[i].Type, text)
		if err != nil {
			if !slices.Contains(t.PrimaryKey, t.Columns[i].Name) {
				// A column whose type changed since: a tombstone needs
				// only the key, and failing here would fail every start.
				continue
			}
			return valueError(t, tupleKeyByName(rel, oldTuple), i, err)
		}
		old[i] = v
	}
	r.change = Change{Op: OpDelete, Table: t, TableIndex: rel.idx, Old: old, LSN: r.txnLSN, CommitTime: r.txnTime, XID: r.txnXID}
	r.change.Ack = r.cp.track(r.mark)
	if err := r.h.Handle(ctx, &r.change); err != nil {
		return err
	}
	r.n++
	return nil
}

// tupleKeyByName renders the primary key of a replayed tuple for an error.
func tupleKeyByName(rel *replayRel, tuple *pglogrepl.TupleData) string {
	return rowKey(rel.table, func(i int) ([]byte, bool) { return rel.text(tuple, i) })
}
