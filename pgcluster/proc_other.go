//go:build !unix

package pgcluster

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
)

// errUnsupported is returned where a cluster needs Unix process control.
var errUnsupported = errors.New("pgcluster needs a Unix system")

// ownProcessGroup lets cancellation kill cmd itself only.
func ownProcessGroup(*exec.Cmd) {}

// fileOwner is unknown here; it only matters when running as root.
func fileOwner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// stopProcess is not supported: Kill is Unix only.
func stopProcess(int) error { return errUnsupported }

// killProcess kills pid.
func killProcess(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	return p.Kill()
}

// processExists reports whether pid can be found.
func processExists(pid int) bool {
	_, err := os.FindProcess(pid)
	return err == nil
}
