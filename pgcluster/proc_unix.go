//go:build unix

package pgcluster

import (
	"errors"
	"io/fs"
	"os/exec"
	"syscall"
)

// ownProcessGroup runs cmd in a new process group, which cancellation kills
// whole: runuser, pg_ctl or initdb and whatever they started, except the
// postmaster (pg_ctl detaches it with setsid).
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// fileOwner returns the numeric owner and group of fi.
func fileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// stopProcess sends SIGSTOP to pid.
func stopProcess(pid int) error { return syscall.Kill(pid, syscall.SIGSTOP) }

// killProcess sends SIGKILL to pid; a process already gone is not an error.
func killProcess(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// processExists reports whether pid exists (possibly as a zombie, possibly
// owned by another user).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
