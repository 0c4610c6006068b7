// Package pgcluster runs throwaway PostgreSQL clusters: initdb into a fresh
// directory, a server on a free port of 127.0.0.1 configured for logical
// replication, and removal of everything on [Cluster.Close]. Every test that
// needs PostgreSQL uses it (through [github.com/replicator/replicator/pgcluster/pgtest]),
// and so does `replicator demo`.
//
// It uses the machine's PostgreSQL server binaries (see [FindBinaries]). As
// root, initdb and postgres refuse to run, so they run as the postgres OS user
// through runuser, and the cluster directory is owned by that user.
//
// A cluster never touches the system PostgreSQL: it has its own data
// directory, port and unix socket directory.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	confFile = "pgcluster.conf" // our settings, included from postgresql.conf
	logFile  = "postgres.log"   // server log, in the cluster directory

	// closeTimeout bounds the immediate shutdown in Close, which takes no ctx.
	closeTimeout = 30 * time.Second
	// readyTimeout bounds the wait for the first connection after pg_ctl -w
	// returned, when ctx has no earlier deadline.
	readyTimeout = 30 * time.Second
	// portAttempts is how often Start picks a new free port when another
	// process took the one it picked before the server could bind it.
	portAttempts = 3
)

// errPortTaken is returned by start when the server could not bind its port.
var errPortTaken = errors.New("port already in use")

// Cluster is a PostgreSQL cluster created by [Start]: a data directory and,
// while running, a postmaster. It is safe for concurrent use; Start, Stop,
// Kill and Close are serialized.
type Cluster struct {
	run     runner
	dir     string // cluster directory: data/, the server log, the unix socket
	port    int    // fixed once Start returns
	version int    // server_version_num, fixed once Start returns

	mu      sync.Mutex // guards running and closed; held for a whole Start, Stop, Kill or Close
	running bool       // a postmaster we started is up
	closed  bool       // Close was called
}

// Start creates a cluster in a new directory under opts.BaseDir with initdb
// (superuser postgres, trust authentication, UTF8, locale C), writes the
// settings described in [Options], starts the server with pg_ctl and returns
// once it accepts connections. If anything fails, the error includes the
// program output or the tail of the server log, and nothing is left behind.
//
// The caller must call [Cluster.Close].
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("pgcluster options: %w", err)
	}
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinaries(); err != nil {
			return nil, err
		}
	}
	r, err := newRunner(binDir, opts.Log)
	if err != nil {
		return nil, err
	}
	base := opts.BaseDir
	if base == "" {
		base = os.TempDir()
	}
	base, err = filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("pgcluster base directory: %w", err)
	}
	if err := r.reachable(base); err != nil {
		return nil, fmt.Errorf("pgcluster base directory: %w", err)
	}
	dir, err := os.MkdirTemp(base, "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{run: r, dir: dir}
	if err := c.create(ctx, opts); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// create runs initdb and the first start, picking another free port if the
// one picked was taken before the server bound it.
func (c *Cluster) create(ctx context.Context, opts Options) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.run.chown(c.dir); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	if _, err := c.run.run(ctx, c.dir, "initdb", "-D", c.dataDir(),
		"-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return err
	}
	if err := appendFile(filepath.Join(c.dataDir(), "postgresql.conf"), "\ninclude '"+confFile+"'\n"); err != nil {
		return fmt.Errorf("configure cluster: %w", err)
	}
	for attempt := 1; ; attempt++ {
		c.port = opts.Port
		if c.port == 0 {
			var err error
			if c.port, err = freePort(); err != nil {
				return err
			}
		}
		if err := c.writeConfig(opts); err != nil {
			return fmt.Errorf("configure cluster: %w", err)
		}
		err := c.start(ctx)
		if err == nil {
			break
		}
		if opts.Port != 0 || attempt == portAttempts || !errors.Is(err, errPortTaken) {
			return err
		}
	}
	var err error
	c.version, err = c.serverVersion(ctx)
	return err
}

// writeConfig writes our settings file, which postgresql.conf includes.
func (c *Cluster) writeConfig(opts Options) error {
	path := filepath.Join(c.dataDir(), confFile)
	if err := os.WriteFile(path, []byte(opts.config(c.dir, c.port)), 0o600); err != nil {
		return err
	}
	return c.run.chown(path)
}

// Start starts the server again after [Cluster.Stop] or [Cluster.Kill], with
// the same data directory and port, and returns once it accepts connections.
// After Kill, PostgreSQL runs crash recovery first.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return errors.New("start postgres: cluster is closed")
	case c.running:
		return errors.New("start postgres: already running")
	}
	return c.start(ctx)
}

// start runs pg_ctl start and waits for a connection. c.mu must be held.
func (c *Cluster) start(ctx context.Context) error {
	logStart := fileSize(c.LogPath())
	_, err := c.run.run(ctx, c.dir, "pg_ctl", "start", "-D", c.dataDir(), "-l", c.LogPath(),
		"-w", "-t", timeoutSeconds(ctx, time.Minute), "-s")
	if err == nil {
		c.running = true
		if err = c.waitReady(ctx); err == nil {
			return nil
		}
	}
	// pg_ctl may have started a postmaster before it failed or was
	// cancelled: leave nothing running.
	killErr := c.crash()
	c.running = false
	serverLog := logTail(c.LogPath(), logStart)
	if strings.Contains(serverLog, "could not bind") || strings.Contains(serverLog, "already in use") {
		err = fmt.Errorf("%w: %w", errPortTaken, err)
	}
	return errors.Join(fmt.Errorf("start postgres on port %d: %w\nserver log %s:%s",
		c.port, err, c.LogPath(), indent(serverLog)), killErr)
}

// waitReady polls until the server accepts a connection. pg_ctl -w has
// already waited for the postmaster to report ready; this also proves TCP on
// 127.0.0.1 works.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for connections: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// serverVersion asks the server for server_version_num.
func (c *Cluster) serverVersion(ctx context.Context) (int, error) {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return 0, fmt.Errorf("server version: %w", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, "SHOW server_version_num").Scan(&s); err != nil {
		return 0, fmt.Errorf("server version: %w", err)
	}
	return strconv.Atoi(s)
}

// Stop shuts the server down in fast mode (active transactions are rolled
// back, clients disconnected, a shutdown checkpoint written) and waits until
// it is gone. Stopping a cluster that is not running does nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	return c.stop(ctx, "fast")
}

// stop runs pg_ctl stop in mode and waits. c.mu must be held.
func (c *Cluster) stop(ctx context.Context, mode string) error {
	if _, err := c.run.run(ctx, c.dir, "pg_ctl", "stop", "-D", c.dataDir(), "-m", mode,
		"-w", "-t", timeoutSeconds(ctx, time.Minute), "-s"); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	c.running = false
	return nil
}

// Close stops the server in immediate mode if it is running (SIGKILL if
// that fails) and removes the cluster directory. It is idempotent; after
// Close no other method may be used except the getters.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.running {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		err := c.stop(ctx, "immediate")
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	// A failed stop, or a failed first start, may have left a postmaster.
	if err := c.crash(); err != nil {
		errs = append(errs, err)
	}
	c.running = false
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
	}
	return errors.Join(errs...)
}

// Port returns the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster directory: the data directory is Dir()/data, the
// server log and the unix socket are in Dir() itself.
func (c *Cluster) Dir() string { return c.dir }

// LogPath returns the server log file. It survives restarts (appended to)
// and is removed by Close.
func (c *Cluster) LogPath() string { return filepath.Join(c.dir, logFile) }

// Version returns the server's server_version_num, for example 150014 for
// 15.14, for tests that depend on the major version (Version()/10000).
func (c *Cluster) Version() int { return c.version }

// DSN returns a URL connecting to database ("" means postgres) as the
// superuser postgres over TCP, without TLS.
func (c *Cluster) DSN(database string) string {
	if database == "" {
		database = "postgres"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name (quoted as an identifier).
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// Exec runs sql in the postgres database on a new connection, closed before
// it returns. Without args it uses the simple protocol, so sql may hold
// several statements; with args, each $n is a bound parameter.
func (c *Cluster) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	_, err = conn.Exec(ctx, sql, args...)
	closeErr := conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return closeErr
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// timeoutSeconds is the pg_ctl -t value: the time left before ctx's
// deadline, or def.
func timeoutSeconds(ctx context.Context, def time.Duration) string {
	d := def
	if deadline, ok := ctx.Deadline(); ok {
		d = time.Until(deadline)
	}
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, text)
	return errors.Join(err, f.Close())
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns at most the last 4 KiB of the server log written after
// offset from, starting on a line boundary.
func logTail(path string, from int64) string {
	const tailBytes = 4 << 10
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(path)
	if from > size {
		from = 0
	}
	cut := false
	if size-from > tailBytes {
		from, cut = size-tailBytes, true
	}
	b := make([]byte, size-from)
	n, _ := f.ReadAt(b, from)
	s := string(b[:n])
	if i := strings.IndexByte(s, '\n'); cut && i >= 0 {
		s = s[i+1:]
	}
	return s
}
