package source

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// waitReport polls src's Stats until cond holds.
func waitReport(t *testing.T, r *running, src *Source, what string, cond func(Report) bool) Report {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		rep := src.Stats().Report()
		if cond(rep) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the stats to show %s; last %+v", what, rep)
		}
		select {
		case <-r.done:
			t.Fatalf("Source.Run returned %v while waiting for the stats to show %s", r.err, what)
		case <-time.After(20 * time.Millisecond): // polling interval toward the deadline
		}
	}
}

// Stats follow the source through its life: the snapshot table by table,
// streaming with the confirmed LSN, the commit time of a transaction
// waiting for its acknowledgement, rows, and a reconnect. ReadSlotStatus
// and ReadSnapshotState see what `replicator status` shows.
func TestStats(t *testing.T) {
	pg := startCluster(t)
	db := newDB(t, pg, "stats", `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 30)`)
	dir := t.TempDir()
	h := newFakeHandler(true)
	src := db.newSource(dir, nil, func(c *Config) {
		c.Reconnect = Reconnect{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	}, "items")
	if rep := src.Stats().Report(); rep.Phase != PhaseStarting {
		t.Fatalf("before Run: phase %s, want starting", rep.Phase)
	}
	r := run(t, src, h)

	// The snapshot waits for its rows' acknowledgements: still its phase.
	r.waitChanges(t, h, "30 snapshot rows", atLeast(30))
	waitReport(t, r, src, "the snapshot's 30 rows of public.items", func(rep Report) bool {
		return rep.Phase == PhaseSnapshot && len(rep.Snapshot) == 1 && rep.Snapshot[0].Table == "public.items" && rep.Snapshot[0].Done == 30
	})
	h.ackAll(t)
	waitReport(t, r, src, "streaming", func(rep Report) bool { return rep.Phase == PhaseStreaming })

	// A transaction held unacknowledged: pending since its commit, not
	// confirmed; acknowledged: confirmed, nothing pending.
	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
	before := time.Now()
	db.exec(`INSERT INTO items VALUES (31)`)
	end := db.lsn(`SELECT pg_current_wal_lsn()::text`)
	r.waitChanges(t, h, "the insert", atLeast(31))
	rep := waitReport(t, r, src, "a pending transaction", func(rep Report) bool { return !rep.PendingSince.IsZero() })
	if rep.PendingSince.Before(before.Add(-5*time.Second)) || rep.PendingSince.After(time.Now().Add(5*time.Second)) || rep.ConfirmedLSN >= end || rep.Rows != 1 {
		t.Errorf("with the insert unacknowledged: got pending since %v (insert at %v), confirmed %s (insert ends by %s), rows %d; want pending since its commit, not confirmed, 1 row",
			rep.PendingSince, before, rep.ConfirmedLSN, end, rep.Rows)
	}
	h.ackAll(t)
	waitReport(t, r, src, fmt.Sprintf("confirmed %s and nothing pending", end), func(rep Report) bool {
		return rep.PendingSince.IsZero() && rep.ConfirmedLSN >= end && rep.ServerWALEnd > 0
	})
	// The loop comes round at least every second while it streams.
	waitReport(t, r, src, "the stream loop coming round", func(rep Report) bool {
		return time.Since(rep.LoopAt) < 3*time.Second && rep.LoopAt.After(before)
	})

	conn := db.conn
	st, err := ReadSlotStatus(context.Background(), conn, db.name)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || !st.Active || st.ActivePID == 0 || st.ConfirmedLSN == 0 || st.CurrentLSN < st.ConfirmedLSN || st.RestartLSN == 0 {
		t.Errorf("ReadSlotStatus of a streaming slot: %+v", st)
	}
	snap, ok, err := ReadSnapshotState(dir, db.name)
	if err != nil || !ok || !snap.Complete || snap.Rows != 30 || !slices.Equal(snap.Tables, []string{"public.items"}) || snap.ConsistentLSN == 0 {
		t.Errorf("ReadSnapshotState: %+v ok=%v err=%v", snap, ok, err)
	}
	if _, ok, err := ReadSnapshotState(dir, "other"); ok || err != nil {
		t.Errorf("ReadSnapshotState of an unknown slot: ok=%v err=%v, want none", ok, err)
	}
	if st, err := ReadSlotStatus(context.Background(), conn, "no_such_slot"); err != nil || st.Exists {
		t.Errorf("ReadSlotStatus of a missing slot: %+v, %v", st, err)
	}

	// A lost connection: counted, and streaming again.
	db.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, db.name)
	waitReport(t, r, src, "a reconnect, streaming again", func(rep Report) bool {
		return rep.Reconnects >= 1 && rep.Phase == PhaseStreaming
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if rep := src.Stats().Report(); rep.Phase != PhaseStarting {
		t.Errorf("after Run: phase %s, want starting (not ready)", rep.Phase)
	}
	db.waitInactive()
	st, err = ReadSlotStatus(context.Background(), conn, db.name)
	if err != nil || st.Active || st.RetainedBytes() != uint64(st.CurrentLSN-st.RestartLSN) {
		t.Errorf("ReadSlotStatus of a stopped slot: %+v, %v", st, err)
	}
}
