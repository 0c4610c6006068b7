package sink

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/replicator/replicator/filelock"
)

// The rebuild lock: one rebuild of a read model at a time. A second one
// would drop the first one's shadow table and stored rows as left over
// (prepareRebuild's forget), and the first, reading its positions from
// memory, could then swap in a table the second had only begun. The lock
// is held from before that cleanup until Rebuild returns, and a rebuild
// that finds it held fails at once rather than waiting: the one running
// builds the same table, so waiting would only rebuild it twice.
//
// Each store holds it where a rebuild killed with -9 cannot leave it
// behind:
//   - PostgreSQL: a session advisory lock (pg_try_advisory_lock) on a
//     connection of its own, released when the session ends;
//   - MySQL/MariaDB: a named lock (GET_LOCK, timeout 0) on a connection
//     of its own, released the same way; named apart from the swap's
//     lock, which the rebuild takes too (on another connection);
//   - SQLite: an flock on a file beside the database,
//     <db>-rebuild-<hash of the read model's name>.lock, released by the
//     OS when the process ends. Not a row in a sink-owned table: holding
//     it in an open transaction would hold SQLite's only write lock for
//     the whole rebuild, stopping the running sink and the rebuild's own
//     writes; a committed row would stay behind after a kill and need a
//     lease. Every process writing a SQLite file runs on its host (SQLite
//     itself locks through the file system), so a lock file there is seen
//     by every rebuild of it. The file is left in place after the rebuild:
//     removing it would let a rebuild lock a new file while another still
//     holds the removed one. Where flock does not exist (not a Unix),
//     filelock locks nothing and SQLite rebuilds are not guarded.
//
// The running sink never takes this lock: it goes on beside a rebuild.
//
// A server's lock lives as long as the session holding it, which is idle
// for the whole rebuild: a session ended meanwhile (MySQL's wait_timeout,
// a dropped connection, a DBA's kill) has taken the lock with it, and
// another rebuild may have started since. A check of the lock before the
// swap would not do: the session could end between the check and the
// swap's commit, and the other rebuild drop and begin again the shadow
// table this one then swaps in. So the check is part of the transaction
// that decides the swap, run on the lock's own session (beginSwap): a
// session lock is released only when its session ends or it releases it
// (the rebuild does only on its way out, and takes no other named lock on
// that session, which MySQL before 5.7 took as a release), and a session
// that ends rolls its open transaction back. The swap therefore commits
// only while the lock is still this rebuild's, held without a break since
// before its prepareRebuild: no other rebuild can have dropped or begun
// again the shadow table or its stored rows in between. The check in the
// transaction proves the session is still the one that took the lock: a
// pooler handing out another server session would otherwise pass unseen.
//
//   - PostgreSQL: the whole swap is that transaction.
//   - MySQL/MariaDB: its DDL commits by itself, so the swap is three steps
//     (rebuild_mysql.go); the first, one transaction without DDL, decides
//     it (once committed, anyone finishes it), and it is the one run on
//     the lock's session. The swap's own named lock stays on a connection
//     of its own: the steps after the first need only it.
//   - SQLite: nothing to check. The flock is the process's, held by the
//     open file until release (when Rebuild returns) or the process's
//     end; no session can end under it.
//
// A transaction that fails because the session ended is reported as the
// lock lost (lostOr), not retried.

// rebuildLock is a rebuild lock taken. release frees it. conn is the
// session holding a server's lock (nil for a lock file, which the process
// holds until it ends); check, with arg, is the query on it saying whether
// the server still has the lock as this session's.
type rebuildLock struct {
	model   string
	release func()
	conn    *sql.Conn
	check   string
	arg     any
	// unlockSQL frees the lock (one boolean column; arg its argument).
	unlockSQL string
}

// lockRebuild takes the rebuild lock of read model model in the store at
// storeURL. A lock another rebuild holds is an error naming the read model
// and saying another rebuild is running.
func lockRebuild(ctx context.Context, storeURL, model string) (*rebuildLock, error) {
	d, err := dialectOf(storeURL)
	if err != nil {
		return nil, err
	}
	if _, ok := d.(sqliteDialect); ok {
		release, err := lockRebuildFile(storeURL, model)
		if err != nil {
			return nil, err
		}
		return &rebuildLock{model: model, release: release}, nil
	}
	// A pool of its own, and one connection of it held until the release:
	// the lock is that session's, and closing the pool ends the session
	// and so frees the lock, whatever else happened to the connection.
	db, _, err := openStore(storeURL)
	if err != nil {
		return nil, fmt.Errorf("rebuild lock of read model %s: %w", model, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("read model %s: store %s does not answer: %w", model, d.name(), err)
	}
	closeAll := func() {
		conn.Close()
		db.Close()
	}
	var got sql.NullBool
	var what, check, unlock string
	var arg any
	switch d.(type) {
	case postgresDialect:
		what = "its advisory lock is held by another session"
		arg = rebuildLockKey(model)
		unlock = "SELECT pg_advisory_unlock($1)"
		err = conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", arg).Scan(&got)
		// The key split as pg_locks shows a bigint key: classid the high
		// half, objid the low one, objsubid 1.
		check = `SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid::bigint = ($1::bigint >> 32) & 4294967295 AND objid::bigint = $1::bigint & 4294967295 AND objsubid = 1`
	case mysqlDialect:
		what = "its named lock (GET_LOCK) is held by another session"
		arg = model
		// 0 when another session holds it, NULL on an error.
		unlock = "SELECT RELEASE_LOCK(" + rebuildLockName + ")"
		err = conn.QueryRowContext(ctx, "SELECT GET_LOCK("+rebuildLockName+", 0)", arg).Scan(&got)
		// NULL when no session holds it.
		check = "SELECT COALESCE(IS_USED_LOCK(" + rebuildLockName + ") = CONNECTION_ID(), FALSE)"
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("rebuild lock of read model %s: %w", model, err)
	}
	if !got.Valid {
		closeAll()
		return nil, fmt.Errorf("rebuild lock of read model %s: the server returned NULL (an error taking the lock)", model)
	}
	if !got.Bool {
		closeAll()
		return nil, rebuildRunning(model, what)
	}
	l := &rebuildLock{model: model, conn: conn, check: check, arg: arg, unlockSQL: unlock}
	l.release = func() {
		// Unlocked before the session ends: the server frees a closed
		// session's locks a moment after the client has gone, and a
		// rebuild started right after this one returns could find the
		// lock still held. Bounded: closing frees it anyway.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.unlock(ctx)
		closeAll()
	}
	return l, nil
}

// unlock frees the server's lock, the session kept.
func (l *rebuildLock) unlock(ctx context.Context) error {
	var freed sql.NullBool
	if err := l.conn.QueryRowContext(ctx, l.unlockSQL, l.arg).Scan(&freed); err != nil {
		return fmt.Errorf("free the rebuild lock of read model %s: %w", l.model, err)
	}
	if !freed.Bool {
		return fmt.Errorf("free the rebuild lock of read model %s: this session did not hold it", l.model)
	}
	return nil
}

// beginSwap begins the transaction that decides a swap: on the lock's
// own session, where it first checks that the server still has the lock
// as that session's (see above: it then stays so until the commit); on
// db for a lock file.
func (l *rebuildLock) beginSwap(ctx context.Context, db *sql.DB) (*sql.Tx, error) {
	if l.conn == nil {
		return db.BeginTx(ctx, nil)
	}
	// A session that ended fails here (database/sql does not replace a
	// Conn's connection): lostOr tells it apart.
	tx, err := l.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	var mine bool
	if err := tx.QueryRowContext(ctx, l.check, l.arg).Scan(&mine); err != nil {
		tx.Rollback()
		return nil, err
	}
	if !mine {
		tx.Rollback()
		return nil, errors.New("the server no longer has the rebuild lock as this session's") // lostOr says the rest
	}
	return tx, nil
}

// lostOr is err, which the transaction deciding the swap (beginSwap)
// failed with, or the lock-lost error if the lock's session has ended
// (the likely cause, and not one to retry); atCommit: err is the
// commit's.
func (l *rebuildLock) lostOr(ctx context.Context, err error, atCommit bool) error {
	if err == nil || l.conn == nil || ctx.Err() != nil {
		return err
	}
	// A session alive now held the lock all along; one that ended took
	// the transaction with it (which must have ended before this query:
	// in an aborted one, it would fail too).
	var mine bool
	if cerr := l.conn.QueryRowContext(ctx, l.check, l.arg).Scan(&mine); cerr == nil && mine {
		return err
	}
	return rebuildLockLost(l.model, err.Error(), atCommit)
}

// rebuildLockCheckInterval is how often a rebuild checks, between
// batches, that its lock is still its own: one that lost it cannot swap,
// and its batches would go on loading the shadow table beside the rebuild
// that may have taken the lock since, for nothing.
const rebuildLockCheckInterval = 10 * time.Second

// stillHeld is nil while the server has the lock as this session's, and
// the lock-lost error once it has not (nil for a lock file, held by the
// process).
func (l *rebuildLock) stillHeld(ctx context.Context) error {
	if l.conn == nil {
		return nil
	}
	var mine bool
	if err := l.conn.QueryRowContext(ctx, l.check, l.arg).Scan(&mine); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return rebuildLockLost(l.model, err.Error(), false)
	}
	if !mine {
		return rebuildLockLost(l.model, "the server no longer has it as this rebuild's", false)
	}
	return nil
}

// rebuildLockLost is the error of a rebuild that lost its lock before its
// swap committed (why); atCommit: the commit itself failed, so whether it
// reached the server first is not known. It does not wrap why's error: a
// transient one would have the rebuild retry the swap, on a session gone.
func rebuildLockLost(model, why string, atCommit bool) error {
	outcome := "nothing was swapped, the live table and its stored offsets are unchanged"
	if atCommit {
		outcome = "the swap's commit failed with it, so the live table is the old one or, if the commit reached the server before the session ended, the rebuilt one: either is whole"
	}
	return fmt.Errorf("read model %s: the rebuild lost its lock before its swap committed (%s): its session ended (a connection dropped, the server's idle timeout such as MySQL's wait_timeout, or a kill), so another rebuild may have started; %s: rebuild again (if its idle session times out, raise the server's idle timeout)", model, why, outcome)
}

// rebuildLockKey is the advisory lock key of a read model's rebuild in
// PostgreSQL: a hash of its name (advisory locks are per database, as the
// read model's stored rows are).
func rebuildLockKey(model string) int64 {
	h := sha256.Sum256([]byte("replicator rebuild\x00" + model))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// rebuildLockName is the server-wide GET_LOCK name of a read model's
// rebuild in MySQL/MariaDB: the database and the read model, hashed to fit
// 64 characters (as swapLockName, under another prefix).
const rebuildLockName = "CONCAT('replicator_rebuild_', LEFT(SHA2(CONCAT(DATABASE(), '/', ?), 256), 40))"

// lockRebuildFile is lockRebuild on SQLite: an flock on a file beside
// the database (none for an in-memory one, which no other process sees).
func lockRebuildFile(storeURL, model string) (func(), error) {
	db := sqlitePath(storeURL)
	if db == "" || db == ":memory:" {
		return func() {}, nil
	}
	h := sha256.Sum256([]byte(model))
	path := db + "-rebuild-" + hex.EncodeToString(h[:8]) + ".lock"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("rebuild lock of read model %s: %w", model, err)
	}
	if err := filelock.Lock(f); err != nil {
		f.Close()
		if errors.Is(err, filelock.ErrHeld) {
			return nil, rebuildRunning(model, "lock file "+path+" held")
		}
		return nil, fmt.Errorf("rebuild lock of read model %s: %w", model, err)
	}
	return func() { f.Close() }, nil
}

// rebuildRunning is the error of a rebuild refused because another one of
// the same read model holds the lock (how, in held).
func rebuildRunning(model, held string) error {
	return fmt.Errorf("read model %s: another rebuild of it is running (%s): let it finish, or stop it, before rebuilding again", model, held)
}
