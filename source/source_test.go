package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// waitTimeout bounds every wait of these tests for PostgreSQL or the source.
// Nothing here takes that long when it works; it only turns a hang into a
// failure that says what was awaited.
const waitTimeout = 30 * time.Second

// fakeHandler is the Handler of these tests. It records a copy of every
// change and acknowledges it at once, or, with hold set, keeps the acks
// until the test releases them. Flush waits until every change handed over
// is acknowledged, like a producer flushing its buffer.
type fakeHandler struct {
	// before, if set, runs at the start of Handle (outside the lock) with
	// the number of changes received so far; an error is returned by
	// Handle. Tests use it to block or fail the source mid-way.
	before func(ctx context.Context, n int, c *Change) error

	mu          sync.Mutex    // guards the fields below
	hold        bool          // keep acks until ack/ackAll
	changes     []Change      // copies, Ack cleared
	held        map[int]Ack   // index in changes → ack not yet given
	outstanding int           // changes handed over and not yet acknowledged
	drained     chan struct{} // closed while outstanding == 0
	changed     chan struct{} // closed and replaced on every Handle
}

func newFakeHandler(hold bool) *fakeHandler {
	drained := make(chan struct{})
	close(drained)
	return &fakeHandler{hold: hold, held: map[int]Ack{}, drained: drained, changed: make(chan struct{})}
}

// truncatingHandler is a fakeHandler that takes TRUNCATEs too, recorded
// as changes.
type truncatingHandler struct{ *fakeHandler }

func (h truncatingHandler) Truncate(ctx context.Context, c *Change) error { return h.Handle(ctx, c) }

func (h *fakeHandler) Handle(ctx context.Context, c *Change) error {
	if c.Text != nil { // valid only during Handle: keep the decoded row
		row, err := c.Values()
		if err != nil {
			return err
		}
		decoded := *c
		decoded.New, decoded.Text = row, nil
		c = &decoded
	}
	if h.before != nil {
		h.mu.Lock()
		n := len(h.changes)
		h.mu.Unlock()
		if err := h.before(ctx, n, c); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cp := *c // c is reused by the source; its slices are not
	cp.Ack = Ack{}
	h.changes = append(h.changes, cp)
	if h.hold {
		h.held[len(h.changes)-1] = c.Ack
		if h.outstanding == 0 {
			h.drained = make(chan struct{})
		}
		h.outstanding++
	} else {
		c.Ack.Done()
	}
	close(h.changed)
	h.changed = make(chan struct{})
	return nil
}

func (h *fakeHandler) Flush(ctx context.Context) error {
	h.mu.Lock()
	drained, n := h.drained, h.outstanding
	h.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fake flush: %d changes unacknowledged: %w", n, ctx.Err())
	}
}

// ack acknowledges the held changes with the given indexes (in the order
// they were handed over).
func (h *fakeHandler) ack(t *testing.T, idx ...int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range idx {
		a, ok := h.held[i]
		if !ok {
			t.Fatalf("ack of change %d: not held (have %d changes)", i, len(h.changes))
		}
		delete(h.held, i)
		a.Done()
		h.outstanding--
		if h.outstanding == 0 {
			close(h.drained)
		}
	}
}

// ackAll acknowledges every held change and stops holding new ones.
func (h *fakeHandler) ackAll(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	idx := make([]int, 0, len(h.held))
	for i := range h.held {
		idx = append(idx, i)
	}
	h.hold = false
	h.mu.Unlock()
	h.ack(t, idx...)
}

func (h *fakeHandler) got() []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.changes)
}

// running is one Source.Run in a goroutine owned by the test.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done is closed
}

// run starts src.Run(ctx, h). The test stops it with stop (or it ends by
// itself, see wait); a cleanup cancels it in any case and waits for it.
func run(t *testing.T, src *Source, h Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = src.Run(ctx, h)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			t.Errorf("Source.Run did not return %v after its context was cancelled", waitTimeout)
		}
	})
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// wait returns Run's result once it has returned.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(waitTimeout):
		t.Fatalf("Source.Run did not return within %v", waitTimeout)
		return nil
	}
}

// waitChanges waits until cond holds for the changes h received and
// returns them. It fails at once if Run returns in the meantime.
func (r *running) waitChanges(t *testing.T, h *fakeHandler, what string, cond func([]Change) bool) []Change {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		got, changed := slices.Clone(h.changes), h.changed
		h.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-changed:
		case <-r.done:
			t.Fatalf("Source.Run returned %v while waiting for %s; got %d changes: %s", r.err, what, len(got), summarize(got))
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; got %d changes: %s", what, len(got), summarize(got))
		}
	}
}

// atLeast is a waitChanges condition: n changes or more.
func atLeast(n int) func([]Change) bool {
	return func(c []Change) bool { return len(c) >= n }
}

// summarize renders changes as "op table id" for failure messages.
func summarize(cs []Change) string {
	var b strings.Builder
	for i, c := range cs {
		if i == 20 {
			fmt.Fprintf(&b, " … (%d more)", len(cs)-i)
			break
		}
		row := c.New
		if row == nil {
			row = c.Old
		}
		var id any
		if len(row) > 0 {
			id = row[0]
		}
		fmt.Fprintf(&b, "[%s %s %v @%s] ", c.Op, c.Table.Name, id, c.LSN)
	}
	return b.String()
}

// logBuffer collects the source's log lines; it is written from the Run
// goroutine and read by the test.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startCluster starts the PostgreSQL cluster one test function shares
// between its subtests, with room for their slots and walsenders.
func startCluster(t *testing.T, opts ...func(*pgcluster.Options)) *pgcluster.Cluster {
	t.Helper()
	return pgtest.Start(t, append([]func(*pgcluster.Options){
		pgtest.Setting("max_replication_slots", "30"),
		pgtest.Setting("max_wal_senders", "30"),
	}, opts...)...)
}

// testDB is one database of a shared cluster, owned by one (sub)test. Its
// name doubles as the slot name (slots are cluster-wide) and the
// publication name.
type testDB struct {
	t    *testing.T
	pg   *pgcluster.Cluster
	name string
	dsn  string
	conn *pgx.Conn // for the test goroutine only
}

func newDB(t *testing.T, pg *pgcluster.Cluster, name, ddl string) *testDB {
	t.Helper()
	ctx := context.Background()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	db := &testDB{t: t, pg: pg, name: name, dsn: pg.DSN(name)}
	db.conn = pgtest.Connect(t, db.dsn)
	if ddl != "" {
		db.exec(ddl)
	}
	return db
}

// in returns a copy of db for subtest t, with its own connection.
func (db *testDB) in(t *testing.T) *testDB {
	c := *db
	c.t = t
	c.conn = pgtest.Connect(t, db.dsn)
	return &c
}

// exec runs sql (several statements allowed without args).
func (db *testDB) exec(sql string, args ...any) {
	db.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := db.conn.Exec(ctx, sql, args...); err != nil {
		db.t.Fatalf("exec %q: %v", sql, err)
	}
}

// lsn returns the result of a query that yields one pg_lsn.
func (db *testDB) lsn(sql string) pglogrepl.LSN {
	db.t.Helper()
	var s string
	if err := db.conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		db.t.Fatalf("%s: %v", sql, err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		db.t.Fatalf("%s: %v", sql, err)
	}
	return l
}

// table loads a table of this database with LoadTable.
func (db *testDB) table(name string) relation.Table {
	db.t.Helper()
	tbl, err := LoadTable(context.Background(), db.conn, "public", name)
	if err != nil {
		db.t.Fatalf("LoadTable(%s): %v", name, err)
	}
	return tbl
}

// newSource builds a source for the given tables of this database with a
// fast status interval; mod adjusts the configuration.
func (db *testDB) newSource(stateDir string, logs *logBuffer, mod func(*Config), tables ...string) *Source {
	db.t.Helper()
	cfg := Config{
		URL:             db.dsn,
		Slot:            db.name,
		Publication:     db.name,
		StateDir:        stateDir,
		StatusInterval:  50 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
	}
	if logs != nil {
		cfg.Logger = logs.logger()
	}
	if mod != nil {
		mod(&cfg)
	}
	var ts []relation.Table
	for _, name := range tables {
		ts = append(ts, db.table(name))
	}
	src, err := New(cfg, ts)
	if err != nil {
		db.t.Fatalf("New: %v", err)
	}
	return src
}

// slot reads this database's slot (named like the database).
func (db *testDB) slot() slotInfo {
	db.t.Helper()
	s, err := lookupSlot(context.Background(), db.conn, db.name)
	if err != nil {
		db.t.Fatal(err)
	}
	return s
}

// waitSlot polls the slot until cond holds.
func (db *testDB) waitSlot(what string, cond func(slotInfo) bool) slotInfo {
	db.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s := db.slot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			db.t.Fatalf("timed out waiting for slot %s: %s; last seen %+v", db.name, what, s)
		}
		time.Sleep(20 * time.Millisecond) // polling interval toward the deadline
	}
}

// waitInactive waits until no walsender holds the slot any more: after Run
// returns, the server notices the closed connection asynchronously, and a
// new Run refuses an active slot.
func (db *testDB) waitInactive() {
	db.t.Helper()
	db.waitSlot("inactive", func(s slotInfo) bool { return s.exists && !s.active })
}

// waitStatusReplies waits until the walsender of this database's slot has
// processed n more standby status updates from the source than when it was
// called (pg_stat_replication.reply_time moves on each one), so an
// assertion about confirmed_flush_lsn after it is not a race with the next
// update.
func (db *testDB) waitStatusReplies(r *running, n int) {
	db.t.Helper()
	const q = `SELECT coalesce(r.reply_time::text, '') FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`
	read := func() string {
		var s string
		if err := db.conn.QueryRow(context.Background(), q, db.name).Scan(&s); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			db.t.Fatalf("read reply_time: %v", err)
		}
		return s
	}
	last := read()
	deadline := time.Now().Add(waitTimeout)
	for seen := 0; seen < n; {
		if time.Now().After(deadline) {
			db.t.Fatalf("timed out waiting for %d standby status updates on slot %s (saw %d)", n, db.name, seen)
		}
		select {
		case <-r.done:
			db.t.Fatalf("Source.Run returned %v while waiting for standby status updates", r.err)
		default:
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
		if cur := read(); cur != "" && cur != last {
			last = cur
			seen++
		}
	}
}

// state reads the snapshot state file of this database's slot.
func (db *testDB) state(dir string) snapshotState {
	db.t.Helper()
	s, ok, err := readState(dir, db.name)
	if err != nil || !ok {
		db.t.Fatalf("read snapshot state in %s: ok=%v err=%v", dir, ok, err)
	}
	return s
}

// waitState polls the snapshot state file until it exists and cond holds.
func (db *testDB) waitState(dir, what string, cond func(snapshotState) bool) snapshotState {
	db.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s, ok, err := readState(dir, db.name)
		if err != nil {
			db.t.Fatal(err)
		}
		if ok && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			db.t.Fatalf("timed out waiting for the snapshot state of %s: %s; last seen %+v (exists %v)", db.name, what, s, ok)
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
}

// waitStreamable waits until the source has its slot and the initial
// snapshot (if any) is complete: every transaction committed from now on
// reaches the handler through the stream.
func (db *testDB) waitStreamable(dir string) {
	db.t.Helper()
	db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
}

// dsnAs returns dsn with another user name (the clusters trust local
// connections, so no password is needed).
func dsnAs(t *testing.T, dsn, user string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// ids returns the first column (an int32 id) of each change's row (New, or
// Old for a delete).
func ids(cs []Change) []int32 {
	out := make([]int32, 0, len(cs))
	for _, c := range cs {
		row := c.New
		if row == nil {
			row = c.Old
		}
		out = append(out, row[0].(int32))
	}
	return out
}

// filter returns the changes for which keep holds.
func filter(cs []Change, keep func(Change) bool) []Change {
	var out []Change
	for _, c := range cs {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func byOp(op Op) func(Change) bool { return func(c Change) bool { return c.Op == op } }

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tables := []relation.Table{{Schema: "public", Name: "t"}}
	ok := Config{URL: "postgres://x", Slot: "s", Publication: "p", StateDir: t.TempDir()}
	tests := []struct {
		name    string
		mod     func(*Config)
		tables  []relation.Table
		wantErr string
	}{
		{name: "defaults", mod: func(*Config) {}, tables: tables},
		{name: "snapshot never", mod: func(c *Config) { c.Snapshot = SnapshotNever }, tables: tables},
		{name: "no url", mod: func(c *Config) { c.URL = "" }, tables: tables, wantErr: "required"},
		{name: "no slot", mod: func(c *Config) { c.Slot = "" }, tables: tables, wantErr: "required"},
		{name: "no publication", mod: func(c *Config) { c.Publication = "" }, tables: tables, wantErr: "required"},
		{name: "no state dir", mod: func(c *Config) { c.StateDir = "" }, tables: tables, wantErr: "required"},
		{name: "no tables", mod: func(*Config) {}, wantErr: "no tables"},
		{name: "bad snapshot mode", mod: func(c *Config) { c.Snapshot = "always" }, tables: tables, wantErr: `snapshot mode "always"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.mod(&cfg)
			src, err := New(cfg, tt.tables)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: got error %v, want nil", err)
			}
			if src.cfg.StatusInterval != 10*time.Second || src.cfg.ShutdownTimeout != 30*time.Second || src.log == nil {
				t.Errorf("defaults: got status %v, shutdown %v, logger %v; want 10s, 30s, non-nil",
					src.cfg.StatusInterval, src.cfg.ShutdownTimeout, src.log)
			}
			if cfg.Snapshot == "" && src.cfg.Snapshot != SnapshotInitial {
				t.Errorf("snapshot mode: got %q, want %q", src.cfg.Snapshot, SnapshotInitial)
			}
		})
	}
}

func TestOpString(t *testing.T) {
	t.Parallel()
	for op, want := range map[Op]string{OpInsert: "c", OpUpdate: "u", OpDelete: "d", OpSnapshot: "r", 0: "?", 99: "?"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String(): got %q, want %q", op, got, want)
		}
	}
}

func TestSnapshotState(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "source") // created by writeState
	if _, ok, err := readState(dir, "s1"); ok || err != nil {
		t.Fatalf("readState of a missing file: got ok=%v err=%v, want false, nil", ok, err)
	}
	want := snapshotState{Slot: "s1", ConsistentLSN: 0x16B3748, CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Rows: 7, Tables: []string{"public.a", "s.b"}}
	if err := writeState(dir, want); err != nil {
		t.Fatal(err)
	}
	want.Complete, want.CompletedAt = true, want.CreatedAt.Add(time.Minute)
	if err := writeState(dir, want); err != nil { // overwrite in place
		t.Fatal(err)
	}
	got, ok, err := readState(dir, "s1")
	if err != nil || !ok {
		t.Fatalf("readState: got ok=%v err=%v, want true, nil", ok, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readState: got %+v, want %+v", got, want)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "*")); len(entries) != 1 {
		t.Errorf("state dir: got %v, want only the state file (no temp files left)", entries)
	}

	// A file that names another slot (copied by hand) is not this slot's state.
	want.Slot = "other"
	if err := writeState(dir, want); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(statePath(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath(dir, "s2"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := readState(dir, "s2"); ok || err != nil {
		t.Errorf("readState of a file naming another slot: got ok=%v err=%v, want false, nil", ok, err)
	}

	if err := os.WriteFile(statePath(dir, "bad"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readState(dir, "bad"); err == nil || !strings.Contains(err.Error(), "parse snapshot state") {
		t.Errorf("readState of a corrupt file: got %v, want a parse error", err)
	}
}
