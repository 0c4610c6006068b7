package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// stopTimeout bounds a clean stop (SIGTERM) before SIGKILL.
const stopTimeout = 60 * time.Second

// child is a process started by the benchmark: replicator, the bare
// reader or the separate broker. Its stderr lines go to a log file, and the
// first line containing each watched pattern is timestamped as it arrives.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time

	done    chan struct{} // closed once the process has exited
	waitErr error         // set before done is closed

	out *lineWriter // stderr
	std *syncBuffer // stdout
}

// startChild starts bin with args, logging its stderr to logPath and
// timestamping the first line that contains each of patterns. The child
// gets the environment without REPLICATOR_* variables, which would
// override its config.
func startChild(name, logPath string, patterns []string, bin string, args ...string) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	c := &child{name: name, logPath: logPath, done: make(chan struct{}), std: &syncBuffer{}}
	c.out = newLineWriter(logFile, patterns)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout = c.std
	c.cmd.Stderr = c.out
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REPLICATOR_") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { // owned by c: done is closed when it ends
		c.waitErr = c.cmd.Wait() // also waits for the stderr copy
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

// dir is the directory of the child's log, where it keeps its data.
func (c *child) dir() string { return filepath.Dir(c.logPath) }

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// waitLine waits until a line containing pattern (one of those given to
// startChild) has been written, and returns when it arrived.
func (c *child) waitLine(ctx context.Context, pattern string, timeout time.Duration) (time.Time, error) {
	ch, ok := c.out.watch[pattern]
	if !ok {
		return time.Time{}, fmt.Errorf("%s: pattern %q not watched", c.name, pattern)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch.seen:
		return ch.at, nil
	case <-c.done:
		select {
		case <-ch.seen: // written just before exiting
			return ch.at, nil
		default:
		}
		return time.Time{}, fmt.Errorf("%s exited (%v) before logging %q:\n%s", c.name, c.waitErr, pattern, c.out.tail())
	case <-t.C:
		return time.Time{}, fmt.Errorf("%s did not log %q within %s:\n%s", c.name, pattern, timeout, c.out.tail())
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// alive reports an error if the child has exited.
func (c *child) alive() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v):\n%s", c.name, c.waitErr, c.out.tail())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for a clean exit, killing the process if it
// does not exit within stopTimeout. A non-zero exit is an error.
func (c *child) stop() error {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("%s did not stop within %s of SIGTERM; killed:\n%s", c.name, stopTimeout, c.out.tail())
		}
	}
	if c.waitErr != nil {
		return fmt.Errorf("%s: %w:\n%s", c.name, c.waitErr, c.out.tail())
	}
	return nil
}

// kill ends the child at once, for cleanup after a failure.
func (c *child) kill() {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// stdout returns what the child wrote to stdout.
func (c *child) stdout() []byte { return c.std.Bytes() }

// procCPU returns the user+system CPU time pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procPeakRSS returns pid's peak resident set size (VmHWM) in bytes.
func procPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmHWM: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// lineWatch is the first arrival of a pattern.
type lineWatch struct {
	seen chan struct{} // closed on the first matching line
	at   time.Time     // set before seen is closed
}

// lineWriter splits what a child writes into lines, appends them to a log
// file, keeps the last few for error messages, and timestamps the first
// line matching each watched pattern. exec copies to it from one goroutine.
type lineWriter struct {
	file  *os.File
	watch map[string]*lineWatch // fixed at construction; read concurrently

	mu      sync.Mutex // guards partial and last
	partial []byte
	last    []string
}

func newLineWriter(f *os.File, patterns []string) *lineWriter {
	w := &lineWriter{file: f, watch: map[string]*lineWatch{}}
	for _, p := range patterns {
		w.watch[p] = &lineWatch{seen: make(chan struct{})}
	}
	return w
}

func (w *lineWriter) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.file.Write(p) // the log is best effort; the process must not block on it
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		for pattern, lw := range w.watch {
			select {
			case <-lw.seen:
				continue
			default:
			}
			if strings.Contains(line, pattern) {
				lw.at = now
				close(lw.seen)
			}
		}
		w.last = append(w.last, line)
		if len(w.last) > 20 {
			w.last = w.last[1:]
		}
	}
	return len(p), nil
}

// tail returns the last lines written, indented.
func (w *lineWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := append(append([]string(nil), w.last...), string(w.partial))
	return "    " + strings.Join(lines, "\n    ")
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// tcpSegmentsSent returns how many data segments the loopback TCP
// connection from local port src to port dst has sent so far, as ss
// (iproute2) reports it (data_segs_out). On loopback the sender pays for
// every segment's receive processing too, so this count says much of what
// a walsender's CPU time will be (bench/analysis.md).
func tcpSegmentsSent(ctx context.Context, src, dst int) (int64, error) {
	if src <= 0 || dst <= 0 {
		return 0, fmt.Errorf("not a TCP connection (ports %d, %d)", src, dst)
	}
	filter := fmt.Sprintf("( sport = :%d and dport = :%d )", src, dst)
	out, err := exec.CommandContext(ctx, "ss", "-tinH", "state", "established", filter).Output()
	if err != nil {
		return 0, fmt.Errorf("ss %s: %w", filter, err)
	}
	n, err := parseDataSegsOut(out)
	if err != nil {
		return 0, fmt.Errorf("ss %s: %w", filter, err)
	}
	return n, nil
}

// parseDataSegsOut reads data_segs_out from the output of ss -ti for one
// connection.
func parseDataSegsOut(out []byte) (int64, error) {
	var found []int64
	for _, field := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(field, "data_segs_out:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("data_segs_out %q: %w", v, err)
			}
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("want data_segs_out of one connection, found %d", len(found))
	}
	return found[0], nil
}

// cpuWindow is the CPU time of a reader process and of its walsender
// since the window started.
type cpuWindow struct {
	reader     *child
	walsender  int // pid
	reader0    time.Duration
	walsender0 time.Duration
}

// startCPU starts a window on reader and its walsender wal.
func startCPU(reader *child, wal walsender) (*cpuWindow, error) {
	w := &cpuWindow{reader: reader, walsender: wal.pid}
	var err1, err2 error
	w.reader0, err1 = procCPU(reader.pid())
	w.walsender0, err2 = procCPU(wal.pid)
	return w, errors.Join(err1, err2)
}

// end returns the CPU the reader and its walsender spent since the window
// started.
func (w *cpuWindow) end() (cpuFigures, error) {
	r, err1 := procCPU(w.reader.pid())
	wal, err2 := procCPU(w.walsender)
	return cpuFigures{reader: r - w.reader0, walsender: wal - w.walsender0}, errors.Join(err1, err2)
}

// cpuFigures are a window's CPU times.
type cpuFigures struct{ reader, walsender time.Duration }

// add puts the CPU times per row of smp (its "rows") into smp.
func (f cpuFigures) add(smp sample) {
	rows := max(smp["rows"], 1)
	smp["cpu_us"] = float64(f.reader) / float64(time.Microsecond) / rows
	smp["walsender_cpu_us"] = float64(f.walsender) / float64(time.Microsecond) / rows
}

// cpuUsage returns the CPU time (user + system) of a child that has
// exited, from its rusage: for a process that ends by itself (`replicator
// rebuild`), whose /proc entry is gone when it is read. (Not its maxrss:
// on Linux that counts the benchmark's own pages the child held between
// fork and exec, which grow with what the benchmark keeps in memory.)
func (c *child) cpuUsage() (time.Duration, error) {
	select {
	case <-c.done:
	default:
		return 0, fmt.Errorf("%s is still running", c.name)
	}
	ps := c.cmd.ProcessState
	return ps.UserTime() + ps.SystemTime(), nil
}

// wait waits for a child that ends by itself, at most timeout, and fails
// if it exited with an error. It returns when it exited and its peak RSS
// (VmHWM, which only grows), read every pollInterval while it ran: the
// last reading misses at most the last interval.
func (c *child) wait(ctx context.Context, timeout time.Duration) (time.Time, int64, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var peak int64
	for done := false; !done; {
		select {
		case <-c.done:
			done = true
		case <-tick.C:
			if rss, err := procPeakRSS(c.pid()); err == nil { // gone once it has exited
				peak = max(peak, rss)
			}
		case <-t.C:
			c.kill()
			return time.Time{}, 0, fmt.Errorf("%s did not finish within %s; killed:\n%s", c.name, timeout, c.out.tail())
		case <-ctx.Done():
			c.kill()
			return time.Time{}, 0, ctx.Err()
		}
	}
	at := time.Now()
	if c.waitErr != nil {
		return at, 0, fmt.Errorf("%s: %w:\n%s", c.name, c.waitErr, c.out.tail())
	}
	return at, peak, nil
}
