package broker

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
)

// CheckEmbedded reports what would stop [StartEmbedded] with this listen
// address and data directory, without starting anything: the address
// taken by another process, or the data directory locked by another
// broker (a replicator already running on it). For `replicator check`.
func CheckEmbedded(listen, dataDir string) error {
	var errs []error
	if err := checkListen(listen, keyListen); err != nil {
		errs = append(errs, err)
	}
	if dataDir != "" {
		held, err := lockHeld(filepath.Join(dataDir, lockFileName))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("data_dir %s: %w", dataDir, err))
		case held:
			errs = append(errs, fmt.Errorf("data_dir: %s is in use by another process (a replicator already running on it?): stop that process, or give this one another data_dir", dataDir))
		}
	}
	return errors.Join(errs...)
}

// checkListen binds addr and releases it at once.
func checkListen(addr, key string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: cannot listen on %s (%w): another process (a replicator already running?) may hold the port; stop it or set %s to a free address", key, addr, err, key)
	}
	return ln.Close()
}

// lockFileName is the file in DataDir whose flock marks the directory as
// used by a running broker.
const lockFileName = "replicator.lock"
