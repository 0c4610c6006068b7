package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
)

// Log messages of the snapshot's life cycle, for operators and tests.
const (
	// LogSnapshotRestart: an earlier initial snapshot did not complete;
	// the slot is recreated and the snapshot starts again from a new
	// consistent point (never resumed: the rows of the old snapshot were
	// read at a point the new slot does not stream from).
	LogSnapshotRestart = "initial snapshot incomplete: starting it again from a new consistent point"
	// LogSnapshotComplete: every snapshot row is acknowledged and the
	// state file says complete.
	LogSnapshotComplete = "initial snapshot complete"
	// LogTablesAdded: tables configured after the initial snapshot are
	// snapshotted online (a republish) while the stream runs.
	LogTablesAdded = "tables added to the configuration since the initial snapshot are snapshotted online"
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
			if wantSnapshot && haveState {
				if state, err = s.snapshotAdded(conn, state); err != nil {
					return 0, err
				}
			}
			if haveState && state.Complete {
				if err := s.recordTables(state); err != nil {
					return 0, err
				}
			}
			s.log.Info("resuming from replication slot", "slot", s.cfg.Slot, "confirmed_lsn", slot.confirmed)
			return slot.confirmed, nil
		}
		// The stream from this slot's consistent point lacks the rows that
		// existed before it, and not all of them are known to be published:
		// the only safe way on is a new slot and a new snapshot.
		if haveState {
			s.log.Warn(LogSnapshotRestart,
				"slot", s.cfg.Slot, "reason", "the previous initial snapshot did not complete (stopped or crashed)",
				"previous_consistent_lsn", state.ConsistentLSN, "previous_started_at", state.CreatedAt,
				"effect", "rows already published are published again, rows deleted since get a tombstone; none is missed")
		} else {
			s.log.Warn(LogSnapshotRestart,
				"slot", s.cfg.Slot, "reason", "the slot exists but data_dir holds no snapshot state for it ("+statePath(s.cfg.StateDir, s.cfg.Slot)+")",
				"effect", "rows already published are published again, rows deleted since get a tombstone; none is missed")
		}
		if err := s.keepPrevSlot(ctx, conn); err != nil {
			return 0, err
		}
		if err := dropSlot(ctx, repl, s.cfg.Slot); err != nil {
			return 0, err
		}
	} else if haveState && state.Complete {
		return 0, &SlotLostError{Slot: s.cfg.Slot, State: statePath(s.cfg.StateDir, s.cfg.Slot), CompletedAt: state.CompletedAt, Snapshot: wantSnapshot}
	} else if wantSnapshot && haveState && !state.Complete {
		s.log.Warn(LogSnapshotRestart,
			"slot", s.cfg.Slot, "reason", "the previous initial snapshot did not complete and its slot is gone",
			"previous_consistent_lsn", state.ConsistentLSN, "previous_started_at", state.CreatedAt,
			"effect", "rows already published are published again, rows deleted since get a tombstone; none is missed")
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
	state = snapshotState{Slot: s.cfg.Slot, ConsistentLSN: consistent, CreatedAt: time.Now().UTC(), Complete: !wantSnapshot, Tables: s.tableNames()}
	if err := writeState(s.cfg.StateDir, state); err != nil {
		return 0, err
	}
	if !wantSnapshot {
		return consistent, nil
	}

	// Rows deleted since the abandoned slot's position get their
	// tombstones before the new snapshot's records (see ghosts.go).
	if err := s.replayDeletes(ctx, conn, consistent, h); err != nil {
		return 0, fmt.Errorf("initial snapshot: %w", err)
	}
	rows, err := s.snapshot(ctx, conn, res.SnapshotName, consistent, h)
	if err != nil {
		return 0, fmt.Errorf("initial snapshot: %w", err)
	}
	state.Complete, state.CompletedAt, state.Rows = true, time.Now().UTC(), rows
	if err := writeState(s.cfg.StateDir, state); err != nil {
		return 0, err
	}
	s.log.Info(LogSnapshotComplete, "rows", rows, "consistent_lsn", consistent,
		"seconds", state.CompletedAt.Sub(state.CreatedAt).Round(time.Millisecond).Seconds())
	return consistent, nil
}

// SlotLostError is returned by Run when the slot is gone although the
// snapshot state says it streamed: a DBA dropped it, or a failover (before
// PostgreSQL 17's failover slots) left it on the old primary. The WAL
// between its last confirmed position and now is out of reach. A new slot
// and snapshot would publish every row again, but a row deleted in the gap
// would never get its tombstone and would stay live on the topic forever
// (with source.snapshot: never, every change of the gap would be lost), so
// the source refuses rather than do it silently.
type SlotLostError struct {
	Slot        string
	State       string // the snapshot state file's path
	CompletedAt time.Time
	Snapshot    bool // source.snapshot is initial
}

func (e *SlotLostError) Error() string {
	lost := "rows deleted while it was missing would never get a tombstone and would stay live on the topics forever " +
		"(rows inserted or updated meanwhile are published again by a new snapshot)"
	redo := "delete " + e.State + " and start again (a new slot and a full snapshot publish every row again), then run `replicator republish --all --reconcile`, which tombstones every key live on a topic that is no longer in its table"
	if !e.Snapshot {
		lost = "every change made while it was missing is lost to the topics (source.snapshot: never takes no snapshot to publish them again)"
		redo = "delete " + e.State + " and start again: a new slot streams from now on, the changes of the gap are not published"
	}
	return fmt.Sprintf("replication slot %s is gone, but %s says it streamed (its snapshot completed %s): it was dropped (pg_drop_replication_slot) "+
		"or lost in a failover, and the changes since its last confirmed position can no longer be read: %s. replicator does not carry on by itself. "+
		"Ways out: accept the loss: %s; or start every entity over on new topics (set new topic: names, delete the state file, restart) and move consumers to them. "+
		"Check that another process does not own the slot under another name, and, after a failover, that source.url points at the new primary",
		e.Slot, e.State, e.CompletedAt.Format(time.RFC3339), lost, redo)
}

// CheckSlotKept returns a [*SlotLostError] when slot does not exist while
// the snapshot state in stateDir says it streamed: what Run would refuse,
// for `check`. snapshotInitial is whether source.snapshot is initial.
func CheckSlotKept(ctx context.Context, conn *pgx.Conn, slot, stateDir string, snapshotInitial bool) error {
	state, haveState, err := readState(stateDir, slot)
	if err != nil || !haveState || !state.Complete {
		return err
	}
	info, err := lookupSlot(ctx, conn, slot)
	if err != nil || info.exists {
		return err
	}
	return &SlotLostError{Slot: slot, State: statePath(stateDir, slot), CompletedAt: state.CompletedAt, Snapshot: snapshotInitial}
}

// tableNames are the configured tables' qualified names.
func (s *Source) tableNames() []string {
	names := make([]string, len(s.tables))
	for i := range s.tables {
		names[i] = s.tables[i].QualifiedName()
	}
	return names
}

// addedJobPrefix begins the id of the republish job that snapshots the
// tables added to the configuration online (snapshotAdded).
const addedJobPrefix = "added-"

// snapshotAdded schedules an online snapshot of the configured tables the
// slot's initial snapshot did not read (added to the configuration since):
// their rows from before would never be published by streaming alone. It
// is a republish job (republish.go), run by the stream that follows, so
// their rows land in the stream's order, without stopping it; the tables
// are recorded at once, with the job that accounts for them, and a crash
// continues the job from its last chunk.
func (s *Source) snapshotAdded(conn *pgx.Conn, state snapshotState) (snapshotState, error) {
	if len(state.Tables) == 0 {
		return state, nil // written before the tables were recorded: nothing to compare
	}
	added := s.unrecorded(state)
	if len(added) == 0 {
		return state, nil
	}
	tables := make([]*relation.Table, len(added))
	for i, name := range added {
		tables[i] = &s.tables[s.byName[name]]
	}
	if err := onlineSnapshotProblems(conn, s.cfg.Slot, statePath(s.cfg.StateDir, s.cfg.Slot), tables); err != nil {
		return state, err
	}
	job := republishJob{ID: addedJobPrefix + newRepublishID(time.Now()), Requested: time.Now().UTC()}
	for _, name := range added {
		job.Tables = append(job.Tables, republishTable{Name: name})
	}
	state.Tables = append(state.Tables, added...)
	addJob(&state, job)
	s.stateMu.Lock()
	err := writeState(s.cfg.StateDir, state)
	s.stateMu.Unlock()
	if err != nil {
		return state, err
	}
	s.log.Info(LogTablesAdded, "slot", s.cfg.Slot, "tables", strings.Join(added, ", "), "republish_id", job.ID)
	return state, nil
}

// onlineSnapshotProblems are why tables, added to the configuration after
// the initial snapshot of slot (state file stateFile), cannot be
// snapshotted online on conn's server; nil when they can. Each problem
// says how to publish the tables' rows some other way.
func onlineSnapshotProblems(conn *pgx.Conn, slot, stateFile string, tables []*relation.Table) error {
	// Keep the slot: the next start finds no state for it and tombstones
	// from it the rows deleted since (ghosts.go) before the new snapshot.
	snapshot := "stop replicator run, delete " + stateFile + " and start it again (keep the slot: the start tombstones from it the rows deleted since, then snapshots every configured table)"
	never := "Or stream only their changes from now on with source.snapshot: never"
	var problems []error
	if err := checkMessages(conn); err != nil {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.QualifiedName()
		}
		problems = append(problems, fmt.Errorf("%s added to the configuration after the initial snapshot of slot %s, and they cannot be snapshotted online: %w. "+
			"To publish their rows, snapshot again: %s. %s", strings.Join(names, ", "), slot, err, snapshot, never))
	}
	for _, t := range tables {
		if len(t.PrimaryKey) == 0 {
			problems = append(problems, fmt.Errorf("%w. %s", noKeyError(t, "the online snapshot of a table added to entities: after the initial snapshot of slot "+slot, snapshot), never))
		}
	}
	return errors.Join(problems...)
}

// CheckAddedTables reports what would stop the next start from
// snapshotting online the configured tables that the initial snapshot of
// slot (state in stateDir) did not read: what Run would refuse, for
// `check`. snapshotInitial is whether source.snapshot is initial; tables
// are the configured tables as [LoadTable] describes them.
func CheckAddedTables(ctx context.Context, conn *pgx.Conn, slot, stateDir string, snapshotInitial bool, tables []relation.Table) error {
	state, haveState, err := readState(stateDir, slot)
	if err != nil || !haveState || !state.Complete || len(state.Tables) == 0 || !snapshotInitial {
		return err // nothing recorded to compare, or no online snapshot at start
	}
	info, err := lookupSlot(ctx, conn, slot)
	if err != nil || !info.exists {
		return err // a new slot takes a full snapshot; a lost one is CheckSlotKept's
	}
	var added []*relation.Table
	for i := range tables {
		if !slices.Contains(state.Tables, tables[i].QualifiedName()) {
			added = append(added, &tables[i])
		}
	}
	if len(added) == 0 {
		return nil
	}
	return onlineSnapshotProblems(conn, slot, statePath(stateDir, slot), added)
}

// recordTables adds to the slot's state the configured tables it does not
// list: those streamed only by choice (source.snapshot: never), so that
// going back to snapshot: initial does not snapshot them after all, or all of
// them when the state predates the table list, so that a table added
// later is found and snapshotted online (snapshotAdded).
func (s *Source) recordTables(state snapshotState) error {
	added := s.unrecorded(state)
	if len(added) == 0 {
		return nil
	}
	reason := "streamed without a snapshot (source.snapshot: never): their rows from before the slot are not published"
	if len(state.Tables) == 0 {
		reason = "the state file predates its table list: taken to be the tables snapshotted"
	}
	state.Tables = append(state.Tables, added...)
	if err := writeState(s.cfg.StateDir, state); err != nil {
		return err
	}
	s.log.Info("recorded tables in the slot's state", "slot", s.cfg.Slot, "tables", strings.Join(added, ", "), "reason", reason)
	return nil
}

// unrecorded are the configured tables the state does not list.
func (s *Source) unrecorded(state snapshotState) []string {
	var names []string
	for _, name := range s.tableNames() {
		if !slices.Contains(state.Tables, name) {
			names = append(names, name)
		}
	}
	return names
}
