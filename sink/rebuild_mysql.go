package sink

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"
)

// The rebuild's swap on MySQL/MariaDB. Its DDL commits by itself, so the
// rename cannot share a transaction with the offsets as on PostgreSQL and
// SQLite. The swap is instead three steps, each atomic, with the offsets
// rows as the journal between them:
//
//  1. One transaction locks the live side rows and offsets (FOR UPDATE,
//     in a batch's order), checks the rebuild is at or past them, and
//     replaces them with the rebuild's,
//     stored *pending*: next_offset = -2 - n (-1 for a partition without
//     a position), a value no sink ever expects, so every sink batch from
//     here on fails its compare-and-set and rolls back. The side rows move
//     over in the same transaction.
//  2. RENAME TABLE t TO t__old, t__rebuild TO t: atomic in MySQL and
//     MariaDB, so a query sees the old table or the whole new one.
//  3. One transaction turns the pending offsets into real ones; then
//     t__old is dropped.
//
// A sink batch committed before step 1 is in the positions step 1 checked;
// one after it cannot commit until step 3, and then only with the
// rebuild's positions, against the table now named t. A sink that finds
// pending offsets (after the fence, or at assignment) finishes the swap
// itself (finishSwap): steps 2 and 3 need nothing but the names, so a
// rebuild killed between the steps stops no sink, and a new rebuild
// finishes it before it starts over. Steps 1 to 3, and a sink finishing
// them, run under a named lock (GET_LOCK) per database and read model, so
// two finishers never interleave; sink batches never take it.
//
// Step 1 is the one that decides the swap: once it has committed, anyone
// finishes it. So it is the step that must commit only while the rebuild
// lock is this rebuild's, and it runs on that lock's session, checking it
// first (rebuildlock.go). A transaction without DDL, it is one: a session
// ended before its commit rolls it back. Steps 2 and 3 only finish what it
// decided and need no rebuild lock (a sink runs them without one).

// pendingSQL turns a position into a pending one (step 1) and back (step 3).
const pendingSQL = "-2 - next_offset"

// swapLockName is the server-wide name of a read model's swap lock: the
// database and the read model, hashed to fit GET_LOCK's 64 characters.
const swapLockName = "CONCAT('replicator_sink_', LEFT(SHA2(CONCAT(DATABASE(), '/', ?), 256), 40))"

// lockSwap takes the read model's swap lock on a connection of its own and
// returns it with its release. A release that fails closes the connection,
// which ends its session and so frees the lock: a pooled connection never
// keeps it.
func (st *store) lockSwap(ctx context.Context, model string) (*sql.Conn, func(), error) {
	conn, err := st.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("swap lock of read model %s: %w", model, err)
	}
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+swapLockName+", 10)", model).Scan(&got); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("swap lock of read model %s: %w", model, err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		// Held by a rebuild's swap (or a sink finishing one): it takes a
		// rename and two small transactions, unless the rename waits for a
		// long query on the table.
		if err := ctx.Err(); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	release := func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK("+swapLockName+")", model); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}
	return conn, release, nil
}

// trySwapMySQL is trySwap on MySQL/MariaDB (the steps above). Step 1
// decides the swap (a sink or the next rebuild finishes one begun), so it
// is the step that runs on the rebuild lock's session, checking the lock
// first (stageSwap); the other steps run on the swap lock's connection.
func (s *Sink) trySwapMySQL(ctx context.Context, live ReadModel, lock *rebuildLock) (map[tp]int64, bool, error) {
	st := s.st
	conn, release, err := st.lockSwap(ctx, live.Name)
	if err != nil {
		return nil, false, fmt.Errorf("swap: %w", err)
	}
	defer release()
	// Pending offsets here are this rebuild's own, from an attempt that
	// failed after step 1 (prepareRebuild finished any older swap): the
	// rebuilt table is theirs, so finish that one. Step 1 again would
	// lose them.
	if finished, err := st.completeSwap(ctx, conn, live.Name, live.Table); err != nil || finished {
		return nil, finished, err
	}
	if ahead, err := s.stageSwap(ctx, live, lock); err != nil || ahead != nil {
		return ahead, false, err
	}
	if _, err := st.completeSwap(ctx, conn, live.Name, live.Table); err != nil {
		return nil, false, fmt.Errorf("swap: %w (a running sink, or the next rebuild, finishes it)", err)
	}
	return nil, true, nil
}

// stageSwap is step 1, in a transaction on the rebuild lock's session
// that checks the lock first (lock.beginSwap): it commits only while the
// lock is this rebuild's. If a live offset is past the rebuild's, nothing
// changes and the live offsets are returned to catch up to.
func (s *Sink) stageSwap(ctx context.Context, live ReadModel, lock *rebuildLock) (_ map[tp]int64, err error) {
	st, q := s.st, s.st.d.quote
	// Deferred before the rollback, so run after it: lostOr queries the
	// lock's session, which the transaction must have left.
	committing := false
	defer func() { err = lock.lostOr(ctx, err, committing) }()
	tx, err := lock.beginSwap(ctx, st.db)
	if err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	defer tx.Rollback()
	// A sink batch locks side rows, then the table, then its offsets rows:
	// lock the side rows first too, or each could hold what the other
	// waits for (a deadlock InnoDB would break by failing one of them).
	if _, err := tx.ExecContext(ctx, "UPDATE "+q(sideTable)+" SET seq = seq WHERE read_model = ?", live.Name); err != nil {
		return nil, fmt.Errorf("swap: lock the side rows: %w", err)
	}
	// FOR UPDATE waits for a sink batch holding these rows and reads what
	// it committed; its next-key locks keep a sink from inserting a
	// partition's first row meanwhile.
	liveOffsets, err := queryOffsets(ctx, tx, "SELECT topic, part, next_offset FROM "+q(offsetsTable)+" WHERE read_model = ? FOR UPDATE", live.Name)
	if err != nil {
		return nil, fmt.Errorf("swap: read the live offsets: %w", err)
	}
	mine := s.expectedCopy()
	for k, l := range s.ofSources(liveOffsets) {
		if l > max(mine[k], 0) {
			return s.ofSources(liveOffsets), nil
		}
	}
	if err := st.stagePending(ctx, tx, live.Name, s.cfg.Model.Name, mine); err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	if hook := s.cfg.beforeSwapCommit; hook != nil {
		hook(ctx)
	}
	committing = true
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("swap: move the offsets and side rows: %w", err)
	}
	return nil, nil
}

// stagePending is step 1 after the check, in tx: the live read model's
// offsets become the shadow's (mine: its positions, -1 none) stored
// pending, and its side rows the shadow's.
func (st *store) stagePending(ctx context.Context, tx *sql.Tx, live, shadow string, mine map[tp]int64) error {
	q := st.d.quote
	type stmt struct {
		sql  string
		args []any
	}
	stmts := []stmt{
		{"DELETE FROM " + q(offsetsTable) + " WHERE read_model = ?", []any{live}},
		{"UPDATE " + q(offsetsTable) + " SET read_model = ?, next_offset = " + pendingSQL + " WHERE read_model = ?", []any{live, shadow}},
		{"DELETE FROM " + q(sideTable) + " WHERE read_model = ?", []any{live}},
		{"UPDATE " + q(sideTable) + " SET read_model = ? WHERE read_model = ?", []any{live, shadow}},
	}
	now := time.Now().UnixMilli()
	for k, n := range mine {
		if n < 0 { // no position: pending all the same, or a sink could insert one
			stmts = append(stmts, stmt{"INSERT INTO " + q(offsetsTable) + " (read_model, topic, part, next_offset, updated_at) VALUES (?, ?, ?, -1, ?)", []any{live, k.topic, k.part, now}})
		}
	}
	for _, x := range stmts {
		if _, err := tx.ExecContext(ctx, x.sql, x.args...); err != nil {
			return fmt.Errorf("move the offsets and side rows: %w", err)
		}
	}
	return nil
}

// finishSwap finishes a swap whose offsets are still pending (a rebuild
// stopped between its steps, or in the middle of them right now: the lock
// waits for it, and then there is nothing left to do).
func (st *store) finishSwap(ctx context.Context, model, table string) error {
	conn, release, err := st.lockSwap(ctx, model)
	if err != nil {
		return err
	}
	defer release()
	if _, err := st.completeSwap(ctx, conn, model, table); err != nil {
		return fmt.Errorf("finish the swap of an interrupted rebuild: %w", err)
	}
	return nil
}

// completeSwap does steps 2 and 3 when the offsets are pending (finished
// reports whether they were); the swap lock is held on conn. Each step
// checks first whether it was done.
func (st *store) completeSwap(ctx context.Context, conn *sql.Conn, model, table string) (finished bool, err error) {
	q := st.d.quote
	var pending int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+q(offsetsTable)+" WHERE read_model = ? AND next_offset < 0", model).Scan(&pending); err != nil {
		return false, fmt.Errorf("read the offsets: %w", err)
	}
	if pending == 0 {
		return false, nil
	}
	old, shadow := table+oldSuffix, table+rebuildSuffix
	exists := func(name string) (bool, error) {
		var n int
		err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", name).Scan(&n)
		return n > 0, err
	}
	hasShadow, err := exists(shadow)
	if err != nil {
		return false, fmt.Errorf("look up table %s: %w", q(shadow), err)
	}
	if hasShadow { // step 2 not done yet
		hasLive, err := exists(table)
		if err != nil {
			return false, fmt.Errorf("look up table %s: %w", q(table), err)
		}
		// A t__old is only ever left by a swap stopped after its rename.
		if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+q(old)); err != nil {
			return false, fmt.Errorf("drop table %s: %w", q(old), err)
		}
		rename := fmt.Sprintf("RENAME TABLE %s TO %s", q(shadow), q(table))
		if hasLive {
			rename = fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", q(table), q(old), q(shadow), q(table))
		}
		if _, err := conn.ExecContext(ctx, rename); err != nil {
			return false, fmt.Errorf("%s: %w", rename, err)
		}
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("settle the offsets: %w", err)
	}
	defer tx.Rollback()
	for _, stmt := range []string{
		"DELETE FROM " + q(offsetsTable) + " WHERE read_model = ? AND next_offset = -1",
		"UPDATE " + q(offsetsTable) + " SET next_offset = " + pendingSQL + " WHERE read_model = ? AND next_offset < -1",
	} {
		if _, err := tx.ExecContext(ctx, stmt, model); err != nil {
			return false, fmt.Errorf("settle the offsets: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("settle the offsets: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+q(old)); err != nil {
		return false, fmt.Errorf("drop table %s: %w", q(old), err)
	}
	return true, nil
}

// settledOffsets is loadOffsets for a sink: pending offsets (a swap under
// way or interrupted) are finished first, so the positions returned are
// those of the table the read model's name now holds.
func (s *Sink) settledOffsets(ctx context.Context) (map[tp]offsetRow, error) {
	for attempt := 0; ; attempt++ {
		stored, pending, err := s.st.loadOffsetsPending(ctx, s.cfg.Model.Name)
		if err != nil || !pending {
			return stored, err
		}
		if attempt == 3 {
			return nil, fmt.Errorf("the stored offsets stay pending after finishing the swap %d times", attempt)
		}
		if _, ok := s.st.d.(mysqlDialect); !ok {
			return nil, fmt.Errorf("the stored offsets of read model %s are negative: only a swap on MySQL writes such (edited by hand?)", s.cfg.Model.Name)
		}
		s.log.Info("the stored offsets are a rebuild's swap in progress; finishing it")
		if err := s.st.finishSwap(ctx, s.cfg.Model.Name, s.cfg.Model.Table); err != nil {
			return nil, err
		}
	}
}
