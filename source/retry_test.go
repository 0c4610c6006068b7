package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// failingFlush is a fakeHandler whose Flush fails once failing is set, like
// a pipeline whose record Kafka refused.
type failingFlush struct {
	*fakeHandler
	failing atomic.Bool
	err     error
}

func (f *failingFlush) Flush(ctx context.Context) error {
	if f.failing.Load() {
		return f.err
	}
	return f.fakeHandler.Flush(ctx)
}

func TestReconnectDelay(t *testing.T) {
	t.Parallel()
	rc := Reconnect{InitialBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
	tests := []struct {
		name   string
		n      int
		jitter float64
		want   time.Duration
	}{
		{"first attempt", 1, 0, 500 * time.Millisecond},
		{"doubles", 2, 0, time.Second},
		{"doubles again", 4, 0, 4 * time.Second},
		{"capped", 7, 0, 30 * time.Second},
		{"stays capped", 1000, 0, 30 * time.Second},
		{"jitter takes up to a quarter off", 2, 0.5, 875 * time.Millisecond},
		{"jitter on the cap", 50, 0.999, 30*time.Second - time.Duration(0.999*float64(30*time.Second)/4)},
	}
	for _, tt := range tests {
		if got := rc.delay(tt.n, tt.jitter); got != tt.want {
			t.Errorf("%s: delay(%d, %v) got %v, want %v", tt.name, tt.n, tt.jitter, got, tt.want)
		}
	}

	var def Reconnect
	def.setDefaults()
	if def.InitialBackoff != DefaultInitialBackoff || def.MaxBackoff != DefaultMaxBackoff || def.GiveUpAfter != 0 {
		t.Errorf("defaults: got %+v, want %v, %v and no give-up", def, DefaultInitialBackoff, DefaultMaxBackoff)
	}
	low := Reconnect{InitialBackoff: time.Minute, MaxBackoff: time.Second}
	low.setDefaults()
	if low.MaxBackoff != time.Minute {
		t.Errorf("max below initial: got max %v, want it raised to the initial %v", low.MaxBackoff, time.Minute)
	}
}

func TestIsTransient(t *testing.T) {
	t.Parallel()
	pgErr := func(code string) error { return &pgconn.PgError{Severity: "FATAL", Code: code, Message: "m"} }
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"stop requested", fmt.Errorf("receive: %w", context.Canceled), false},
		{"fast shutdown (admin_shutdown)", fmt.Errorf("replication stream: %w", pgErr("57P01")), true},
		{"crash of another backend", pgErr("57P02"), true},
		{"starting up", fmt.Errorf("connect: %w", pgErr("57P03")), true},
		{"connection failure", pgErr("08006"), true},
		{"too many connections", pgErr("53300"), true},
		{"refused dial", fmt.Errorf("connect: %w", refused), true},
		{"reset", fmt.Errorf("receive: %w", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), true},
		{"server ended the stream (shutdown)", fmt.Errorf("replication stream: %w", errStreamEnded), true},
		{"closed without a word", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		{"bad password", fmt.Errorf("connect: %w", pgErr("28P01")), false},
		{"no such role", pgErr("28000"), false},
		{"no such database", pgErr("3D000"), false},
		{"no replication privilege", pgErr("42501"), false},
		{"slot missing", fmt.Errorf("start replication: %w", pgErr("42704")), false},
		{"wal_level", pgErr("55000"), false},
		{"slot active (only while reconnecting, see isSlotInUse)", pgErr("55006"), false},
		{"server error beats a network error next to it", errors.Join(refused, pgErr("28P01")), false},
		{"TRUNCATE", errors.New("TRUNCATE of public.items at LSN 0/1: truncation is not supported yet"), false},
		{"schema change", errors.New("table public.items changed while streaming"), false},
		{"produce failure", fmt.Errorf("produce to items: %w", errors.New("MESSAGE_TOO_LARGE")), false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("%s: IsTransient(%v) got %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	if !isSlotInUse(fmt.Errorf("start: %w", pgErr("55006"))) || !isSlotInUse(slotInUse(errors.New("in use"))) {
		t.Error("isSlotInUse: got false for object_in_use and for our own check, want true")
	}
	if isSlotInUse(refused) {
		t.Error("isSlotInUse(refused dial): got true, want false")
	}
}

// TestIsTransientFromServer classifies the errors a real server gives.
func TestIsTransientFromServer(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	db := newDB(t, pg, "classify", `CREATE TABLE items (id int PRIMARY KEY); CREATE ROLE plain LOGIN`)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	_, err := Connect(ctx, pg.DSN("no_such_db"))
	if err == nil || IsTransient(err) {
		t.Errorf("missing database: got %v, transient %v; want a permanent error", err, IsTransient(err))
	}
	_, err = Connect(ctx, dsnAs(t, db.dsn, "no_such_role"))
	if err == nil || IsTransient(err) {
		t.Errorf("missing role: got %v, transient %v; want a permanent error", err, IsTransient(err))
	}
	_, err = connectReplication(ctx, dsnAs(t, db.dsn, "plain"))
	if err == nil || IsTransient(err) {
		t.Errorf("role without REPLICATION: got %v, transient %v; want a permanent error", err, IsTransient(err))
	}
	repl, err := connectReplication(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(ctx, repl, "no_such_slot", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'x'"}})
	if err == nil || IsTransient(err) {
		t.Errorf("missing slot: got %v, transient %v; want a permanent error", err, IsTransient(err))
	}
	repl.Close(ctx)

	// A backend terminated by an administrator (what a fast shutdown does
	// to every session) is transient.
	victim, err := connectReplication(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(context.Background())
	db.exec(`SELECT pg_terminate_backend($1)`, int32(victim.PID()))
	_, err = pglogrepl.IdentifySystem(ctx, victim)
	if err == nil || !IsTransient(err) {
		t.Errorf("terminated backend: got %v, transient %v; want a transient error", err, IsTransient(err))
	}
}

// TestRunReconnects stops PostgreSQL (fast shutdown) under a streaming
// source, twice, and starts it again: Run keeps going by itself, every
// committed change arrives, and changes acknowledged before the outage are
// not streamed again.
func TestRunReconnects(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	db := newDB(t, pg, "reconnect", `CREATE TABLE items (id int PRIMARY KEY)`)
	dir := t.TempDir()
	h := newFakeHandler(false)
	logs := &logBuffer{}
	r := run(t, db.newSource(dir, logs, func(c *Config) {
		c.Reconnect = Reconnect{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	}, "items"), h)
	db.waitStreamable(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	next := int32(1)
	for round := 1; round <= 2; round++ {
		for range 3 {
			db.exec(`INSERT INTO items VALUES ($1)`, next)
			next++
		}
		r.waitChanges(t, h, fmt.Sprintf("%d inserts before outage %d", next-1, round), atLeast(int(next-1)))
		if err := pg.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		db.conn = pgtest.Connect(t, db.dsn)
	}
	for range 3 {
		db.exec(`INSERT INTO items VALUES ($1)`, next)
		next++
	}
	got := r.waitChanges(t, h, "every insert", atLeast(int(next-1)))
	select {
	case <-r.done:
		t.Fatalf("Run returned %v after the outages, want it still running", r.err)
	default:
	}
	want := make([]int32, 0, next-1)
	for i := int32(1); i < next; i++ {
		want = append(want, i)
	}
	// Each change was acknowledged at once, and Run flushes before it
	// reconnects, so nothing is replayed: the resumed stream starts at the
	// acknowledged position even when its last confirmation was lost.
	if g := ids(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("changes: got ids %v, want %v exactly once each, in order", g, want)
	}
	if n := strings.Count(logs.String(), "source connection failed; reconnecting"); n < 2 {
		t.Errorf("log: got %d reconnect attempts logged, want at least 2 (one per outage); log:\n%s", n, logs.String())
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: got %v, want nil", err)
	}
}

// TestRunGivesUp: with give_up_after set, an outage that
// lasts ends Run with the last error; a stop request during the backoff is
// a clean stop; a handler that cannot flush ends Run instead of a retry.
func TestRunGivesUp(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("give up", func(t *testing.T) {
		db := newDB(t, pg, "giveup", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		logs := &logBuffer{}
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, func(c *Config) {
			c.Reconnect = Reconnect{InitialBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, GiveUpAfter: 500 * time.Millisecond}
		}, "items"), h)
		db.waitStreamable(dir)
		db.waitSlot("active", func(s slotInfo) bool { return s.active })
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		r.wait(t)
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if r.err == nil || !strings.Contains(r.err.Error(), "giving up (source.reconnect.give_up_after)") || !IsTransient(r.err) {
			t.Fatalf("Run: got %v, want the give-up error wrapping the transient failure", r.err)
		}
	})

	t.Run("handler that cannot flush", func(t *testing.T) {
		db := newDB(t, pg, "noflush", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := &failingFlush{fakeHandler: newFakeHandler(false), err: errors.New("produce to items: MESSAGE_TOO_LARGE")}
		r := run(t, db.newSource(dir, nil, func(c *Config) {
			c.Reconnect = Reconnect{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
		}, "items"), h)
		db.waitStreamable(dir)
		db.waitSlot("active", func(s slotInfo) bool { return s.active })
		h.failing.Store(true)
		db.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, db.name)
		err := r.wait(t)
		if err == nil || !strings.Contains(err.Error(), "MESSAGE_TOO_LARGE") || !strings.Contains(err.Error(), "wait for in-flight records after the source connection was lost") || IsTransient(err) {
			t.Fatalf("Run: got %v (transient %v), want the permanent flush failure after the lost connection", err, IsTransient(err))
		}
	})

	t.Run("stop while reconnecting", func(t *testing.T) {
		db := newDB(t, pg, "stopwait", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		logs := &logBuffer{}
		r := run(t, db.newSource(dir, logs, func(c *Config) {
			c.Reconnect = Reconnect{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		}, "items"), newFakeHandler(false))
		db.waitStreamable(dir)
		db.waitSlot("active", func(s slotInfo) bool { return s.active })
		db.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, db.name)
		deadline := time.Now().Add(waitTimeout)
		for !strings.Contains(logs.String(), "reconnecting") {
			if time.Now().After(deadline) {
				t.Fatalf("no reconnect logged within %v; log:\n%s", waitTimeout, logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("Run stopped during an hour's backoff: got %v, want nil", err)
		}
	})
}

func TestNewReconnectSettings(t *testing.T) {
	t.Parallel()
	tables := []relation.Table{{Schema: "public", Name: "t"}}
	cfg := Config{URL: "postgres://x", Slot: "s", Publication: "p", StateDir: t.TempDir()}
	src, err := New(cfg, tables)
	if err != nil {
		t.Fatal(err)
	}
	if rc := src.cfg.Reconnect; rc.InitialBackoff != DefaultInitialBackoff || rc.MaxBackoff != DefaultMaxBackoff || rc.GiveUpAfter != 0 {
		t.Errorf("reconnect defaults: got %+v, want %v, %v, never give up", rc, DefaultInitialBackoff, DefaultMaxBackoff)
	}
	cfg.Reconnect.GiveUpAfter = -time.Second
	if _, err := New(cfg, tables); err == nil || !strings.Contains(err.Error(), "negative reconnect setting") {
		t.Errorf("negative give-up: got %v, want an error", err)
	}
}

// TestRunWaitsOutHeldSlotAtStart: a source started while its slot is still
// held (as right after a kill -9, before the server notices the dead
// walsender) waits for it with backoff instead of failing, and streams once
// the slot is free.
func TestRunWaitsOutHeldSlotAtStart(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	db := newDB(t, pg, "held", `CREATE TABLE items (id int PRIMARY KEY)`)
	dir := t.TempDir()
	first := run(t, db.newSource(dir, nil, nil, "items"), newFakeHandler(false))
	db.waitStreamable(dir)
	db.waitSlot("active", func(s slotInfo) bool { return s.active })

	logs := &logBuffer{}
	h := newFakeHandler(false)
	second := run(t, db.newSource(dir, logs, func(c *Config) {
		c.Reconnect = Reconnect{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	}, "items"), h)
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(logs.String(), "is in use by another process") {
		select {
		case <-second.done:
			t.Fatalf("second Run returned %v while the slot was held, want it to wait", second.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("second Run logged no wait for the held slot within %v; log:\n%s", waitTimeout, logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
	if err := first.stop(t); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	db.exec(`INSERT INTO items VALUES (1)`)
	second.waitChanges(t, h, "the insert, streamed by the second source", atLeast(1))
	if err := second.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
}
