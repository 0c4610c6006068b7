package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
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
	r := &deleteReplay{src: s, h: h, rels: map[uint32]*streamRel{}, cp: newCheckpoint(0)}
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
		"from_lsn", info.confirmed, "to_lsn", until, "tombstones", r.n)
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
	rels map[uint32]*streamRel
	cp   *checkpoint
	mark *txnMark
	n    int64

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
		if idx, ok := r.src.byName[m.Namespace+"."+m.RelationName]; ok {
			// A table whose columns changed since is decoded by name only
			// where it matches; a mismatch is not fatal here, as the new
			// snapshot reads the table as it is now.
			r.rels[m.RelationID] = &streamRel{idx: idx, table: &r.src.tables[idx]}
		} else {
			r.rels[m.RelationID] = &streamRel{idx: -1}
		}
	case *pglogrepl.DeleteMessage:
		return false, r.tombstone(ctx, m.RelationID, m.OldTuple, nil)
	case *pglogrepl.UpdateMessage:
		if m.OldTuple != nil {
			return false, r.tombstone(ctx, m.RelationID, m.OldTuple, m.NewTuple)
		}
	}
	return false, nil
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
	if len(oldTuple.Columns) != len(t.Columns) {
		return nil // the table changed shape since; its rows are re-read by the new snapshot
	}
	if newTuple != nil && len(t.PrimaryKey) > 0 && len(newTuple.Columns) == len(t.Columns) {
		same := true
		for _, k := range t.PrimaryKey {
			_, i, _ := t.Column(k)
			same = same && bytes.Equal(oldTuple.Columns[i].Data, newTuple.Columns[i].Data)
		}
		if same {
			return nil
		}
	}
	old, err := decodeTuple(t, oldTuple)
	if err != nil {
		return err
	}
	r.change = Change{Op: OpDelete, Table: t, TableIndex: rel.idx, Old: old, LSN: r.txnLSN, CommitTime: r.txnTime, XID: r.txnXID}
	r.change.Ack = r.cp.track(r.mark)
	if err := r.h.Handle(ctx, &r.change); err != nil {
		return err
	}
	r.n++
	return nil
}
