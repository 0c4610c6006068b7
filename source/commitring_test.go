package source

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestCommitRing: a window's mark tells the transactions committed before
// it from those after; the ring forgets the oldest once full, and then
// cannot vouch for a mark whose commits it lost.
func TestCommitRing(t *testing.T) {
	t.Parallel()
	var none *commitRing // a stream without a republisher
	none.add(7)
	if none.count() != 0 || none.committedBefore([]uint32{7}, 1) || none.holdsAny([]uint32{7}) {
		t.Fatal("a nil ring: took a commit")
	}
	r := newCommitRing()
	if r.committedBefore([]uint32{7}, r.count()) || r.holdsAny([]uint32{7}) {
		t.Fatal("an empty ring: got committed, want not")
	}
	r.add(7)
	mark := r.count()
	r.add(8) // after the mark: after the low watermark
	if !r.holdsAny([]uint32{9, 8}) || r.holdsAny([]uint32{9, 0}) {
		t.Error("holdsAny: want 8 held, 9 and 0 not")
	}
	for _, tt := range []struct {
		xids []uint32
		want bool
	}{
		{[]uint32{7}, true},
		{[]uint32{8}, false},
		{[]uint32{9, 8}, false}, // 9 never seen: still running
		{[]uint32{9, 7}, true},
		{nil, false},
		{[]uint32{0}, false},
	} {
		if got := r.committedBefore(tt.xids, mark); got != tt.want {
			t.Errorf("committedBefore(%v): got %v, want %v", tt.xids, got, tt.want)
		}
	}
	for i := range commitRingSize - 2 {
		r.add(uint32(1000 + i))
	}
	if !r.committedBefore([]uint32{7}, mark) {
		t.Error("7 with its commit still in the ring: not found")
	}
	r.add(1)
	if !r.committedBefore([]uint32{12345678}, mark) {
		t.Error("a mark whose commits the ring lost: want any xid said committed (read again), got not")
	}
	if late := r.count(); r.committedBefore([]uint32{7}, late) {
		t.Error("7, overwritten, before a later mark: still found")
	}
}

// TestRepublishSnapshotGap: a transaction whose commit precedes a chunk's
// low watermark in the WAL but which the chunk's snapshot does not see yet
// (here it waits for a synchronous standby that never answers: committed
// in the WAL, read by the stream, still invisible to other sessions) would
// let the chunk publish the row as it was before it, after its change.
// The stream finds the transaction among the snapshot's running ones, the
// chunk is dropped and read again (with the chunks read after it), and
// the topic converges to the table.
func TestRepublishSnapshotGap(t *testing.T) {
	t.Parallel()
	// A synchronous standby that never comes, from the cluster's start:
	// set by a reload instead, a commit could miss it (the flag commits
	// wait on is the checkpointer's to update, after the session's own
	// setting), and the stuck update went through (1 run in 12). Every
	// session but the stuck one commits without the standby.
	pg := startCluster(t, pgtest.Setting("synchronous_standby_names", "nobody"), pgtest.Setting("synchronous_commit", "local"))
	db := newDB(t, pg, "rep_gap", "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
	db.exec("INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	stuck := pgtest.Connect(t, db.dsn)
	if _, err := stuck.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Connect(t, db.dsn) // for release, which the republisher's goroutine may run
	release := sync.OnceFunc(func() {
		for _, sql := range []string{"ALTER SYSTEM SET synchronous_standby_names = ''", "SELECT pg_reload_conf()"} {
			if _, err := admin.Exec(context.Background(), sql); err != nil {
				t.Errorf("release the stuck transaction: %s: %v", sql, err)
			}
		}
	})
	t.Cleanup(release)
	done := make(chan error, 1)
	var redos atomic.Int64
	dir := t.TempDir()
	src := db.newSource(dir, nil, nil, "items")
	src.chunkRedo = func() {
		redos.Add(1)
		release()
		select { // the stuck transaction is visible now
		case err := <-done:
			done <- err
		case <-ctx.Done():
		}
	}
	h := newFakeHandler(false)
	r := run(t, src, h)
	db.waitStreamable(dir)
	r.waitChanges(t, h, "the snapshot", atLeast(100))

	var pid int
	if err := stuck.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := stuck.Exec(ctx, "UPDATE items SET v = 1 WHERE id = 5")
		done <- err
	}()
	waitFor(t, "the update to wait for the standby", func() bool {
		var ev string
		return db.conn.QueryRow(ctx, "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1", pid).Scan(&ev) == nil && ev == "SyncRep"
	})
	r.waitChanges(t, h, "the stuck update, read from the WAL", func(cs []Change) bool {
		return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpUpdate && c.New[0] == int32(5) && c.New[1] == int32(1) })
	})
	var visible int
	if err := db.conn.QueryRow(ctx, "SELECT v FROM items WHERE id = 5").Scan(&visible); err != nil || visible != 0 {
		t.Fatalf("precondition: the update is not visible yet: got v=%d, %v; want 0", visible, err)
	}

	from := len(h.got())
	// Chunks of 10 rows: the reader is chunks ahead when the first one
	// is found untrusted, and stops after the one it reads, its
	// connection intact.
	id, err := RequestRepublish(ctx, db.conn, db.name, []string{"public.items"}, RepublishOptions{ChunkRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	db.waitState(dir, "republish "+id+" done", func(s snapshotState) bool {
		return len(s.Republish) == 0 && slices.Contains(s.RepublishDone, id)
	})
	release() // if the chunk was not read again, the update is still stuck
	if err := <-done; err != nil {
		t.Fatalf("the stuck update: %v", err)
	}
	db.exec("INSERT INTO items VALUES (-1, -1)")
	got := r.waitChanges(t, h, "the end marker", func(cs []Change) bool {
		return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0].(int32) == -1 })
	})
	if redos.Load() == 0 {
		t.Error("the chunk that missed the stuck transaction was not read again")
	}
	checkConverged(t, db, got, from, id)
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
