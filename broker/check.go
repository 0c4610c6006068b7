package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/replicator/replicator/filelock"
)

// CheckEmbedded reports what would stop [StartEmbedded] with this listen
// address and data directory, without starting anything: the address
// taken by another process, or the data directory locked by another
// broker (a replicator already running on it). For `replicator check`.
func CheckEmbedded(listen, dataDir string) error {
	var errs []error
	if err := CheckListen(listen, keyListen); err != nil {
		errs = append(errs, err)
	}
	if dataDir != "" {
		if err := filelock.CheckFree(dataDir, filepath.Join(dataDir, lockFileName)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckListen binds addr and releases it at once, for `replicator check`
// of an embedded service's listen address; key is its config key, named
// in the error with the fix.
func CheckListen(addr, key string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: cannot listen on %s (%w): another process (a replicator already running?) may hold the port; stop it or set %s to a free address", key, addr, err, key)
	}
	return ln.Close()
}

// lockFileName is the file in DataDir whose flock marks the directory as
// used by a running broker.
const lockFileName = "replicator.lock"

// lockDir takes the lock on path (created if needed) that marks the data
// directory as used by this broker, so that two brokers never share one.
func lockDir(path string) (unlock func() error, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := filelock.Lock(f); err != nil {
		f.Close()
		return nil, err
	}
	return f.Close, nil
}
