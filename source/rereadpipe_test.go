package source

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestChunkLimit: a re-read statement holds about rereadChunkBytes of
// rows, within its bounds, and a chunk ends before its limit+1st change
// to re-read.
func TestChunkLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		rowBytes int
		want     int
	}{
		{name: "no row seen yet", rowBytes: 0, want: firstRereadChunk},
		{name: "small rows", rowBytes: 10, want: maxRereadChunk},
		{name: "8 KB rows", rowBytes: 8 << 10, want: maxRereadChunk},
		{name: "32 KB rows", rowBytes: 32 << 10, want: 256},
		{name: "1 MB rows", rowBytes: 1 << 20, want: 8},
		{name: "rows larger than a chunk", rowBytes: 100 << 20, want: 1},
	} {
		if got := chunkLimit(tt.rowBytes); got != tt.want {
			t.Errorf("%s: chunkLimit(%d): got %d, want %d", tt.name, tt.rowBytes, got, tt.want)
		}
	}
	// t: to re-read; o: other changes held with them.
	held := func(s string) []heldChange {
		h := make([]heldChange, len(s))
		for i := range s {
			h[i].toast = s[i] == 't'
		}
		return h
	}
	for _, tt := range []struct {
		held  string
		limit int
		want  int
	}{
		{"ttoto", 2, 3},
		{"ttoto", 3, 5},
		{"oootto", 1, 4},
		{"ooo", 1, 3},
		{"", 4, 0},
	} {
		if got := nextChunk(held(tt.held), tt.limit); got != tt.want {
			t.Errorf("nextChunk(%s, %d): got %d, want %d", tt.held, tt.limit, got, tt.want)
		}
	}
}

// TestRereadPipeline: re-reads are pipelined across transactions. While a
// transaction's re-read is in flight the WAL reader goes on with the next
// ones, and the handler still gets every change in WAL order, each a state
// its row really had; a stop with re-reads in flight confirms nothing past
// what was handed over and acknowledged.
func TestRereadPipeline(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	ddl := `CREATE TABLE big (id int PRIMARY KEY, n int, body text);
		ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
		-- 100 KB of md5 hex digits: stored out of line, uncompressed
		INSERT INTO big SELECT i, 0, string_agg(md5(g::text), '') FROM generate_series(1, 3200) g, generate_series(10, 14) i GROUP BY i ORDER BY i`

	t.Run("later changes of the rows while their re-read is in flight", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "pipe_order", ddl)
		var body string
		if err := db.conn.QueryRow(context.Background(), `SELECT body FROM big WHERE id = 10`).Scan(&body); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		src := db.newSource(dir, nil, nil, "big")
		reached := make(chan struct{})
		src.beforeReread = firstRereadWaits(t, 9, reached, false)
		h := newFakeHandler(false)
		r := run(t, src, h)
		db.waitStreamable(dir)
		before := len(r.waitChanges(t, h, "the snapshot", atLeast(5)))
		for _, sql := range []string{
			`UPDATE big SET n = 1 WHERE id BETWEEN 10 AND 14`,
			// Read while the re-read of the first is in flight: 10 is
			// updated again, 11 deleted, 13's key changed to 130.
			`UPDATE big SET n = 2 WHERE id = 10`,
			`DELETE FROM big WHERE id = 11`,
			`UPDATE big SET id = 130, n = 3 WHERE id = 13`,
			`INSERT INTO big VALUES (98, 0, 'end')`,
		} {
			db.exec(sql)
		}
		got := r.waitChanges(t, h, "the last insert", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(98) })
		})
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		select {
		case <-reached:
		default:
			t.Fatal("the re-read pipeline never ran")
		}
		var lines []string
		for _, c := range got[before:] {
			row := c.New
			if row == nil {
				row = c.Old
			}
			b := describe(row[2])
			if row[2] == body {
				b = "body"
			}
			lines = append(lines, fmt.Sprintf("%s %v %v %s", c.Op, row[0], row[1], b))
		}
		// 10 is re-read whole as it is now (n = 2: a state it really had,
		// never n = 1 beside a later value), 11 and 13 were gone; each
		// later change follows in WAL order.
		want := []string{
			"u 10 2 body", "u 12 1 body", "u 14 1 body",
			"u 10 2 body",
			"d 11 <nil> <nil>",
			"u 130 3 body",
			`c 98 0 "end"`,
		}
		if !slices.Equal(lines, want) {
			t.Errorf("changes after the snapshot:\n got %s\nwant %s", strings.Join(lines, " | "), strings.Join(want, " | "))
		}
	})

	t.Run("a stop with re-reads in flight", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "pipe_stop", ddl)
		dir := t.TempDir()
		src := db.newSource(dir, nil, nil, "big")
		reached := make(chan struct{})
		src.beforeReread = firstRereadWaits(t, 6, reached, true) // held until the stop
		h := newFakeHandler(false)
		r := run(t, src, h)
		db.waitStreamable(dir)
		before := len(r.waitChanges(t, h, "the snapshot", atLeast(5)))
		beforeFirst := db.lsn(`SELECT pg_current_wal_insert_lsn()`)
		db.exec(`INSERT INTO big VALUES (97, 0, 'first')`) // handed over at once
		r.waitChanges(t, h, "the first insert", atLeast(before+1))
		beforeHeld := db.lsn(`SELECT pg_current_wal_insert_lsn()`)
		db.exec(`UPDATE big SET n = 1 WHERE id BETWEEN 10 AND 14`)
		db.exec(`INSERT INTO big VALUES (98, 0, 'end')`)
		select {
		case <-reached:
		case <-time.After(waitTimeout):
			t.Fatalf("the re-read pipeline did not get the 6 changes within %v", waitTimeout)
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		h.mu.Lock()
		got := slices.Clone(h.changes[before:])
		h.mu.Unlock()
		if len(got) != 1 {
			t.Errorf("changes handed over: got %s, want only the first insert", summarize(got))
		}
		db.waitInactive() // the walsender has taken the last status update
		if c := db.slot().confirmed; c <= beforeFirst || c > beforeHeld {
			t.Errorf("confirmed_flush_lsn: got %s, want past the first insert (after %s) and not past the changes in flight (from %s)", c, beforeFirst, beforeHeld)
		}
		// Nothing in flight was lost: the next session reads it again.
		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, nil, "big"), h2)
		again := r2.waitChanges(t, h2, "the last insert", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(98) })
		})
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if ups := filter(again, byOp(OpUpdate)); len(ups) != 5 {
			t.Errorf("updates after the restart: got %s, want the 5 in flight at the stop", summarize(again))
		}
	})
}

// TestStatusWhileRereadsDrain: the stream goroutine waiting for the
// re-read pipeline to empty (here a TRUNCATE behind a re-read that takes
// three times wal_sender_timeout) keeps the replication connection:
// status updates keep reaching the server, and afterwards every change
// arrives once, in WAL order, with no reconnect.
func TestStatusWhileRereadsDrain(t *testing.T) {
	t.Parallel()
	pg := startCluster(t, pgtest.Setting("wal_sender_timeout", "1s"))
	db := newDB(t, pg, "drain_stall", `CREATE TABLE big (id int PRIMARY KEY, n int, body text);
		ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
		INSERT INTO big SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 3200) g;
		CREATE TABLE items (id int PRIMARY KEY)`)
	dir := t.TempDir()
	logs := &logBuffer{}
	src := db.newSource(dir, logs, func(c *Config) { c.StatusInterval = 100 * time.Millisecond }, "big", "items")
	blocked, release := make(chan struct{}), make(chan struct{})
	first := true
	src.beforeReread = func(ctx context.Context, _ *rereadPipe) {
		if !first {
			return
		}
		first = false
		close(blocked)
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	h := truncatingHandler{newFakeHandler(false)}
	r := run(t, src, h)
	db.waitStreamable(dir)
	before := len(r.waitChanges(t, h.fakeHandler, "the snapshot", atLeast(1)))

	db.exec(`UPDATE big SET n = 1 WHERE id = 1`)
	select {
	case <-blocked:
	case <-time.After(waitTimeout):
		t.Fatal("the update never reached the re-read pipeline")
	}
	db.exec(`TRUNCATE items`) // waits for the update's hand-over
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		db.waitStatusReplies(r, 1)
	}
	close(release)
	db.exec(`INSERT INTO items VALUES (2)`)
	got := r.waitChanges(t, h.fakeHandler, "the insert", atLeast(before+3))
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: got %v, want nil", err)
	}
	if s := summarize(got[before:]); len(got) != before+3 || got[before].Op != OpUpdate || got[before+1].Op != OpTruncate || got[before+2].Op != OpInsert {
		t.Errorf("changes: got %s, want the update, the TRUNCATE, the insert, once each", s)
	}
	if strings.Contains(logs.String(), "reconnecting") {
		t.Errorf("the source reconnected while the stream waited for the re-reads; log:\n%s", logs.String())
	}
}

// firstRereadWaits is a beforeReread hook that blocks the pipeline's first
// re-read until the WAL reader has given it n changes in all, so the
// transactions after the first are read while its re-read is in flight
// (the stream goroutine waited at that COMMIT before the pipeline);
// reached is closed then. With hold it then blocks until ctx ends.
func firstRereadWaits(t *testing.T, n int64, reached chan struct{}, hold bool) func(context.Context, *rereadPipe) {
	first := true
	return func(ctx context.Context, p *rereadPipe) {
		if !first {
			return
		}
		first = false
		deadline := time.Now().Add(waitTimeout)
		for p.inFlight.Load() < n {
			if time.Now().After(deadline) {
				t.Errorf("changes in the re-read pipeline while the first re-read waits: got %d after %v, want %d: the WAL reader did not go on", p.inFlight.Load(), waitTimeout, n)
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		close(reached)
		if hold {
			<-ctx.Done()
		}
	}
}
