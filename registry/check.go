package registry

import (
	"errors"
	"path/filepath"

	"github.com/replicator/replicator/filelock"
	"github.com/replicator/replicator/listenaddr"
)

// CheckEmbedded reports what would stop [StartEmbedded] with this listen
// address and data directory, without starting anything: the address
// taken by another process, or the schema log locked by another registry
// (a replicator already running on it). For `replicator check`.
func CheckEmbedded(listen, dataDir string) error {
	var errs []error
	if err := listenaddr.Check(listen, keyListen); err != nil {
		errs = append(errs, err)
	}
	if dataDir != "" {
		if err := filelock.CheckFree(dataDir, filepath.Join(dataDir, logFile)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
