package registry

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/replicator/replicator/filelock"
)

// CheckEmbedded reports what would stop [StartEmbedded] with this listen
// address and data directory, without starting anything: the address
// taken by another process, or the schema log locked by another registry
// (a replicator already running on it). For `replicator check`.
func CheckEmbedded(listen, dataDir string) error {
	var errs []error
	if ln, err := net.Listen("tcp", listen); err != nil {
		errs = append(errs, fmt.Errorf("%s: cannot listen on %s (%w): another process (a replicator already running?) may hold the port; stop it or set %s to a free address", keyListen, listen, err, keyListen))
	} else if err := ln.Close(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", keyListen, err))
	}
	if dataDir != "" {
		if err := filelock.CheckFree(dataDir, filepath.Join(dataDir, logFile)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
