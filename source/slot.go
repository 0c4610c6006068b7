package source

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// prepareSlot makes sure a slot exists whose stream, together with what was
// published before, misses nothing, and returns the LSN to stream from.
//
// The handoff between snapshot and stream: CREATE_REPLICATION_SLOT ...
// EXPORT_SNAPSHOT returns a consistent point and a snapshot that sees exactly
// the transactions committed before it. Every row is read in that snapshot
// (on a second connection, while the replication connection stays idle so
// the snapshot remains valid), then the stream starts at the consistent
// point, which holds exactly the transactions committed after it.
func (s *Source) prepareSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, h Handler) (pglogrepl.LSN, error) {
	slot, err := lookupSlot(ctx, conn, s.cfg.Slot)
	if err != nil {
		return 0, err
	}
	if slot.exists && slot.plugin != "pgoutput" {
		return 0, fmt.Errorf("replication slot %s uses plugin %s, not pgoutput: choose another source.slot or drop it (SELECT pg_drop_replication_slot('%s'))", s.cfg.Slot, slot.plugin, s.cfg.Slot)
	}
	if slot.exists && slot.active {
		return 0, slotInUse(fmt.Errorf("replication slot %s is in use by another process: is another replicator running with the same source.slot?", s.cfg.Slot))
	}
	state, haveState, err := readState(s.cfg.StateDir, s.cfg.Slot)
	if err != nil {
		return 0, err
	}
	wantSnapshot := s.cfg.Snapshot == SnapshotInitial
	if slot.exists {
		if !wantSnapshot || (haveState && state.Complete) {
			s.log.Info("resuming from replication slot", "slot", s.cfg.Slot, "confirmed_lsn", slot.confirmed)
			return slot.confirmed, nil
		}
		reason := "no snapshot state in data_dir"
		if haveState {
			reason = "the initial snapshot did not complete"
		}
		s.log.Warn("recreating replication slot and starting the snapshot again from a new consistent point; rows may be published twice",
			"slot", s.cfg.Slot, "reason", reason)
		if err := dropSlot(ctx, repl, s.cfg.Slot); err != nil {
			return 0, err
		}
	}

	res, err := createSlot(ctx, repl, s.cfg.Slot, wantSnapshot)
	if err != nil {
		return 0, err
	}
	consistent, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("slot %s consistent point %q: %w", s.cfg.Slot, res.ConsistentPoint, err)
	}
	s.log.Info("created replication slot", "slot", s.cfg.Slot, "consistent_lsn", consistent)
	state = snapshotState{Slot: s.cfg.Slot, ConsistentLSN: consistent, CreatedAt: time.Now().UTC(), Complete: !wantSnapshot}
	if err := writeState(s.cfg.StateDir, state); err != nil {
		return 0, err
	}
	if !wantSnapshot {
		return consistent, nil
	}

	rows, err := s.snapshot(ctx, res.SnapshotName, consistent, h)
	if err != nil {
		return 0, fmt.Errorf("initial snapshot: %w", err)
	}
	state.Complete, state.CompletedAt, state.Rows = true, time.Now().UTC(), rows
	if err := writeState(s.cfg.StateDir, state); err != nil {
		return 0, err
	}
	s.log.Info("initial snapshot complete", "rows", rows, "consistent_lsn", consistent)
	return consistent, nil
}
