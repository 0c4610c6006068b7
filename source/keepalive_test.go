package source

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestStatusWhileHandOverBlocks: a hand-over that blocks for longer than
// wal_sender_timeout (Handle held by a slow broker's back-pressure) keeps
// the replication connection: status updates keep reaching the server, and
// afterwards every change arrives once, with no reconnect. Without the
// guard the walsender drops the connection after 1 s and reply_time stops.
func TestStatusWhileHandOverBlocks(t *testing.T) {
	t.Parallel()
	pg := startCluster(t, pgtest.Setting("wal_sender_timeout", "1s"))
	db := newDB(t, pg, "stall", `CREATE TABLE items (id int PRIMARY KEY)`)
	dir := t.TempDir()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() { // the guard's status updates are logged at debug
			t.Logf("source log:\n%s", logs.String())
		}
	})
	h := newFakeHandler(false)
	blocked, release := make(chan struct{}), make(chan struct{})
	h.before = func(ctx context.Context, n int, _ *Change) error {
		if n != 0 {
			return nil
		}
		close(blocked)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := run(t, db.newSource(dir, logs, func(c *Config) { c.StatusInterval = 100 * time.Millisecond }, "items"), h)
	db.waitStreamable(dir)

	db.exec(`INSERT INTO items VALUES (1)`)
	select {
	case <-blocked:
	case <-time.After(waitTimeout):
		t.Fatal("the first change never reached the handler")
	}
	// Three times wal_sender_timeout, counted in status updates the server
	// received while the hand-over was blocked.
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		db.waitStatusReplies(r, 1)
	}
	close(release)
	db.exec(`INSERT INTO items VALUES (2)`)
	got := r.waitChanges(t, h, "both inserts", atLeast(2))
	if g := ids(got); fmt.Sprint(g) != "[1 2]" {
		t.Errorf("changes: got ids %v, want [1 2] exactly once each", g)
	}
	if strings.Contains(logs.String(), "reconnecting") {
		t.Errorf("the source reconnected while the hand-over was blocked; log:\n%s", logs.String())
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: got %v, want nil", err)
	}
}

// A guard whose status updates fail (the connection is gone) warns once
// per hand-over, not at every interval, and says nothing more at a stop.
func TestGuardWarnsOncePerHandOver(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgconn.Connect(ctx, pg.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil { // every write fails from here on
		t.Fatal(err)
	}
	logs := &logBuffer{}
	g := &stallGuard{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(ctx, conn, 5*time.Millisecond, logs.logger())
	}()
	failures := func() (warn, all int) {
		s := logs.String()
		return strings.Count(s, "level=WARN"), strings.Count(s, "status update while blocked failed")
	}
	// waitFailures waits until the guard has failed at least n times.
	waitFailures := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(waitTimeout); ; time.Sleep(5 * time.Millisecond) {
			if _, all := failures(); all >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the guard failed fewer than %d times within %v; log:\n%s", n, waitTimeout, logs.String())
			}
		}
	}
	g.enter(time.Now().Add(-time.Second))
	waitFailures(4)
	g.leave()
	if warn, all := failures(); warn != 1 {
		t.Errorf("one hand-over: %d warnings among %d failed updates, want 1", warn, all)
	}
	_, before := failures()
	g.enter(time.Now().Add(-time.Second))
	waitFailures(before + 2)
	cancel()
	<-done
	g.leave()
	if warn, all := failures(); warn != 2 {
		t.Errorf("two hand-overs: %d warnings among %d failed updates, want 2", warn, all)
	}
}
