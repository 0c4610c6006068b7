package pgcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startCluster starts a cluster for one test and closes it at the end.
func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("cluster on port %d started in %v", c.Port(), time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logTail(c.LogPath(), 0))
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// queryString runs sql on dsn and returns the single text value it yields.
func queryString(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// reachableBase returns a base directory the postgres OS user can reach
// (t.TempDir() is 0700 root-owned when running as root).
func reachableBase(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c := startCluster(t, Options{})

	if got := queryString(t, c.DSN(""), "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level: got %q, want logical", got)
	}
	major, err := os.ReadFile(filepath.Join(c.Dir(), "data", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strconv.Itoa(c.Version()/10000), strings.TrimSpace(string(major)); got != want {
		t.Errorf("Version()/10000: got %s, want %s (Version() = %d)", got, want, c.Version())
	}

	const db = `app "db"`
	if err := c.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	insert := func(id int) {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
	}
	rows := func() string { return queryString(t, c.DSN(db), "SELECT string_agg(id::text, ',' ORDER BY id) FROM t") }

	insert(1)
	if err := c.Exec(ctx, "CREATE TABLE script (v text); INSERT INTO script VALUES ('simple protocol')"); err != nil {
		t.Fatalf("Exec of a two-statement script: %v", err)
	}
	if err := c.Exec(ctx, "INSERT INTO script VALUES ($1)", "bound"); err != nil {
		t.Fatalf("Exec with an argument: %v", err)
	}
	if got := queryString(t, c.DSN(""), "SELECT string_agg(v, ',' ORDER BY v) FROM script"); got != "bound,simple protocol" {
		t.Errorf("rows from Exec: got %q, want %q", got, "bound,simple protocol")
	}
	port := c.Port()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: got %v, want nil", err)
	}
	if err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("Exec after Stop: got nil error, want a connection error")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port after restart: got %d, want %d", c.Port(), port)
	}
	if got := rows(); got != "1" {
		t.Errorf("rows after Stop/Start: got %q, want 1", got)
	}

	insert(2)
	pm, err := readPIDFile(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	procs := append([]int{pm.pid}, childrenOf(pm.pid)...)
	logSize := fileSize(c.LogPath())
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if alive(p) {
			t.Errorf("process %d of the killed cluster is still alive", p)
		}
	}
	if err := c.Kill(); !errors.Is(err, errNotRunning) {
		t.Errorf("second Kill: got %v, want %v", err, errNotRunning)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rows(); got != "1,2" {
		t.Errorf("rows after Kill/Start: got %q, want 1,2", got)
	}
	if log := logTail(c.LogPath(), logSize); !strings.Contains(log, "automatic recovery in progress") {
		t.Errorf("server log after Kill/Start does not show crash recovery:\n%s", log)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after Close: got %v, want not exist", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := c.Start(ctx); err == nil {
		t.Error("Start after Close: got nil error")
	}
}

func TestSettingsAndPort(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, Options{
		Port: port,
		Settings: map[string]string{
			"max_replication_slots": "4",
			"replicator.note":       `it's a \ test`,
		},
	})
	if c.Port() != port {
		t.Errorf("Port(): got %d, want %d", c.Port(), port)
	}
	for _, tc := range []struct{ setting, want string }{
		{"max_replication_slots", "4"},
		{"max_wal_senders", "10"},
		{`"replicator.note"`, `it's a \ test`},
		{"unix_socket_directories", c.Dir()},
		{"TimeZone", "UTC"},
	} {
		if got := queryString(t, c.DSN(""), "SHOW "+tc.setting); got != tc.want {
			t.Errorf("SHOW %s: got %q, want %q", tc.setting, got, tc.want)
		}
	}

	t.Run("port taken", func(t *testing.T) {
		base := reachableBase(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		c2, err := Start(ctx, Options{BaseDir: base, Port: port})
		if err == nil {
			c2.Close()
			t.Fatal("Start on a taken port: got nil error")
		}
		if !errors.Is(err, errPortTaken) || !strings.Contains(err.Error(), "server log") {
			t.Errorf("Start on a taken port: got %v, want %v with the server log", err, errPortTaken)
		}
		assertEmpty(t, base)
	})
}

func TestStartFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	base := reachableBase(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{BaseDir: base, Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		c.Close()
		t.Fatal("Start with a bad setting: got nil error")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), `"shared_buffers"`) {
		t.Errorf("error does not quote the server log naming the bad setting: %v", err)
	}
	assertEmpty(t, base)
}

func TestBaseDirReachable(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{BaseDir: base})
	if os.Geteuid() != 0 {
		// Our own user can always reach its own temporary directory.
		if err != nil {
			t.Fatalf("Start in t.TempDir(): %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil {
		c.Close()
		t.Fatal("Start as root in a 0700 root-owned BaseDir: got nil error")
	}
	if !strings.Contains(err.Error(), "cannot traverse") {
		t.Errorf("got %v, want an error saying postgres cannot traverse %s", err, base)
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
		want string // substring of the error; "" means valid
	}{
		{name: "zero", opts: Options{}},
		{name: "settings", opts: Options{Port: 5433, Settings: map[string]string{"work_mem": "64MB", "auto_explain.log_min_duration": "0"}}},
		{name: "negative port", opts: Options{Port: -1}, want: "port -1"},
		{name: "port too big", opts: Options{Port: 70000}, want: "port 70000"},
		{name: "port setting", opts: Options{Settings: map[string]string{"PORT": "1"}}, want: "use Options.Port"},
		{name: "injection", opts: Options{Settings: map[string]string{"a = 1\nb": "2"}}, want: "not a parameter name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.opts.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestOptionsConfig(t *testing.T) {
	t.Parallel()
	got := Options{Settings: map[string]string{"Fsync": "on", "search_path": `'x'`}}.config("/tmp/c", 1234)
	for _, want := range []string{
		"fsync = 'on'\n",
		"port = '1234'\n",
		"search_path = '''x'''\n",
		"unix_socket_directories = '/tmp/c'\n",
		"wal_level = 'logical'\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "fsync") != 1 {
		t.Errorf("config sets fsync more than once:\n%s", got)
	}
}

func TestFindBinaries(t *testing.T) {
	// Not parallel: it changes the process environment.
	t.Run("env points nowhere", func(t *testing.T) {
		t.Setenv(BinEnv, "/nonexistent/pg/bin")
		_, err := FindBinaries()
		if err == nil {
			t.Fatal("got nil error")
		}
		for _, want := range []string{BinEnv, "/nonexistent/pg/bin", "initdb", "apt-get install -y postgresql"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("found", func(t *testing.T) {
		t.Setenv(BinEnv, "") // restored after the test
		os.Unsetenv(BinEnv)
		dir, err := FindBinaries()
		if err != nil {
			t.Fatal(err)
		}
		if missing := missingBinaries(dir); len(missing) > 0 {
			t.Errorf("FindBinaries() = %s, which lacks %v", dir, missing)
		}
		t.Setenv(BinEnv, dir)
		if got, err := FindBinaries(); got != dir || err != nil {
			t.Errorf("with %s=%s: got %q, %v; want %q, nil", BinEnv, dir, got, err, dir)
		}
	})
}

func TestDebianBinaries(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, v := range []string{"9.6", "13", "16", "17"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range serverBinaries {
			if v == "17" && name == "postgres" {
				continue // incomplete install: skipped
			}
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := debianBinaries(root), filepath.Join(root, "16", "bin"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := debianBinaries(filepath.Join(root, "missing")); got != "" {
		t.Errorf("missing root: got %q, want empty", got)
	}
}

// cancelOnWrite cancels a context at the first output of initdb.
type cancelOnWrite struct{ cancel context.CancelFunc }

func (w cancelOnWrite) Write(p []byte) (int, error) {
	w.cancel()
	return len(p), nil
}

func TestStartCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	base := reachableBase(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c, err := Start(ctx, Options{BaseDir: base, Log: cancelOnWrite{cancel}})
	if err == nil {
		c.Close()
		t.Fatal("Start cancelled during initdb: got nil error")
	}
	t.Logf("Start error: %v", err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want %v", err, context.Canceled)
	}
	assertEmpty(t, base)
}
