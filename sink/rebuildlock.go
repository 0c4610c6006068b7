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
// another rebuild may have started since. So the rebuild checks the lock
// is still its own before each swap attempt (held), and fails if not.

// rebuildLock is a rebuild lock taken: release frees it; held, nil for a
// lock file (which the process holds until it ends), says whether the
// server still has it as this session's.
type rebuildLock struct {
	release func()
	held    func(ctx context.Context) error
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
		return &rebuildLock{release: release}, nil
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
	release := func() {
		conn.Close()
		db.Close()
	}
	var got sql.NullBool
	var what, check string
	var arg any
	switch d.(type) {
	case postgresDialect:
		what = "its advisory lock is held by another session"
		arg = rebuildLockKey(model)
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
		err = conn.QueryRowContext(ctx, "SELECT GET_LOCK("+rebuildLockName+", 0)", arg).Scan(&got)
		// NULL when no session holds it.
		check = "SELECT COALESCE(IS_USED_LOCK(" + rebuildLockName + ") = CONNECTION_ID(), FALSE)"
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("rebuild lock of read model %s: %w", model, err)
	}
	if !got.Valid {
		release()
		return nil, fmt.Errorf("rebuild lock of read model %s: the server returned NULL (an error taking the lock)", model)
	}
	if !got.Bool {
		release()
		return nil, rebuildRunning(model, what)
	}
	held := func(ctx context.Context) error {
		var mine bool
		// On the lock's own connection: a session that ended fails the
		// query (database/sql does not replace a Conn's connection).
		if err := conn.QueryRowContext(ctx, check, arg).Scan(&mine); err != nil {
			return rebuildLockLost(model, err.Error())
		}
		if !mine {
			return rebuildLockLost(model, "the server no longer has it as this rebuild's")
		}
		return nil
	}
	return &rebuildLock{release: release, held: held}, nil
}

// rebuildLockLost is the error of a rebuild that found, before its swap,
// that its lock is gone (why).
func rebuildLockLost(model, why string) error {
	return fmt.Errorf("read model %s: the rebuild lost its lock before the swap (%s): its session ended (a connection dropped, the server's idle timeout such as MySQL's wait_timeout, or a kill), so another rebuild may have started; not swapping, the live table is unchanged: rebuild again (if its idle session times out, raise the server's idle timeout)", model, why)
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
