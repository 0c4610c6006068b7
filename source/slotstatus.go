package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// SlotStatus is a replication slot as pg_replication_slots shows it, with
// the server's current WAL position read in the same statement.
type SlotStatus struct {
	Name      string
	Exists    bool
	Active    bool // a walsender (a running replicator) holds it
	ActivePID int  // its walsender's pid; 0 when inactive
	// ConfirmedLSN is what the slot's consumer confirmed last; RestartLSN
	// the oldest WAL the slot keeps.
	ConfirmedLSN, RestartLSN pglogrepl.LSN
	// CurrentLSN is pg_current_wal_lsn() at the time of the read.
	CurrentLSN pglogrepl.LSN
	// WALStatus is pg_replication_slots.wal_status (reserved, extended,
	// unreserved, lost); "lost" means the slot can no longer stream.
	WALStatus string
}

// RetainedBytes is the WAL the slot keeps the server from removing.
func (s SlotStatus) RetainedBytes() uint64 { return lsnDiff(s.CurrentLSN, s.RestartLSN) }

// LagBytes is the WAL written since the position the slot's consumer
// confirmed.
func (s SlotStatus) LagBytes() uint64 { return lsnDiff(s.CurrentLSN, s.ConfirmedLSN) }

func lsnDiff(a, b pglogrepl.LSN) uint64 {
	if a <= b || b == 0 {
		return 0
	}
	return uint64(a - b)
}

// ReadSlotStatus reads slot from pg_replication_slots on conn (a plain
// connection, not the replication one). A missing slot is not an error:
// Exists is false.
func ReadSlotStatus(ctx context.Context, conn *pgx.Conn, slot string) (SlotStatus, error) {
	st := SlotStatus{Name: slot, CurrentLSN: 0}
	var confirmed, restart, walStatus *string
	var pid *int32
	var current string
	err := conn.QueryRow(ctx, `
		SELECT s.active, s.active_pid, s.confirmed_flush_lsn::text, s.restart_lsn::text, s.wal_status,
			CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text
		FROM pg_replication_slots s WHERE s.slot_name = $1`, slot).
		Scan(&st.Active, &pid, &confirmed, &restart, &walStatus, &current)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read replication slot %s from pg_replication_slots: %w", slot, err)
	}
	st.Exists = true
	if pid != nil {
		st.ActivePID = int(*pid)
	}
	if walStatus != nil {
		st.WALStatus = *walStatus
	}
	for _, f := range []struct {
		text *string
		lsn  *pglogrepl.LSN
	}{{confirmed, &st.ConfirmedLSN}, {restart, &st.RestartLSN}, {&current, &st.CurrentLSN}} {
		if f.text == nil {
			continue
		}
		if *f.lsn, err = pglogrepl.ParseLSN(*f.text); err != nil {
			return st, fmt.Errorf("replication slot %s: parse LSN %q: %w", slot, *f.text, err)
		}
	}
	return st, nil
}

// SnapshotState is the initial snapshot's state of a slot as recorded in
// the data dir (see snapshotState), for `replicator status`.
type SnapshotState struct {
	Slot          string
	ConsistentLSN pglogrepl.LSN
	CreatedAt     time.Time
	Complete      bool
	CompletedAt   time.Time // zero until complete
	Rows          int64     // rows the snapshot published
	Tables        []string  // tables accounted for (qualified names)
	Path          string    // the state file
	// Republish are the republish requests not finished yet.
	Republish []RepublishStatus
	// RepublishFailed are the tables republish requests could not
	// republish, until a later request republishes them or a cancel
	// names the request.
	RepublishFailed []RepublishFailure
}

// RepublishFailure is a table a republish request could not republish.
type RepublishFailure struct {
	ID     string
	Table  string
	At     time.Time
	Reason string // why, and what to do
}

// Error says what failed, when, why, and how to clear it.
func (f RepublishFailure) Error() string {
	return fmt.Sprintf("republish %s of table %s failed at %s: %s (listed until the table is republished again or `replicator republish --cancel --id %s` clears it)",
		f.ID, f.Table, f.At.Format(time.RFC3339), f.Reason, f.ID)
}

// RepublishStatus is a republish request in progress, per table.
type RepublishStatus struct {
	ID     string
	Tables []RepublishTableStatus
}

// RepublishTableStatus is one table of a republish request.
type RepublishTableStatus struct {
	Name   string
	Chunks int   // chunks acknowledged
	Rows   int64 // rows republished
	Done   bool
}

// ReadSnapshotState reads the snapshot state of slot from stateDir (the
// source's state directory, data_dir/source). ok is false when there is
// none: the slot has not been created by this data dir yet.
func ReadSnapshotState(stateDir, slot string) (st SnapshotState, ok bool, err error) {
	s, ok, err := readState(stateDir, slot)
	if err != nil || !ok {
		return SnapshotState{Path: statePath(stateDir, slot)}, false, err
	}
	st = SnapshotState{
		Slot: s.Slot, ConsistentLSN: s.ConsistentLSN, CreatedAt: s.CreatedAt, Complete: s.Complete,
		CompletedAt: s.CompletedAt, Rows: s.Rows, Tables: s.Tables, Path: statePath(stateDir, slot),
	}
	for _, j := range s.Republish {
		rs := RepublishStatus{ID: j.ID}
		for _, t := range j.Tables {
			rs.Tables = append(rs.Tables, RepublishTableStatus{Name: t.Name, Chunks: t.Chunks, Rows: t.Rows, Done: t.Done})
		}
		st.Republish = append(st.Republish, rs)
	}
	for _, f := range s.RepublishFailed {
		st.RepublishFailed = append(st.RepublishFailed, RepublishFailure{ID: f.ID, Table: f.Table, At: f.At, Reason: f.Error})
	}
	return st, true, nil
}

// CheckRepublishFailures reports each table a republish request could not
// republish, as recorded in stateDir for slot: its rows may be missing
// from the topic or older than the table's. For `check`.
func CheckRepublishFailures(stateDir, slot string) []error {
	st, _, err := ReadSnapshotState(stateDir, slot)
	if err != nil {
		return []error{err}
	}
	var problems []error
	for _, f := range st.RepublishFailed {
		problems = append(problems, f)
	}
	return problems
}
