//go:build linux && (amd64 || arm64)

package pgcluster

import "syscall"

// removeShm removes the System V shared memory segment id (IPC_RMID), as a
// reboot would. PostgreSQL keeps only a small interlock segment there; a dead
// cluster's segment would otherwise outlive its directory. Errors are ignored:
// the segment may already be gone.
func removeShm(id int) {
	const ipcRmid = 0
	_, _, _ = syscall.Syscall(syscall.SYS_SHMCTL, uintptr(id), ipcRmid, 0)
}
