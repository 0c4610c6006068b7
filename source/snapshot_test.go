package source

import (
	"context"
	"errors"
	"os"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestSnapshot covers the initial snapshot and its handoff to the stream.
// One cluster serves every subtest; each has its own database and slot.
func TestSnapshot(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	errBoom := errors.New("boom: producer died")

	t.Run("GC target while the snapshot runs", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "gogc", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'before' FROM generate_series(1, 10) i;`)
		before := gcPercent(t)
		h := newFakeHandler(false)
		var mu sync.Mutex
		seen := map[Op]uint64{}
		h.before = func(_ context.Context, _ int, c *Change) error {
			mu.Lock()
			defer mu.Unlock()
			seen[c.Op] = gcPercent(t)
			return nil
		}
		r := run(t, db.newSource(t.TempDir(), nil, func(c *Config) { c.SnapshotGCPercent = 345 }, "items"), h)
		r.waitChanges(t, h, "the snapshot", atLeast(10))
		db.exec(`INSERT INTO items VALUES (11, 'after')`)
		r.waitChanges(t, h, "the row written after it", atLeast(11))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[OpSnapshot] != 345 || seen[OpInsert] != before {
			t.Errorf("GOGC: got %d during the snapshot and %d streaming after it, want 345 then %d (as before)", seen[OpSnapshot], seen[OpInsert], before)
		}
	})

	t.Run("handoff", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "handoff", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'before' FROM generate_series(1, 100) i;`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		// The first snapshot row waits until the test has written more rows:
		// the slot exists then and the snapshot is being read.
		firstRow, proceed := make(chan struct{}), make(chan struct{})
		h.before = func(ctx context.Context, n int, c *Change) error {
			if n == 0 {
				close(firstRow)
				select {
				case <-proceed:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		select {
		case <-firstRow:
		case <-r.done:
			t.Fatalf("Run returned %v before the first snapshot row", r.err)
		case <-time.After(waitTimeout):
			t.Fatal("timed out waiting for the first snapshot row")
		}
		db.exec(`INSERT INTO items SELECT i, 'during' FROM generate_series(101, 120) i`)
		db.exec(`UPDATE items SET v = 'updated during' WHERE id = 1`)
		db.exec(`DELETE FROM items WHERE id = 2`)
		close(proceed)
		r.waitChanges(t, h, "the snapshot and the changes written during it", atLeast(100+20+2))
		st := db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })

		db.exec(`INSERT INTO items SELECT i, 'after' FROM generate_series(121, 130) i`)
		got := r.waitChanges(t, h, "the rows written after the snapshot", atLeast(100+20+2+10))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}

		if st.ConsistentLSN == 0 || st.Rows != 100 || st.CompletedAt.IsZero() {
			t.Errorf("state: got %+v, want a consistent LSN, 100 rows, a completion time", st)
		}
		if len(got) != 132 {
			t.Errorf("changes: got %d, want 132: %s", len(got), summarize(got))
		}
		snap := got[:min(100, len(got))]
		for i, c := range snap {
			if c.Op != OpSnapshot || c.LSN != st.ConsistentLSN || c.TableIndex != 0 || c.Table.Name != "items" || c.Old != nil {
				t.Fatalf("change %d: got %s %s LSN %s old %v, want snapshot rows of items at the consistent point %s first",
					i, c.Op, c.Table.Name, c.LSN, c.Old, st.ConsistentLSN)
			}
			if c.New[1] != "before" {
				t.Errorf("snapshot row %v: got v=%v, want %q (the snapshot sees only what committed before the slot)", c.New[0], c.New[1], "before")
			}
		}
		gotIDs := ids(snap)
		slices.Sort(gotIDs)
		if want := seq(1, 100); !slices.Equal(gotIDs, want) {
			t.Errorf("snapshot ids: got %v, want 1..100 once each", gotIDs)
		}
		stream := got[min(100, len(got)):]
		for _, c := range stream {
			if c.Op == OpSnapshot || c.LSN <= st.ConsistentLSN {
				t.Errorf("stream change %s id %v: got LSN %s, want a stream change after the consistent point %s", c.Op, ids([]Change{c}), c.LSN, st.ConsistentLSN)
			}
		}
		inserts := filter(stream, byOp(OpInsert))
		if got, want := ids(inserts), seq(101, 130); !slices.Equal(got, want) {
			t.Errorf("inserted ids: got %v, want %v in commit order", got, want)
		}
		if ups := filter(stream, byOp(OpUpdate)); len(ups) != 1 || ups[0].New[0] != int32(1) || ups[0].New[1] != "updated during" {
			t.Errorf("updates: got %s, want id 1 set to %q", summarize(ups), "updated during")
		}
		if dels := filter(stream, byOp(OpDelete)); len(dels) != 1 || dels[0].Old[0] != int32(2) || dels[0].New != nil {
			t.Errorf("deletes: got %s, want id 2", summarize(dels))
		}
	})

	t.Run("concurrent writers", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "concurrent", `CREATE TABLE items (id int PRIMARY KEY, writer int NOT NULL)`)
		// Two writers insert one row per transaction, ids w+1, w+3, w+5, …,
		// from before the source starts until it streams.
		var g errgroup.Group
		const writers = 2
		stop := make(chan struct{})
		stopWriters := sync.OnceValue(func() error { close(stop); return g.Wait() })
		t.Cleanup(func() { stopWriters() })
		last := make([]int32, writers) // last id each writer inserted, once stopped
		warm := make(chan struct{}, writers)
		for w := range writers {
			conn := pgtest.Connect(t, db.dsn)
			g.Go(func() error {
				for id, n := int32(w+1), 0; ; id, n = id+writers, n+1 {
					select {
					case <-stop:
						last[w] = id - writers
						return nil
					default:
					}
					if _, err := conn.Exec(context.Background(), `INSERT INTO items VALUES ($1, $2)`, id, w); err != nil {
						return err
					}
					if n == 50 {
						warm <- struct{}{}
					}
				}
			})
		}
		for range writers {
			select {
			case <-warm:
			case <-time.After(waitTimeout):
				t.Fatalf("writers did not start: %v", stopWriters())
			}
		}

		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		r.waitChanges(t, h, "streamed inserts while the writers run", func(cs []Change) bool {
			return len(filter(cs, byOp(OpInsert))) >= 50
		})
		if err := stopWriters(); err != nil {
			t.Fatalf("writer: %v", err)
		}
		var total int
		for w := range writers {
			total += int(last[w]-int32(w+1))/writers + 1
		}
		got := r.waitChanges(t, h, "every written row", atLeast(total))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		st := db.state(dir)

		seen := map[int32]int{}
		for _, c := range got {
			seen[c.New[0].(int32)]++
		}
		for w := range writers {
			for id := int32(w + 1); id <= last[w]; id += writers {
				if seen[id] != 1 {
					t.Errorf("id %d: got %d times, want exactly once", id, seen[id])
				}
			}
		}
		if len(got) != total {
			t.Errorf("changes: got %d, want %d (one per written row)", len(got), total)
		}
		// Per writer, the snapshot holds a prefix of its rows and the stream
		// the rest, in commit order.
		for w := range writers {
			var snapIDs, streamIDs []int32
			for _, c := range got {
				if c.New[1] != int32(w) {
					continue
				}
				if c.Op == OpSnapshot {
					if c.LSN != st.ConsistentLSN {
						t.Errorf("snapshot row %v: got LSN %s, want the consistent point %s", c.New[0], c.LSN, st.ConsistentLSN)
					}
					snapIDs = append(snapIDs, c.New[0].(int32))
					continue
				}
				if c.Op != OpInsert || c.LSN <= st.ConsistentLSN {
					t.Errorf("stream row %v: got %s at %s, want an insert after %s", c.New[0], c.Op, c.LSN, st.ConsistentLSN)
				}
				streamIDs = append(streamIDs, c.New[0].(int32))
			}
			slices.Sort(snapIDs)
			all := append(snapIDs, streamIDs...)
			if !slices.IsSorted(all) || len(snapIDs) < 50 {
				t.Errorf("writer %d: got snapshot ids %v then stream ids %v, want at least its first 50 rows in the snapshot, then the rest in order", w, snapIDs, streamIDs)
			}
		}
		t.Logf("%d rows: %d read by the snapshot, the rest streamed", total, st.Rows)
		if st.Rows != int64(len(filter(got, byOp(OpSnapshot)))) {
			t.Errorf("state rows: got %d, want %d", st.Rows, len(filter(got, byOp(OpSnapshot))))
		}
	})

	t.Run("never", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "never", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'before' FROM generate_series(1, 10) i;`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, func(c *Config) { c.Snapshot = SnapshotNever }, "items"), h)
		st := db.waitState(dir, "written", func(snapshotState) bool { return true })
		db.exec(`INSERT INTO items SELECT i, 'after' FROM generate_series(11, 15) i`)
		db.exec(`UPDATE items SET v = 'changed' WHERE id = 3`)
		got := r.waitChanges(t, h, "the changes after the slot", atLeast(6))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		if !st.Complete || st.Rows != 0 || st.ConsistentLSN == 0 {
			t.Errorf("state: got %+v, want complete with 0 rows", st)
		}
		if len(got) != 6 {
			t.Errorf("changes: got %d (%s), want 6", len(got), summarize(got))
		}
		if snaps := filter(got, byOp(OpSnapshot)); len(snaps) != 0 {
			t.Errorf("snapshot rows: got %s, want none", summarize(snaps))
		}
		if got, want := ids(filter(got, byOp(OpInsert))), seq(11, 15); !slices.Equal(got, want) {
			t.Errorf("inserted ids: got %v, want %v", got, want)
		}
		if ups := filter(got, byOp(OpUpdate)); len(ups) != 1 || ups[0].New[0] != int32(3) || ups[0].New[1] != "changed" {
			t.Errorf("updates: got %s, want id 3", summarize(ups))
		}
	})

	t.Run("restart resumes without a snapshot", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "resume", `
			CREATE TABLE items (id int PRIMARY KEY);
			INSERT INTO items SELECT generate_series(1, 5);`)
		dir, logs := t.TempDir(), &logBuffer{}
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		db.exec(`INSERT INTO items VALUES (6)`)
		afterSix := db.lsn(`SELECT pg_current_wal_lsn()`)
		r.waitChanges(t, h, "5 snapshot rows and 1 insert", atLeast(6))
		// The handler sees insert 6 before its COMMIT is read; only a
		// confirmed COMMIT keeps it from being sent again after the restart.
		db.waitSlot("confirmed past insert 6", func(s slotInfo) bool { return s.confirmed >= afterSix })
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		db.waitInactive()
		db.exec(`INSERT INTO items VALUES (7)`)

		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, logs, nil, "items"), h2)
		got := r2.waitChanges(t, h2, "the insert made while stopped", atLeast(1))
		db.exec(`INSERT INTO items VALUES (8)`)
		got = r2.waitChanges(t, h2, "the insert made after the restart", atLeast(2))
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(got) != 2 || got[0].Op != OpInsert || got[1].Op != OpInsert || !slices.Equal(ids(got), []int32{7, 8}) {
			t.Errorf("changes after restart: got %s, want inserts 7, 8 only (no snapshot, no replay of acknowledged changes)", summarize(got))
		}
		if !strings.Contains(logs.String(), "resuming from replication slot") {
			t.Errorf("log: got %q, want a line saying it resumes from the slot", logs.String())
		}
	})

	t.Run("a slot in use is refused", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "in_use", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.waitSlot("active", func(s slotInfo) bool { return s.active })

		err := run(t, db.newSource(dir, nil, nil, "items"), newFakeHandler(false)).wait(t)
		want := "replication slot in_use is in use by another process"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("second Run on the same slot: got %v, want an error containing %q", err, want)
		}
		wantProblems(t, CheckServer(context.Background(), db.conn, "in_use", "in_use"), want)

		// The first one is not disturbed.
		db.exec(`INSERT INTO items VALUES (1)`)
		r.waitChanges(t, h, "an insert", atLeast(1))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
	})

	t.Run("stop during the snapshot", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "stop_in_snapshot", `
			CREATE TABLE items (id int PRIMARY KEY);
			INSERT INTO items SELECT generate_series(1, 10);`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		inSnapshot := make(chan struct{})
		h.before = func(ctx context.Context, n int, _ *Change) error {
			if n == 3 {
				close(inSnapshot)
				<-ctx.Done() // a producer blocked on a full buffer
				return ctx.Err()
			}
			return nil
		}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		select {
		case <-inSnapshot:
		case <-r.done:
			t.Fatalf("Run returned %v before the snapshot", r.err)
		case <-time.After(waitTimeout):
			t.Fatal("timed out waiting for the snapshot")
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("Run cancelled during the snapshot: got %v, want nil", err)
		}
		if st := db.state(dir); st.Complete {
			t.Errorf("state after a stop during the snapshot: got %+v, want incomplete", st)
		}
		db.waitInactive()
		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, nil, "items"), h2)
		got := r2.waitChanges(t, h2, "the snapshot redone", atLeast(10))
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if snaps := filter(got, byOp(OpSnapshot)); len(snaps) != 10 {
			t.Errorf("snapshot rows after the restart: got %d, want 10", len(snaps))
		}
	})

	t.Run("stop before it starts", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "stop_at_once", `CREATE TABLE items (id int PRIMARY KEY)`)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := db.newSource(t.TempDir(), nil, nil, "items").Run(ctx, newFakeHandler(false)); err != nil {
			t.Errorf("Run with a cancelled context: got %v, want nil", err)
		}
	})

	t.Run("rows deleted while the snapshot was interrupted get tombstones", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ghosts", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'v' FROM generate_series(1, 20) i;`)
		dir := t.TempDir()
		published := interruptSnapshot(t, db, dir)
		// Published by the failed run, then deleted or re-keyed: neither the
		// new snapshot nor the new stream would ever mention them.
		db.exec(`DELETE FROM items WHERE id = $1`, published[0])
		db.exec(`UPDATE items SET id = 100 WHERE id = $1`, published[1])
		db.exec(`DELETE FROM items WHERE id = 7`) // maybe never published: a tombstone does no harm

		logs, h2 := &logBuffer{}, newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, nil, "items"), h2)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		got := r.waitChanges(t, h2, "tombstones and the snapshot", atLeast(3+18))
		if err := r.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(got) != 21 {
			t.Fatalf("changes: got %d (%s), want 3 deletes then 18 snapshot rows", len(got), summarize(got))
		}
		var dels []int32
		for _, c := range got[:3] {
			if c.Op != OpDelete || c.Old == nil {
				t.Fatalf("changes: got %s, want the 3 deletes first", summarize(got))
			}
			dels = append(dels, c.Old[0].(int32))
		}
		if want := []int32{published[0], published[1], 7}; !slices.Equal(dels, want) {
			t.Errorf("tombstoned keys: got %v, want %v", dels, want)
		}
		if snaps := filter(got[3:], byOp(OpSnapshot)); len(snaps) != 18 {
			t.Errorf("snapshot rows after the tombstones: got %d, want 18", len(snaps))
		}
		var n int
		if err := db.conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, prevSlotName(db.name)).Scan(&n); err != nil || n != 0 {
			t.Errorf("previous slot %s: %d left (%v), want dropped", prevSlotName(db.name), n, err)
		}
		if !strings.Contains(logs.String(), "tombstoned rows deleted while the snapshot was interrupted") || !strings.Contains(logs.String(), "tombstones=3") {
			t.Errorf("log lacks the tombstone line:\n%s", logs.String())
		}
	})

	// A row deleted, and another re-keyed, before the key column was
	// renamed: their old WAL tuples name the key by its old name, and the
	// replay finds it by its place among the WAL's key columns. The keys'
	// bytes do not depend on the column's name, so these tombstones remove
	// what the interrupted run published.
	t.Run("rows deleted before their key column was renamed get tombstones", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ghosts_rename", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'v' FROM generate_series(1, 20) i;`)
		dir := t.TempDir()
		published := interruptSnapshot(t, db, dir)
		db.exec(`DELETE FROM items WHERE id = $1`, published[0])
		db.exec(`UPDATE items SET id = 100 WHERE id = $1`, published[1])
		db.exec(`ALTER TABLE items RENAME COLUMN id TO item_id`)

		logs, h2 := &logBuffer{}, newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, nil, "items"), h2)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		got := r.waitChanges(t, h2, "tombstones and the snapshot", atLeast(2+19))
		if err := r.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(got) != 21 || got[0].Op != OpDelete || got[1].Op != OpDelete || got[0].Old == nil || got[1].Old == nil {
			t.Fatalf("changes: got %s, want 2 deletes then 19 snapshot rows", summarize(got))
		}
		if dels := []any{got[0].Old[0], got[1].Old[0]}; dels[0] != published[0] || dels[1] != published[1] {
			t.Errorf("tombstoned keys: got %v, want [%d %d]", dels, published[0], published[1])
		}
		if strings.Contains(logs.String(), "lacks today's key column") {
			t.Errorf("the replay skipped a row:\n%s", logs.String())
		}
	})

	// A row deleted before the table was renamed, restarted with the
	// configuration naming it anew: the replayed WAL names the table by its
	// old name, and the replay finds it by its OID.
	t.Run("rows deleted before their table was renamed get tombstones", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ghosts_table", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'v' FROM generate_series(1, 20) i;`)
		dir := t.TempDir()
		published := interruptSnapshot(t, db, dir)
		db.exec(`DELETE FROM items WHERE id = $1`, published[0])
		db.exec(`ALTER TABLE items RENAME TO goods`)

		logs, h2 := &logBuffer{}, newFakeHandler(false)
		r := run(t, db.newSource(dir, logs, nil, "goods"), h2)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		got := r.waitChanges(t, h2, "the tombstone and the snapshot", atLeast(1+19))
		if err := r.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(got) != 20 || got[0].Op != OpDelete || got[0].Old == nil || got[0].TableIndex != 0 || got[0].Table.Name != "goods" {
			t.Fatalf("changes: got %s, want a delete of goods then 19 snapshot rows", summarize(got))
		}
		if got[0].Old[0] != published[0] {
			t.Errorf("tombstoned key: got %v, want %d", got[0].Old[0], published[0])
		}
		if !strings.Contains(logs.String(), LogTableRenamed) || !strings.Contains(logs.String(), "wal_name=public.items") {
			t.Errorf("no rename warning:\n%s", logs)
		}
	})

	// A TRUNCATE, and a delete from before a column was added and another
	// changed type, while the snapshot was interrupted: both removed rows
	// the failed run had published, which neither the new snapshot nor the
	// new stream mention.
	t.Run("a TRUNCATE or a shape change while the snapshot was interrupted", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ghosts_shape", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'v' FROM generate_series(1, 20) i;`)
		dir := t.TempDir()
		published := interruptSnapshot(t, db, dir)
		// The delete's old tuple has every column (FULL), two of them;
		// the table has three by the restart, and v is no longer text.
		db.exec(`ALTER TABLE items REPLICA IDENTITY FULL`)
		db.exec(`DELETE FROM items WHERE id = $1`, published[0])
		db.exec(`ALTER TABLE items ADD COLUMN w int`)
		db.exec(`ALTER TABLE items ALTER COLUMN v TYPE int USING 0`)
		db.exec(`TRUNCATE items`)
		db.exec(`INSERT INTO items (id, v) SELECT i, 0 FROM generate_series(1, 3) i`)

		h2 := truncatingHandler{newFakeHandler(false)}
		r := run(t, db.newSource(dir, nil, nil, "items"), h2)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		got := r.waitChanges(t, h2.fakeHandler, "a tombstone, the truncation and the snapshot", atLeast(1+1+3))
		if err := r.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(got) != 5 || got[0].Op != OpDelete || got[0].Old == nil || got[0].Old[0] != published[0] ||
			got[1].Op != OpTruncate || got[1].Table.Name != "items" || len(filter(got[2:], byOp(OpSnapshot))) != 3 {
			t.Fatalf("changes: got %s, want the delete of %d, the TRUNCATE, then 3 snapshot rows", summarize(got), published[0])
		}
	})

	// A slot whose snapshot is not known to be complete is not trusted: it
	// is dropped and created again, and the snapshot redone.
	for _, tt := range []struct {
		name       string
		db         string
		firstRun   func(t *testing.T, db *testDB, dir string) // leaves the slot behind
		wantReason string
	}{
		{
			name: "crash mid-snapshot", db: "crash_mid_snapshot",
			firstRun: func(t *testing.T, db *testDB, dir string) {
				h := newFakeHandler(false)
				h.before = func(_ context.Context, n int, _ *Change) error {
					if n == 5 {
						return errBoom
					}
					return nil
				}
				err := run(t, db.newSource(dir, nil, nil, "items"), h).wait(t)
				if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "initial snapshot") {
					t.Fatalf("first Run: got %v, want the handler's error during the initial snapshot", err)
				}
				if st := db.state(dir); st.Complete || st.ConsistentLSN == 0 {
					t.Fatalf("state after the failed snapshot: got %+v, want incomplete with a consistent LSN", st)
				}
			},
			wantReason: "the previous initial snapshot did not complete",
		},
		{
			name: "state file lost", db: "state_lost",
			firstRun: func(t *testing.T, db *testDB, dir string) {
				h := newFakeHandler(false)
				r := run(t, db.newSource(dir, nil, nil, "items"), h)
				db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
				if err := r.stop(t); err != nil {
					t.Fatalf("first Run after cancel: got %v, want nil", err)
				}
				if err := os.Remove(statePath(dir, db.name)); err != nil {
					t.Fatal(err)
				}
			},
			wantReason: "data_dir holds no snapshot state for it",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := newDB(t, pg, tt.db, `
				CREATE TABLE items (id int PRIMARY KEY);
				INSERT INTO items SELECT generate_series(1, 20);`)
			dir := t.TempDir()
			tt.firstRun(t, db, dir)
			old := db.waitSlot("left behind, inactive", func(s slotInfo) bool { return s.exists && !s.active })
			// Committed after the old slot's position: resuming that slot would
			// stream it as an insert; a redone snapshot reads it.
			db.exec(`INSERT INTO items VALUES (21)`)

			logs, h := &logBuffer{}, newFakeHandler(false)
			r := run(t, db.newSource(dir, logs, nil, "items"), h)
			st := db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
			got := r.waitChanges(t, h, "the snapshot redone", atLeast(21))
			db.exec(`INSERT INTO items VALUES (22)`)
			got = r.waitChanges(t, h, "an insert after the new snapshot", atLeast(22))
			if err := r.stop(t); err != nil {
				t.Fatalf("second Run after cancel: got %v, want nil", err)
			}

			if len(got) != 22 {
				t.Errorf("changes: got %d (%s), want 22", len(got), summarize(got))
			}
			snaps := filter(got, byOp(OpSnapshot))
			snapIDs := ids(snaps)
			slices.Sort(snapIDs)
			if want := seq(1, 21); !slices.Equal(snapIDs, want) {
				t.Errorf("snapshot ids: got %v, want %v", snapIDs, want)
			}
			for _, c := range snaps {
				if c.LSN != st.ConsistentLSN {
					t.Errorf("snapshot row %v: got LSN %s, want the new consistent point %s", c.New[0], c.LSN, st.ConsistentLSN)
				}
			}
			if ins := filter(got, byOp(OpInsert)); len(ins) != 1 || ins[0].New[0] != int32(22) {
				t.Errorf("inserts: got %s, want only 22", summarize(ins))
			}
			if st.ConsistentLSN <= old.confirmed || st.Rows != 21 {
				t.Errorf("new state: got %+v, want 21 rows and a consistent point after the old slot's %s", st, old.confirmed)
			}
			log := logs.String()
			for _, want := range []string{LogSnapshotRestart, tt.wantReason, "created replication slot", "initial snapshot complete"} {
				if !strings.Contains(log, want) {
					t.Errorf("log: got %q, want it to contain %q", log, want)
				}
			}
		})
	}

	// A table configured after the initial snapshot was never read: its
	// older rows would never be published by streaming, so resuming the
	// slot snapshots it online (a republish job); the tables snapshotted
	// are recorded.
	t.Run("table added after the snapshot", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "added", `
			CREATE TABLE items (id int PRIMARY KEY, v text);
			CREATE TABLE extra (id int PRIMARY KEY, v text);
			INSERT INTO items SELECT i, 'x' FROM generate_series(1, 5) i;
			INSERT INTO extra SELECT i, 'x' FROM generate_series(1, 7) i;`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		r.waitChanges(t, h, "the snapshot of items", atLeast(5))
		// A streamed change means the snapshot completed: streaming starts
		// only once its state is written.
		db.exec(`INSERT INTO items VALUES (6, 'streamed')`)
		r.waitChanges(t, h, "a change streamed after the snapshot", atLeast(6))
		if err := r.stop(t); err != nil {
			t.Fatalf("first run: %v", err)
		}
		st, ok, err := readState(dir, "added")
		if err != nil || !ok || !st.Complete || !slices.Equal(st.Tables, []string{"public.items"}) {
			t.Fatalf("state after the snapshot: got %+v (found %v, %v), want complete with tables [public.items]", st, ok, err)
		}

		onlineSnapshot(t, db, dir, 7)

		// Streaming only (snapshot: never) resumes as before.
		never := func(c *Config) { c.Snapshot = SnapshotNever }
		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, never, "items", "extra"), h2)
		db.exec(`INSERT INTO extra VALUES (8, 'new')`)
		ofExtra := func(c Change) bool { return c.TableIndex == 1 }
		got := r2.waitChanges(t, h2, "the new row of extra", func(cs []Change) bool { return len(filter(cs, ofExtra)) > 0 })
		// items' last change may come again (at-least-once); extra's only
		// change is the new row: its older rows are not snapshotted.
		if ex := filter(got, ofExtra); len(ex) != 1 || ex[0].Op != OpInsert || ex[0].New[0] != int32(8) {
			t.Errorf("extra after resuming: got %s, want only the insert of 8", summarize(ex))
		}
		if err := r2.stop(t); err != nil {
			t.Fatalf("resume with snapshot never: %v", err)
		}
		// Streaming extra only was recorded as the operator's choice: back
		// on snapshot: initial, the slot resumes.
		if st, _, err := readState(dir, "added"); err != nil || !slices.Equal(st.Tables, []string{"public.items", "public.extra"}) {
			t.Fatalf("state after streaming extra only: got tables %v (%v), want [public.items public.extra]", st.Tables, err)
		}
		h3 := newFakeHandler(false)
		r3 := run(t, db.newSource(dir, nil, nil, "items", "extra"), h3)
		db.exec(`INSERT INTO extra VALUES (9, 'new')`)
		r3.waitChanges(t, h3, "the insert of 9", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.TableIndex == 1 && c.New != nil && c.New[0] == int32(9) })
		})
		if err := r3.stop(t); err != nil {
			t.Fatalf("resume on snapshot initial after never: %v", err)
		}

		// A state file written before the table list existed gets one on
		// the next resume, so a table added after that is refused.
		st.Tables = nil
		if err := writeState(dir, st); err != nil {
			t.Fatal(err)
		}
		h4 := newFakeHandler(false)
		r4 := run(t, db.newSource(dir, nil, nil, "items"), h4)
		db.exec(`INSERT INTO items VALUES (10, 'streamed')`) // streamed once resumed, so after the state is written
		r4.waitChanges(t, h4, "the insert of 10", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.New != nil && c.New[0] == int32(10) })
		})
		if err := r4.stop(t); err != nil {
			t.Fatalf("resume from an old state file: %v", err)
		}
		if st, _, err := readState(dir, "added"); err != nil || !slices.Equal(st.Tables, []string{"public.items"}) {
			t.Fatalf("old state file after a resume: got tables %v (%v), want [public.items]", st.Tables, err)
		}
		// The table added after the upgrade is snapshotted online too
		// (the state written above has no finished job).
		onlineSnapshot(t, db, dir, 9)
	})
}

// onlineSnapshot resumes the "added" slot with extra configured after its
// initial snapshot and checks that extra's rows 1..n are republished
// while streaming, and the job recorded as the only one finished.
func onlineSnapshot(t *testing.T, db *testDB, dir string, n int32) {
	t.Helper()
	logs := &logBuffer{}
	h := newFakeHandler(false)
	r := run(t, db.newSource(dir, logs, nil, "items", "extra"), h)
	ofExtra := func(c Change) bool { return c.TableIndex == 1 && c.Op == OpSnapshot && c.Republish != "" }
	got := r.waitChanges(t, h, "extra's rows snapshotted online", func(cs []Change) bool { return len(filter(cs, ofExtra)) >= int(n) })
	if ex := ids(filter(got, ofExtra)); !slices.Equal(ex, seq(1, n)) {
		t.Errorf("extra's rows republished: got %v, want 1..%d", ex, n)
	}
	st := db.waitState(dir, "the online snapshot finished", func(s snapshotState) bool {
		return len(s.Republish) == 0 && len(s.RepublishDone) == 1
	})
	if !slices.Equal(st.Tables, []string{"public.items", "public.extra"}) {
		t.Errorf("tables after the online snapshot: got %v, want [public.items public.extra]", st.Tables)
	}
	if !strings.Contains(logs.String(), LogTablesAdded) {
		t.Errorf("no log line %q:\n%s", LogTablesAdded, logs)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("resume with extra added: %v", err)
	}
}

// interruptSnapshot runs the source on items until its handler fails at
// the sixth row of the initial snapshot, and returns the keys of the five
// published before, once the slot is left behind inactive.
func interruptSnapshot(t *testing.T, db *testDB, dir string) []int32 {
	t.Helper()
	errBoom := errors.New("boom: the handler failed")
	h := newFakeHandler(false)
	h.before = func(_ context.Context, n int, _ *Change) error {
		if n == 5 {
			return errBoom
		}
		return nil
	}
	if err := run(t, db.newSource(dir, nil, nil, "items"), h).wait(t); !errors.Is(err, errBoom) {
		t.Fatalf("first Run: got %v, want the handler's error", err)
	}
	published := ids(h.got())
	if len(published) != 5 {
		t.Fatalf("first Run published %v, want 5 rows", published)
	}
	db.waitSlot("left behind, inactive", func(s slotInfo) bool { return s.exists && !s.active })
	return published
}

// seq returns from..to.
func seq(from, to int32) []int32 {
	var s []int32
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// gcPercent is the Go GC target in effect (GOGC).
func gcPercent(t *testing.T) uint64 {
	t.Helper()
	sample := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime metric %s is not available", sample[0].Name)
	}
	return sample[0].Value.Uint64()
}
