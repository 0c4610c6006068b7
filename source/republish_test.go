package source

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// republishRows is the size of the republished table in these tests.
const republishRows = 20_000

func TestRepublish(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("concurrent writer", func(t *testing.T) {
		// Larger than the others: the republish must last long enough for
		// the writer (a change every 2 ms) to interleave with many chunks.
		const rows = 5 * republishRows
		db := newDB(t, pg, "rep_writer", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", rows))
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		r.waitChanges(t, h, "the initial snapshot", atLeast(rows))

		w := startWriter(t, db.dsn, rows)
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 1000})
		if err != nil {
			t.Fatal(err)
		}
		from := len(h.got())
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool {
			return len(s.Republish) == 0 && slices.Contains(s.RepublishDone, id)
		})
		ops := w.stop(t)
		if ops < 50 {
			t.Fatalf("the writer made only %d changes during the republish: the test proves nothing", ops)
		}
		// A last insert marks the end of the stream to wait for.
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		checkConverged(t, db, got, from, id)
		republished := len(filter(got, func(c Change) bool { return c.Republish == id }))
		if republished == 0 {
			t.Fatal("no change carries the republish id")
		}
		t.Logf("writer made %d changes; %d rows republished", ops, republished)
	})

	// Without a chunk size, chunks hold about RepublishChunkBytes of rows
	// however wide the rows: 200 KB rows make chunks of a few dozen rows,
	// not thousands (which would hold hundreds of MB between watermarks).
	t.Run("chunks sized by bytes", func(t *testing.T) {
		const rows, width = 300, 200_000
		db := newDB(t, pg, "rep_bytes", "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, repeat('x', %d) FROM generate_series(1, %d) g", width, rows))
		dir := t.TempDir()
		h := newFakeHandler(false)
		src := db.newSource(dir, nil, nil, "items")
		var chunks atomic.Int64
		src.chunkRead = func() { chunks.Add(1) }
		r := run(t, src, h)
		db.waitStreamable(dir)
		from := len(h.got())
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
		got := r.waitChanges(t, h, "every row republished", func(cs []Change) bool {
			return len(filter(cs[from:], func(c Change) bool { return c.Republish == id })) >= rows
		})
		if n := len(filter(got[from:], func(c Change) bool { return c.Republish == id })); n != rows {
			t.Errorf("republished %d rows, want %d", n, rows)
		}
		// The first chunk has firstChunkRows rows; the others about
		// RepublishChunkBytes each.
		perChunk := RepublishChunkBytes / (width + 8)
		if want := 1 + (rows-firstChunkRows+perChunk-1)/perChunk; chunks.Load() != int64(want) {
			t.Errorf("read %d chunks of rows of %d bytes, want %d (%d rows, then %d a chunk)", chunks.Load(), width, want, firstChunkRows, perChunk)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("resumes from the last chunk", func(t *testing.T) {
		db := newDB(t, pg, "rep_resume", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", republishRows))
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		// Slow enough (1,000 rows a chunk, 10,000 rows/s) to stop it
		// midway.
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 1000, Rate: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "two chunks republished", func(s snapshotState) bool {
			return len(s.Republish) == 1 && s.Republish[0].Tables[0].Chunks >= 2
		})
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		saved := db.state(dir).Republish[0].Tables[0]
		if saved.Done || len(saved.After) != 1 {
			t.Fatalf("saved progress %+v: want an unfinished table with a last key", saved)
		}
		// What `replicator status` shows of it.
		if st, ok, err := ReadSnapshotState(dir, db.name); err != nil || !ok || len(st.Republish) != 1 ||
			st.Republish[0].ID != id || st.Republish[0].Tables[0] != (RepublishTableStatus{Name: "public.items", Chunks: saved.Chunks, Rows: saved.Rows}) {
			t.Errorf("ReadSnapshotState: got %+v (%v, %v), want job %s with %+v", st.Republish, ok, err, id, saved)
		}
		var after int32
		fmt.Sscan(saved.After[0], &after)
		first := len(h.got())

		r = run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool {
			return len(s.Republish) == 0 && slices.Contains(s.RepublishDone, id)
		})
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		again := filter(got[first:], func(c Change) bool { return c.Republish == id })
		if len(again) == 0 {
			t.Fatal("the restarted source republished nothing")
		}
		for _, c := range again {
			if k := c.New[0].(int32); k <= after {
				t.Fatalf("key %d of a chunk completed before the stop (last key %d) was read again", k, after)
			}
		}
		if want := republishRows - int(after); len(again) != want {
			t.Errorf("republished %d rows after the restart, want %d (keys after %d)", len(again), want, after)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// Chunks are pipelined: later chunks are read and handed over while an
	// earlier one waits for its acknowledgements, but the saved position
	// never passes a chunk that is not acknowledged, so a stop resumes
	// with the oldest unacknowledged chunk and skips none of its rows.
	t.Run("chunks in flight", func(t *testing.T) {
		const chunk, rows = 1000, 10_000
		db := newDB(t, pg, "rep_flight", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", rows))
		dir := t.TempDir()
		h := newFakeHandler(false)
		short := func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond } // the held chunk is never flushed
		r := run(t, db.newSource(dir, nil, short, "items"), h)
		db.waitStreamable(dir)
		r.waitChanges(t, h, "the initial snapshot", atLeast(rows))
		h.mu.Lock()
		h.hold = true
		h.mu.Unlock()
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: chunk})
		if err != nil {
			t.Fatal(err)
		}
		// chunkOf is the chunk (from 1) a republished change belongs to
		// (nothing writes: chunk k holds keys (k-1)·chunk+1 … k·chunk).
		chunkOf := func(c Change) int {
			if c.Republish != id {
				return 0
			}
			return (int(c.New[0].(int32))-1)/chunk + 1
		}
		handed := func(n int) func([]Change) bool {
			return func(cs []Change) bool {
				return len(filter(cs, func(c Change) bool { return chunkOf(c) > 0 })) >= n*chunk
			}
		}
		of := func(cs []Change, ks ...int) []int {
			var idx []int
			for i, c := range cs {
				if slices.Contains(ks, chunkOf(c)) {
					idx = append(idx, i)
				}
			}
			return idx
		}

		// Nothing is acknowledged, yet republishInFlight chunks are handed
		// over, not one.
		got := r.waitChanges(t, h, fmt.Sprintf("%d chunks handed over", republishInFlight), handed(republishInFlight))
		if st := db.state(dir).Republish[0].Tables[0]; st.Chunks != 0 || st.After != nil {
			t.Fatalf("with no chunk acknowledged the saved progress is %+v, want none", st)
		}
		h.ack(t, of(got, 1, 2)...)
		st := db.waitState(dir, "chunks 1 and 2 recorded", func(s snapshotState) bool {
			return len(s.Republish) == 1 && s.Republish[0].Tables[0].Chunks == 2
		}).Republish[0].Tables[0]
		if want := []string{fmt.Sprint(2 * chunk)}; !slices.Equal(st.After, want) || st.Rows != 2*chunk {
			t.Fatalf("after chunks 1 and 2: saved %+v, want after %v and %d rows", st, want, 2*chunk)
		}
		// Chunk 3 held, 4 and 5 go on and are acknowledged: the position
		// stays after chunk 2.
		got = r.waitChanges(t, h, "chunks 4 and 5 handed over", handed(republishInFlight+2))
		if n := len(of(got, 6)); n != 0 {
			t.Fatalf("%d rows of chunk 6 handed over while chunks 3, 4 and 5 are in flight: more than %d chunks in flight", n, republishInFlight)
		}
		h.ack(t, of(got, 4, 5)...)
		if err := r.stop(t); err == nil {
			t.Fatal("stopped with chunk 3 unacknowledged, yet the shutdown flush reported nothing")
		}
		if st := db.state(dir).Republish[0].Tables[0]; st.Chunks != 2 || !slices.Equal(st.After, []string{fmt.Sprint(2 * chunk)}) {
			t.Fatalf("stopped with chunk 3 unacknowledged and 4, 5 acknowledged: saved %+v, want 2 chunks, after %d", st, 2*chunk)
		}

		h = newFakeHandler(false)
		r = run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got = r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		again := ids(filter(got, func(c Change) bool { return c.Republish == id }))
		slices.Sort(again)
		want := make([]int32, 0, rows-2*chunk)
		for k := 2*chunk + 1; k <= rows; k++ {
			want = append(want, int32(k))
		}
		if len(again) == 0 {
			t.Fatal("the restarted source republished nothing")
		}
		if !slices.Equal(again, want) {
			t.Fatalf("after the restart republished %d rows (keys %d … %d), want keys %d … %d once each: from the oldest unacknowledged chunk on",
				len(again), again[0], again[len(again)-1], 2*chunk+1, rows)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// A chunk goes to the handler in slices as its records are
	// acknowledged (at most republishBuffered unacknowledged), so a change
	// of the stream made meanwhile is handed over before the rest of the
	// chunk, not behind it; and a row of the rest whose key changed
	// meanwhile is dropped, as one changed between the watermarks is.
	t.Run("chunk handed over in slices", func(t *testing.T) {
		const rows, bound = heldRows, heldBound
		h := newFakeHandler(false)
		hr := startHeldRepublish(t, pg, "rep_slices", h, h)
		db, dir, r, id, from, republished := hr.db, hr.dir, hr.r, hr.id, hr.from, hr.republished
		// Key 0 is before every chunk: no chunk reads it.
		db.exec("UPDATE items SET v = 7 WHERE id = 800; DELETE FROM items WHERE id = 900; INSERT INTO items VALUES (0, 5)")
		isMarker := func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == 0 }
		got := r.waitChanges(t, h, "the stream's insert", func(cs []Change) bool { return slices.ContainsFunc(cs, isMarker) })
		if n := len(republished(got)); n != bound {
			t.Fatalf("%d republished rows handed over, none acknowledged, before the stream's next change: want %d (the bound), the stream's change must not wait behind whole chunks", n, bound)
		}
		h.ackAll(t)
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got = r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		rep := ids(republished(got))
		for _, k := range []int32{800, 900} {
			if slices.Contains(rep, k) {
				t.Errorf("key %d, changed after its chunk's high watermark and before its row was handed over, was republished from the chunk", k)
			}
		}
		if len(rep) != rows-2 {
			t.Errorf("republished %d rows, want the %d unchanged", len(rep), rows-2)
		}
		checkConverged(t, db, got, from, id)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// A cancel stops the job's records at once: the rows of its chunks
	// read and not yet handed over (held back by the bound on records
	// unacknowledged) are dropped, not produced after the cancel.
	t.Run("cancel drops the rows not handed over", func(t *testing.T) {
		const bound = heldBound
		h := newFakeHandler(false)
		hr := startHeldRepublish(t, pg, "rep_cancel_slices", h, h)
		db, dir, r, id, republished := hr.db, hr.dir, hr.r, hr.id, hr.republished
		if err := CancelRepublish(context.Background(), db.conn, db.name, id); err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "republish "+id+" cancelled", func(s snapshotState) bool {
			return !slices.ContainsFunc(s.Republish, func(j republishJob) bool { return j.ID == id })
		})
		h.ackAll(t)
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		if n := len(republished(got)); n != bound {
			t.Errorf("%d rows republished by a job cancelled after its first %d: the rows read and not handed over must be dropped", n, bound)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// The rows of a chunk are in the shape the table had at the start; once
	// the stream has followed a change of its columns they are not handed
	// over in it (the handler would map them by position onto the new
	// shape): the table fails, saying so, and the run goes on streaming.
	// A cancel of the job clears the failure.
	t.Run("columns changed during a republish", func(t *testing.T) {
		const bound = heldBound
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		hr := startHeldRepublish(t, pg, "rep_shape", h.fakeHandler, h)
		db, dir, r, id, republished := hr.db, hr.dir, hr.r, hr.id, hr.republished
		db.exec("ALTER TABLE items ADD COLUMN w text")
		db.exec("INSERT INTO items VALUES (0, 5, 'x')")
		r.waitChanges(t, h.fakeHandler, "the insert in the new shape", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == 0 })
		})
		h.ackAll(t)
		st := db.waitState(dir, "the table failed and the job ended", func(s snapshotState) bool {
			return len(s.Republish) == 0 && slices.Contains(s.RepublishDone, id) && len(s.RepublishFailed) == 1
		})
		if f := st.RepublishFailed[0]; f.ID != id || f.Table != "public.items" ||
			!strings.Contains(f.Error, "columns changed while it was republished") || !strings.Contains(f.Error, "[id, v, w]") || !strings.Contains(f.Error, "restart replicator run") {
			t.Errorf("recorded failure %+v, want republish %s of public.items naming the shape change and the way out", f, id)
		}
		// The stream goes on.
		db.exec("INSERT INTO items VALUES (-1, -1, 'end')")
		got := r.waitChanges(t, h.fakeHandler, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		if n := len(republished(got)); n != bound {
			t.Errorf("%d rows republished; want the %d handed over before the change", n, bound)
		}
		if problems := CheckRepublishFailures(dir, db.name); len(problems) != 1 || !strings.Contains(problems[0].Error(), "republish "+id+" of table public.items failed") {
			t.Errorf("CheckRepublishFailures: got %v, want the failure of %s", problems, id)
		}
		if err := CancelRepublish(context.Background(), db.conn, db.name, id); err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "the failure cleared by the cancel", func(s snapshotState) bool { return len(s.RepublishFailed) == 0 })
		if err := r.stop(t); err != nil {
			t.Errorf("Run after the failed table: %v", err)
		}
	})

	// Deterministic: rows of a chunk changed between its watermarks are
	// dropped from it, so the stream's newer state stays the latest.
	t.Run("changed between the watermarks", func(t *testing.T) {
		db := newDB(t, pg, "rep_between", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec("INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g")
		dir := t.TempDir()
		h := newFakeHandler(false)
		src := db.newSource(dir, nil, nil, "items")
		r, got, from, id := republishWritingBetween(t, db, dir, src, h,
			"UPDATE items SET v = 99 WHERE id = 5; DELETE FROM items WHERE id = 7; UPDATE items SET id = 1000 WHERE id = 9", 0)
		rep := ids(filter(got[from:], func(c Change) bool { return c.Republish == id }))
		for _, k := range []int32{5, 7, 9} {
			if slices.Contains(rep, k) {
				t.Errorf("key %d, changed between the watermarks, was republished from the chunk read before", k)
			}
		}
		if len(rep) != 97 {
			t.Errorf("republished %d rows, want the 97 unchanged", len(rep))
		}
		checkConverged(t, db, got, 0, id)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// The same when the replica identity is another unique index than the
	// primary key: a DELETE's old row then holds only the identity's
	// columns, and an UPDATE of the primary key alone sends no old row, so
	// rows are matched by the identity. By the primary key, the deleted row
	// came back from the chunk after its tombstone (resurrected), and the
	// row whose primary key changed landed in its old state after the new.
	t.Run("changed between the watermarks, replica identity an index", func(t *testing.T) {
		db := newDB(t, pg, "rep_between_ident", "CREATE TABLE items (id int PRIMARY KEY, k int NOT NULL UNIQUE, v int NOT NULL DEFAULT 0); "+
			"ALTER TABLE items REPLICA IDENTITY USING INDEX items_k_key")
		db.exec("INSERT INTO items SELECT g, g, 0 FROM generate_series(1, 100) g")
		dir := t.TempDir()
		h := newFakeHandler(false)
		src := db.newSource(dir, nil, nil, "items")
		r, got, from, id := republishWritingBetween(t, db, dir, src, h,
			"UPDATE items SET v = 99 WHERE id = 5; DELETE FROM items WHERE id = 7; UPDATE items SET id = 1009 WHERE id = 9; UPDATE items SET k = -11 WHERE id = 11", 0)
		var rep []int32
		for _, c := range filter(got[from:], func(c Change) bool { return c.Republish == id }) {
			rep = append(rep, c.New[1].(int32))
		}
		for _, k := range []int32{5, 7, 9, 11, -11} {
			if slices.Contains(rep, k) {
				t.Errorf("k=%d, of a row changed between the watermarks, was republished from the chunk read before", k)
			}
		}
		if len(rep) != 96 {
			t.Errorf("republished %d rows, want the 96 unchanged", len(rep))
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// The same when the entity does not read the key column (it keys on
	// another one): the chunk's batches lack it, so the reader keeps each
	// row's key itself.
	t.Run("changed between the watermarks, key column unused", func(t *testing.T) {
		db := newDB(t, pg, "rep_between_unused", "CREATE TABLE items (id int PRIMARY KEY, k int NOT NULL)")
		db.exec("INSERT INTO items SELECT g, g FROM generate_series(1, 100) g")
		dir := t.TempDir()
		h := newFakeHandler(false)
		base := db.newSource(dir, nil, nil, "items")
		tbl := base.tables[0]
		tbl.Columns = slices.Clone(tbl.Columns)
		tbl.Columns[0].Unused = true
		src, err := New(base.cfg, []relation.Table{tbl})
		if err != nil {
			t.Fatal(err)
		}
		r, got, from, id := republishWritingBetween(t, db, dir, src, h, "UPDATE items SET k = -5 WHERE id = 5; DELETE FROM items WHERE id = 7", 1)
		var rep []int32
		for _, c := range filter(got[from:], func(c Change) bool { return c.Republish == id }) {
			rep = append(rep, c.New[1].(int32))
		}
		for _, k := range []int32{5, -5, 7} {
			if slices.Contains(rep, k) {
				t.Errorf("k=%d, of a row changed between the watermarks, was republished from the chunk read before", k)
			}
		}
		if len(rep) != 98 {
			t.Errorf("republished %d rows, want the 98 unchanged", len(rep))
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rate", func(t *testing.T) {
		db := newDB(t, pg, "rep_rate", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec("INSERT INTO items SELECT g, 0 FROM generate_series(1, 5000) g")
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		began := time.Now()
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 500, Rate: 5000})
		if err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
		// After each chunk but the last it waits until rows/rate have
		// passed: 4,500 rows at 5,000 rows/s.
		if d := time.Since(began); d < 900*time.Millisecond {
			t.Errorf("5,000 rows at 5,000 rows/s took %v, want at least 0.9 s", d)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	// A chunk's rows go to the producer at once and the rate is kept by
	// waiting after it, so a chunk holds at most a second's rows: the
	// chunks sized by bytes grew to thousands of rows whatever the rate
	// (100, 400, 1,600 here), bursts of seconds' worth at once.
	t.Run("rate bounds the chunks", func(t *testing.T) {
		const rows, rate = 2100, 1000
		db := newDB(t, pg, "rep_rate_chunks", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", rows))
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		from := len(h.got())
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{Rate: rate})
		if err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
		got := r.waitChanges(t, h, "every row republished", func(cs []Change) bool {
			return len(filter(cs[from:], func(c Change) bool { return c.Republish == id })) >= rows
		})
		// A chunk's rows carry its high watermark's position.
		chunks := map[string]int{}
		for _, c := range filter(got[from:], func(c Change) bool { return c.Republish == id }) {
			chunks[c.LSN.String()]++
		}
		for lsn, n := range chunks {
			if n > rate {
				t.Errorf("a chunk (high watermark %s) of %d rows under --rate %d: a burst of more than a second's rows", lsn, n, rate)
			}
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		db := newDB(t, pg, "rep_cancel", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
		db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", republishRows))
		dir := t.TempDir()
		logs := &logBuffer{}
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, nil, "items"), h)
		db.waitStreamable(dir)
		id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 500, Rate: 5_000})
		if err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "a chunk republished", func(s snapshotState) bool {
			return len(s.Republish) == 1 && s.Republish[0].Tables[0].Chunks >= 1
		})
		if err := CancelRepublish(context.Background(), db.conn, db.name, ""); err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "the job gone", func(s snapshotState) bool {
			return len(s.Republish) == 0 && slices.Contains(s.RepublishDone, id)
		})
		waitLog(t, logs, LogRepublishCancelled)
		// A cancel that names no job (a mistyped id) says so, rather than
		// being taken without a word.
		if err := CancelRepublish(context.Background(), db.conn, db.name, id+"x"); err != nil {
			t.Fatal(err)
		}
		waitLog(t, logs, `msg="`+LogRepublishCancelUnmatched+`" id=`+id+"x")
		// Cancelled midway: far fewer rows than the table's.
		db.exec("INSERT INTO items VALUES (-1, -1)")
		got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
		})
		if n := len(filter(got, func(c Change) bool { return c.Republish == id })); n >= republishRows {
			t.Fatalf("republished %d rows despite the cancel", n)
		}
	})

	t.Run("table added later", func(t *testing.T) {
		db := newDB(t, pg, "rep_added", "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY, v text)")
		db.exec("INSERT INTO a SELECT generate_series(1, 10); INSERT INTO b SELECT g, 'x' || g FROM generate_series(1, 3000) g")
		dir := snapshotOfAOnly(t, db)
		logs := &logBuffer{}
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, nil, "a", "b"), h)
		w := startWriterOn(t, db.dsn, "b", 3000)
		db.waitState(dir, "b republished", func(s snapshotState) bool {
			return len(s.Republish) == 0 && len(s.RepublishDone) == 1 && slices.Contains(s.Tables, "public.b")
		})
		w.stop(t)
		db.exec("INSERT INTO b VALUES (-1, 'end')")
		got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool {
				return c.Op == OpInsert && c.Table.Name == "b" && c.New[0].(int32) == -1
			})
		})
		latest := map[int32]any{}
		for _, c := range got {
			if c.Table.Name != "b" {
				continue
			}
			if c.Op == OpDelete {
				delete(latest, c.Old[0].(int32))
				continue
			}
			latest[c.New[0].(int32)] = c.New[1]
		}
		want := tableRows(t, db, "SELECT id, v FROM b")
		if len(latest) != len(want) {
			t.Fatalf("b on the stream has %d live keys, the table %d", len(latest), len(want))
		}
		for k, v := range want {
			if fmt.Sprint(latest[k]) != fmt.Sprint(v) {
				t.Fatalf("b key %d: stream says %v, table %v", k, latest[k], v)
			}
		}
		if !strings.Contains(logs.String(), "snapshotted online") {
			t.Errorf("no log line says b is snapshotted online:\n%s", logs)
		}
	})

	// A cancel of every republish also stops the online snapshot of a
	// table added to the configuration, which a start never takes again
	// (the table is recorded as snapshotted): the log says so, and how to
	// publish its rows, where it only said "republish cancelled".
	t.Run("online snapshot of an added table cancelled", func(t *testing.T) {
		db := newDB(t, pg, "rep_added_cancel", "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
		db.exec("INSERT INTO a SELECT generate_series(1, 10); INSERT INTO b SELECT generate_series(1, 3000)")
		dir := snapshotOfAOnly(t, db)
		logs := &logBuffer{}
		h := newFakeHandler(true) // b's first chunk is never acknowledged: its job stays
		r := run(t, db.newSource(dir, logs, func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond }, "a", "b"), h)
		r.waitChanges(t, h, "a first chunk of b", atLeast(1))
		if err := CancelRepublish(context.Background(), db.conn, db.name, ""); err != nil {
			t.Fatal(err)
		}
		db.waitState(dir, "the online snapshot cancelled", func(s snapshotState) bool { return len(s.Republish) == 0 })
		waitLog(t, logs, `msg="`+LogAddedSnapshotCancelled+`" tables=public.b`)
		h.ackAll(t)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})
}

// checkConverged checks the changes against the items table: the latest
// state per key equals the table (so no deleted key is live), and every
// key of the table was published at or after index from (republished or
// changed since).
func checkConverged(t *testing.T, db *testDB, got []Change, from int, id string) {
	t.Helper()
	all := got
	latest := map[int32]int32{}
	seen := map[int32]bool{}
	for i, c := range got {
		if c.Op == OpDelete {
			delete(latest, c.Old[0].(int32))
			continue
		}
		k := c.New[0].(int32)
		if c.Old != nil && c.Old[0] != nil && c.Old[0].(int32) != k {
			delete(latest, c.Old[0].(int32)) // a key change: the old key is gone
		}
		latest[k] = c.New[1].(int32)
		if i >= from {
			seen[k] = true
		}
	}
	want := tableRows(t, db, "SELECT id, v FROM items")
	for k, v := range want {
		got, ok := latest[k]
		if !ok {
			t.Fatalf("key %d is in the table (v=%v) but not live on the stream", k, v)
		}
		if got != v.(int32) {
			t.Fatalf("key %d: latest on the stream v=%d, table v=%v (an older state won); its changes: %s", k, got, v, history(all, k))
		}
		if !seen[k] {
			t.Fatalf("key %d was not published after republish %s started", k, id)
		}
	}
	for k := range latest {
		if _, ok := want[k]; !ok {
			t.Fatalf("key %d is live on the stream but deleted from the table (resurrected)", k)
		}
	}
}

// history renders the changes of key k for a failure message.
func history(cs []Change, k int32) string {
	var b strings.Builder
	for i, c := range cs {
		row := c.New
		if row == nil {
			row = c.Old
		}
		if row[0].(int32) != k {
			continue
		}
		fmt.Fprintf(&b, "\n  #%d %s lsn=%s republish=%q row=%v", i, c.Op, c.LSN, c.Republish, row)
	}
	return b.String()
}

// tableRows runs a query of (int key, value) rows.
func tableRows(t *testing.T, db *testDB, sql string) map[int32]any {
	t.Helper()
	rows, err := db.conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]any{}
	for rows.Next() {
		var k int32
		var v any
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writer updates, deletes and re-inserts random keys of a table at a steady
// pace until stopped (bounded in count and time either way).
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}
	ops    int
	err    error
}

func startWriter(t *testing.T, dsn string, keys int) *writer {
	return startWriterOn(t, dsn, "items", keys)
}

const (
	writerMaxOps  = 20_000
	writerMaxTime = 40 * time.Second
	writerPace    = 2 * time.Millisecond
)

func startWriterOn(t *testing.T, dsn, table string, keys int) *writer {
	t.Helper()
	conn := pgtest.Connect(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), writerMaxTime)
	w := &writer{cancel: cancel, done: make(chan struct{})}
	tbl := pgx.Identifier{table}.Sanitize()
	value := "$2::int"
	if table != "items" {
		value = "'w' || ($2::int)::text"
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { cancel(); <-w.done }) })
	go func() {
		defer close(w.done)
		tick := time.NewTicker(writerPace)
		defer tick.Stop()
		for w.ops < writerMaxOps {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			k := rand.IntN(keys) + 1
			var sql string
			switch rand.IntN(3) {
			case 0:
				sql = "UPDATE " + tbl + " SET v = " + value + " WHERE id = $1"
			case 1:
				sql = "DELETE FROM " + tbl + " WHERE id = $1 AND $2::int IS NOT NULL"
			default:
				sql = "INSERT INTO " + tbl + " VALUES ($1, " + value + ") ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"
			}
			// Not ctx: a statement cancelled by stop could still commit
			// after the test's end marker. stop ends the loop between
			// statements.
			sctx, cancelStmt := context.WithTimeout(context.Background(), waitTimeout)
			_, err := conn.Exec(sctx, sql, k, w.ops+1)
			cancelStmt()
			if err != nil {
				w.err = err
				return
			}
			w.ops++
		}
	}()
	return w
}

// stop ends the writer and returns how many changes it made.
func (w *writer) stop(t *testing.T) int {
	t.Helper()
	w.cancel()
	<-w.done
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.ops
}

// waitLog polls logs until they contain msg.
func waitLog(t *testing.T, logs *logBuffer, msg string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(logs.String(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within %v:\n%s", msg, waitTimeout, logs)
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
}

// republishWritingBetween runs src, republishes items with write made by
// another session between the first chunk's watermarks (as the chunk is
// read), and waits for the end marker written after it: a row whose column
// col is -1. It returns every change handed over, and the index of the
// first one after the request.
func republishWritingBetween(t *testing.T, db *testDB, dir string, src *Source, h *fakeHandler, write string, col int) (r *running, got []Change, from int, id string) {
	t.Helper()
	other := db.in(t)
	var once sync.Once
	src.chunkRead = func() {
		once.Do(func() { // on the republisher's goroutine: no Fatal here
			if _, err := other.conn.Exec(context.Background(), write); err != nil {
				t.Errorf("write between the watermarks: %v", err)
			}
		})
	}
	r = run(t, src, h)
	db.waitStreamable(dir)
	from = len(h.got())
	// One chunk holds the whole table: no later chunk reads a row the
	// write moved to a new key.
	id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool { return slices.Contains(s.RepublishDone, id) })
	db.exec("INSERT INTO items VALUES (-1, -1)")
	got = r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
		return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[col].(int32) == -1 })
	})
	return r, got, from, id
}

// Requests made in the same second get distinct ids: a request whose id
// is known is dropped as replayed.
func TestNewRepublishIDsDiffer(t *testing.T) {
	t.Parallel()
	now := time.Now()
	seen := map[string]bool{}
	for range 1000 {
		id := newRepublishID(now)
		if seen[id] {
			t.Fatalf("id %s drawn twice among %d made in the same second", id, len(seen)+1)
		}
		seen[id] = true
	}
}

func TestNextChunkRows(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		rows, bytes int64
		want        int64
	}{
		{"nothing read yet", 0, 0, firstChunkRows},
		{"small rows grow fourfold a chunk", 100, 100 * 270, 400},
		{"rows of a KB up to the byte target", 5000, 5000 * 1000, RepublishChunkBytes / 1000},
		{"small rows up to the row bound", 50_000, 50_000 * 20, maxRepublishChunkRows},
		{"wide rows", 100, 100 * 200_000, RepublishChunkBytes / 200_000},
		{"rows wider than the target", 1, 20 << 20, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := nextChunkRows(tt.rows, tt.bytes); got != tt.want {
				t.Errorf("nextChunkRows(%d, %d): got %d, want %d", tt.rows, tt.bytes, got, tt.want)
			}
		})
	}
}

// The held republish of startHeldRepublish: a table of heldRows rows, at
// most heldBound republished records unacknowledged, chunks of heldChunk.
const heldChunk, heldRows, heldBound = 1000, 3000, 300

// heldRepublish is a run whose handler holds every acknowledgement, in the
// middle of a republish of items that has handed over its first slice.
type heldRepublish struct {
	db          *testDB
	dir         string
	r           *running
	id          string
	from        int // the changes before the request
	republished func([]Change) []Change
}

// startHeldRepublish runs a source of a new database name's items table
// (heldRows rows) with handler (which records into h), holds h's
// acknowledgements once the snapshot is in, requests a republish in
// chunks of heldChunk rows and waits for its first slice.
func startHeldRepublish(t *testing.T, pg *pgcluster.Cluster, name string, h *fakeHandler, handler Handler) heldRepublish {
	t.Helper()
	db := newDB(t, pg, name, "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
	db.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g", heldRows))
	dir := t.TempDir()
	src := db.newSource(dir, nil, nil, "items")
	src.republishBuffered = heldBound
	r := run(t, src, handler)
	db.waitStreamable(dir)
	r.waitChanges(t, h, "the initial snapshot", atLeast(heldRows))
	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
	from := len(h.got())
	id, err := RequestRepublish(context.Background(), db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: heldChunk})
	if err != nil {
		t.Fatal(err)
	}
	republished := func(cs []Change) []Change {
		return filter(cs[from:], func(c Change) bool { return c.Republish == id })
	}
	r.waitChanges(t, h, "a first slice", func(cs []Change) bool { return len(republished(cs)) >= heldBound })
	return heldRepublish{db: db, dir: dir, r: r, id: id, from: from, republished: republished}
}

// A request's chunk size is bounded (its rows are held in memory) and
// neither it nor the rate may be negative; 0 leaves each to the default.
func TestRepublishOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts RepublishOptions
		want string // "": valid
	}{
		{"defaults", RepublishOptions{}, ""},
		{"the most rows", RepublishOptions{ChunkRows: MaxRepublishChunkRows, Rate: 1}, ""},
		{"one row more", RepublishOptions{ChunkRows: MaxRepublishChunkRows + 1}, "--chunk-rows 100001: must be between 1 and 100000"},
		{"negative rows", RepublishOptions{ChunkRows: -1}, "--chunk-rows -1"},
		{"negative rate", RepublishOptions{Rate: -5}, "--rate -5: must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.opts.Validate()
			if tt.want == "" && err != nil {
				t.Errorf("%+v: got %v, want no error", tt.opts, err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("%+v: got %v, want an error containing %q", tt.opts, err, tt.want)
			}
		})
	}
}

// snapshotOfAOnly runs a source configured with table a alone until a's
// snapshot is taken, then stops it, and returns its state directory: a
// start configured with b too then snapshots b online.
func snapshotOfAOnly(t *testing.T, db *testDB) (dir string) {
	t.Helper()
	dir = t.TempDir()
	h := newFakeHandler(false)
	r := run(t, db.newSource(dir, nil, nil, "a"), h)
	db.waitStreamable(dir)
	r.waitChanges(t, h, "the snapshot of a", atLeast(10))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	return dir
}
