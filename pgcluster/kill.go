package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// killTimeout bounds how long Kill waits for the killed processes to be gone.
const killTimeout = 10 * time.Second

// Kill crashes the server: it sends SIGKILL to the postmaster and to every
// backend and auxiliary process, and returns once they are gone. (Without
// Linux's /proc it kills only the postmaster: its children exit by
// themselves, and a Start right away may find them still attached to shared
// memory.)
// The data directory is left as a crash leaves it: the next [Cluster.Start]
// runs crash recovery. Kill also removes what a reboot would clear (the stale
// postmaster.pid and the System V shared memory segment), so that Start does
// not depend on who reaps the dead postmaster.
//
// Every transaction whose COMMIT returned survives (synchronous_commit=on,
// the default; fsync=off loses nothing here, the kernel still holds every
// write). With synchronous_commit=off in Options.Settings, a commit returned
// within the last few hundred milliseconds may be lost, as PostgreSQL
// documents for asynchronous commit; logical decoding never sent it either.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return fmt.Errorf("kill postgres: %w", errNotRunning)
	}
	c.running = false
	if err := c.crash(); err != nil {
		return fmt.Errorf("kill postgres: %w", err)
	}
	return nil
}

// crash kills this cluster's postmaster and its children if one is running,
// waits until they are gone and clears the lock files and shared memory.
// It does nothing when no postmaster of this cluster is alive. c.mu must be held.
func (c *Cluster) crash() error {
	pidFile := filepath.Join(c.dataDir(), "postmaster.pid")
	pm, err := readPIDFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if alive(pm.pid) && c.isPostmaster(pm.pid) {
		if err := killTree(pm.pid); err != nil {
			return err
		}
	}
	if pm.shmID >= 0 {
		removeShm(pm.shmID)
	}
	// The dead postmaster may linger as a zombie until its new parent reaps
	// it; PostgreSQL would take its pid in a lock file for a live server.
	locks := []string{pidFile}
	if pm.socketDir != "" && pm.port > 0 {
		locks = append(locks, filepath.Join(pm.socketDir, fmt.Sprintf(".s.PGSQL.%d.lock", pm.port)))
	}
	for _, lock := range locks {
		if err := removeLock(lock, pm.pid); err != nil {
			return err
		}
	}
	return nil
}

// removeLock removes a PostgreSQL lock file if it still names pid.
func removeLock(path string, pid int) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	// The socket lock file of a standalone backend holds -pid.
	if p, err := strconv.Atoi(strings.TrimSpace(first)); err != nil || (p != pid && p != -pid) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// postmasterFile is what crash needs from postmaster.pid.
type postmasterFile struct {
	pid       int
	port      int    // 0 if not yet written
	socketDir string // first unix socket directory; "" if none
	shmID     int    // System V shared memory id; -1 if not yet written
}

// readPIDFile parses postmaster.pid, whose lines are: pid, data directory,
// start time, port, first socket directory, first listen address,
// "shmem-key shmem-id", status. The postmaster fills it in while starting up.
func readPIDFile(path string) (postmasterFile, error) {
	pm := postmasterFile{shmID: -1}
	b, err := os.ReadFile(path)
	if err != nil {
		return pm, err
	}
	lines := strings.Split(string(b), "\n")
	line := func(i int) string {
		if i < len(lines) {
			return strings.TrimSpace(lines[i])
		}
		return ""
	}
	pm.pid, err = strconv.Atoi(line(0))
	if err != nil || pm.pid <= 0 {
		return pm, fmt.Errorf("%s: bad pid %q", path, line(0))
	}
	pm.port, _ = strconv.Atoi(line(3))
	pm.socketDir = line(4)
	if f := strings.Fields(line(6)); len(f) == 2 {
		if id, err := strconv.Atoi(f[1]); err == nil {
			pm.shmID = id
		}
	}
	return pm, nil
}

// isPostmaster reports whether pid runs postgres on this cluster's data
// directory, so that a stale pid reused by another process is never killed.
// Without /proc it trusts the pid file.
func (c *Cluster) isPostmaster(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return !procAvailable()
	}
	return bytes.Contains(cmdline, []byte(c.dataDir()))
}

// killTree SIGKILLs pid and its children and waits until all are gone. It
// stops pid first, so that the list of children cannot change under us.
func killTree(pid int) error {
	procs := []int{pid}
	if procAvailable() {
		if err := stopProcess(pid); err != nil {
			return fmt.Errorf("stop postmaster %d: %w", pid, err)
		}
		// The signal is asynchronous: wait until the postmaster is stopped
		// (or dead) before listing children, so that no fork is in flight.
		if err := waitFor(func() bool { s := procState(pid); return s == 'T' || s == 'Z' || s == 'X' || s == 0 }); err != nil {
			return fmt.Errorf("stop postmaster %d: %w", pid, err)
		}
		procs = append(procs, childrenOf(pid)...)
	}
	for _, p := range procs {
		if err := killProcess(p); err != nil {
			return fmt.Errorf("kill %d: %w", p, err)
		}
	}
	if err := waitFor(func() bool {
		for _, p := range procs {
			if alive(p) {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("wait for postgres processes %v to exit: %w", procs, err)
	}
	return nil
}

// waitFor polls cond until it holds or killTimeout passes.
func waitFor(cond func() bool) error {
	deadline := time.Now().Add(killTimeout)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("still running after %v", killTimeout)
		}
		time.Sleep(delay)
	}
	return nil
}

// alive reports whether pid exists and is not a zombie (a dead process
// nobody reaped yet: an orphaned postmaster is reaped by init, or not at all
// in some containers).
func alive(pid int) bool {
	if !processExists(pid) {
		return false
	}
	s := procState(pid)
	return s != 'Z' && s != 'X'
}

// procAvailable reports whether /proc describes processes (Linux).
func procAvailable() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// procState returns the state letter from /proc/pid/stat (R, S, T, Z, ...),
// or 0 when it cannot be read.
func procState(pid int) byte {
	state, _, ok := procStat(pid)
	if !ok {
		return 0
	}
	return state
}

// procStat reads state and parent pid from /proc/pid/stat: "pid (comm) state ppid ...",
// where comm may hold spaces and parentheses.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var children []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(p); ok && ppid == pid {
			children = append(children, p)
		}
	}
	return children
}
