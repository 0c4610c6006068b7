// Package filelock marks a data directory as used by one running process,
// with an exclusive flock on a file in it: the embedded broker and the
// embedded registry each hold one while they run, and `replicator check`
// asks whether another process holds it. The OS drops the lock when the
// process dies, so a crash never leaves it stale. Where flock is not
// available (not a Unix), nothing is locked and nothing is reported held.
package filelock

import (
	"errors"
	"fmt"
)

// ErrHeld is wrapped by the error [Lock] returns when another open file
// (in this process or another) holds the lock.
var ErrHeld = errors.New("in use by another process")

// CheckFree returns nil when no other process holds the lock on path, a
// file in the data directory dataDir, and otherwise an error naming
// data_dir and the fix, for `replicator check`.
func CheckFree(dataDir, path string) error {
	held, err := Held(path)
	switch {
	case err != nil:
		return fmt.Errorf("data_dir %s: %w", dataDir, err)
	case held:
		return fmt.Errorf("data_dir: %s is in use by another process (a replicator already running on it?): stop that process, or give this one another data_dir", dataDir)
	}
	return nil
}
