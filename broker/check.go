package broker

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/replicator/replicator/filelock"
	"github.com/replicator/replicator/listenaddr"
)

// CheckEmbedded reports what would stop [StartEmbedded] with this listen
// address and data directory, without starting anything: the address
// taken by another process, or the data directory locked by another
// broker (a replicator already running on it). For `replicator check`.
func CheckEmbedded(listen, dataDir string) error {
	var errs []error
	if err := listenaddr.Check(listen, keyListen); err != nil {
		errs = append(errs, err)
	}
	if dataDir != "" {
		if err := filelock.CheckFree(dataDir, filepath.Join(dataDir, lockFileName)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
