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

// lockRebuild takes the rebuild lock of read model model in the store at
// storeURL and returns its release. A lock another rebuild holds is an
// error naming the read model and saying another rebuild is running.
func lockRebuild(ctx context.Context, storeURL, model string) (release func(), err error) {
	d, err := dialectOf(storeURL)
	if err != nil {
		return nil, err
	}
	if _, ok := d.(sqliteDialect); ok {
		return lockRebuildFile(storeURL, model)
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
	release = func() {
		conn.Close()
		db.Close()
	}
	var got sql.NullBool
	var what string
	switch d.(type) {
	case postgresDialect:
		what = "its advisory lock is held by another session"
		err = conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", rebuildLockKey(model)).Scan(&got)
	case mysqlDialect:
		what = "its named lock (GET_LOCK) is held by another session"
		// 0 when another session holds it, NULL on an error.
		err = conn.QueryRowContext(ctx, "SELECT GET_LOCK("+rebuildLockName+", 0)", model).Scan(&got)
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
	return release, nil
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
