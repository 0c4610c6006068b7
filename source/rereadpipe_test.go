package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// TestChunkLimit: a re-read statement holds about rereadChunkBytes of
// rows by the sizes learnt per table (a table not seen yet: few keys),
// within maxRereadChunk keys and one at least, and a chunk ends before
// the change to re-read that would pass them.
func TestChunkLimit(t *testing.T) {
	t.Parallel()
	small, large := &relation.Table{Schema: "public", Name: "small"}, &relation.Table{Schema: "public", Name: "large"}
	// held: t a change of small to re-read, T one of large, o a change
	// held with them (not re-read).
	held := func(s string) []heldChange {
		h := make([]heldChange, len(s))
		for i := range s {
			h[i].toast = s[i] != 'o'
			h[i].c.Table = small
			if s[i] == 'T' {
				h[i].c.Table = large
			}
		}
		return h
	}
	sizes := func(small, large int) rowSizes {
		r := rowSizes{}
		if small > 0 {
			r["public.small"] = small
		}
		if large > 0 {
			r["public.large"] = large
		}
		return r
	}
	for _, tt := range []struct {
		name  string
		held  string
		sizes rowSizes
		want  int
	}{
		{"no row of the table seen yet", strings.Repeat("t", 100), nil, rereadChunkBytes / unseenRowBytes},
		{"small rows", strings.Repeat("t", 2000), sizes(10, 0), maxRereadChunk},
		{"8 KB rows", strings.Repeat("t", 2000), sizes(8<<10, 0), maxRereadChunk},
		{"32 KB rows", strings.Repeat("t", 2000), sizes(32<<10, 0), 256},
		{"1 MB rows", strings.Repeat("t", 2000), sizes(1<<20, 0), 8},
		{"rows larger than a chunk", "ttt", sizes(100<<20, 0), 1},
		// Small rows learnt on one table say nothing of another's.
		{"small rows, then a table not seen", "ttt" + strings.Repeat("T", 100), sizes(10, 0), 3 + rereadChunkBytes/unseenRowBytes - 1},
		{"small rows, then large ones", "tttTTTT", sizes(10, 4<<20), 4},
		{"changes held with them end no chunk", "ttoto", sizes(4<<20, 0), 3},
		{"nor count", "ttooo", sizes(4<<20, 0), 5},
		{"the changes after the last re-read", "oootto", sizes(8<<20, 0), 4},
		{"nothing to re-read", "ooo", sizes(8<<20, 0), 3},
		{"nothing", "", nil, 0},
	} {
		if got := nextChunk(held(tt.held), tt.sizes); got != tt.want {
			t.Errorf("%s: nextChunk(%.20s…): got %d, want %d", tt.name, tt.held, got, tt.want)
		}
	}
}

// TestRowSizesLearnt: a table's row size is learnt from its statements:
// larger at once, smaller by half at most a statement, per table.
func TestRowSizesLearnt(t *testing.T) {
	t.Parallel()
	a, b := &relation.Table{Schema: "public", Name: "a"}, &relation.Table{Schema: "public", Name: "b"}
	r := rowSizes{}
	for _, step := range []struct {
		table *relation.Table
		avg   int
		want  int
	}{
		{a, 32 << 10, 32 << 10},
		{a, 14, 16 << 10},
		{a, 14, 8 << 10},
		{a, 1 << 20, 1 << 20},
		{a, 600 << 10, 600 << 10},
		{b, 0, 1},
	} {
		r.learn(step.table, step.avg)
		if got := r.of(step.table); got != step.want {
			t.Fatalf("after a statement of %s with rows of %d bytes: got %d, want %d", step.table.Name, step.avg, got, step.want)
		}
	}
	if got := r.of(a); got != 600<<10 {
		t.Errorf("rows of a after b was learnt: got %d, want %d", got, 600<<10)
	}
	if got := r.of(&relation.Table{Schema: "public", Name: "c"}); got != unseenRowBytes {
		t.Errorf("rows of a table not seen: got %d, want %d", got, unseenRowBytes)
	}
}

// TestHeldBytesBounded: changes are held and given to the re-read
// pipeline within a bound of their bytes as well as of their count: the
// changes held behind a re-read carry all their values, which may be
// large whatever the table re-read. A batch larger than the bound goes
// alone.
func TestHeldBytesBounded(t *testing.T) {
	t.Parallel()
	tbl := &relation.Table{Schema: "public", Name: "docs", Columns: []relation.Column{{Name: "id"}, {Name: "doc"}}}
	st := &stream{}
	st.pipe = newRereadPipe(st)
	tuple := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("1")},
		{DataType: pglogrepl.TupleDataTypeText, Data: make([]byte, 1<<20)},
	}}
	c := &Change{Op: OpUpdate, Table: tbl, New: []any{int32(1), "…"}}
	if err := st.hold(c, tuple, tuple, false); err != nil {
		t.Fatal(err)
	}
	if want := 2 * (1 + 1<<20); st.heldBytes != want || st.held[0].size != want {
		t.Fatalf("held bytes of an update with its old row: got %d (change %d), want %d", st.heldBytes, st.held[0].size, want)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	// Nothing in flight: even a batch over the bound goes.
	st.heldBytes = maxInFlightBytes + 1
	if err := st.push(context.Background(), false); err != nil {
		t.Fatalf("push of a large batch with nothing in flight: %v", err)
	}
	if st.held != nil || st.heldBytes != 0 || st.pipe.inFlightBytes.Load() != maxInFlightBytes+1 || st.pipe.inFlight.Load() != 1 {
		t.Fatalf("after the push: held %d changes of %d bytes, in flight %d of %d bytes; want 0, 0, 1 of %d", len(st.held), st.heldBytes, st.pipe.inFlight.Load(), st.pipe.inFlightBytes.Load(), maxInFlightBytes+1)
	}
	// Something in flight: a batch that would pass the bytes bound waits
	// for room (here: for ever, its context is done), though few changes.
	<-st.pipe.batches
	st.pipe.inFlightBytes.Store(maxInFlightBytes - 100)
	if err := st.hold(c, nil, tuple, false); err != nil {
		t.Fatal(err)
	}
	if err := st.push(cancelled, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("push past the bytes in flight: got %v, want it waiting for room", err)
	}
	if len(st.held) != 1 || st.pipe.inFlight.Load() != 1 {
		t.Fatalf("after a push that waited: held %d, in flight %d; want 1 and 1", len(st.held), st.pipe.inFlight.Load())
	}
	// Within the bounds, it goes at once.
	st.pipe.inFlightBytes.Store(int64(maxInFlightBytes - st.heldBytes))
	if err := st.push(context.Background(), false); err != nil {
		t.Fatalf("push within the bounds: %v", err)
	}
	if st.pipe.inFlightBytes.Load() != maxInFlightBytes || st.pipe.inFlight.Load() != 2 {
		t.Errorf("in flight after a push within the bounds: %d changes of %d bytes, want 2 of %d", st.pipe.inFlight.Load(), st.pipe.inFlightBytes.Load(), maxInFlightBytes)
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
