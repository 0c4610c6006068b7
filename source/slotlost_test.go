package source

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// A slot that is gone while the snapshot state says it streamed (dropped
// by a DBA, lost in a failover) is refused, loudly and with the ways out,
// instead of being created again with a new snapshot that would leave the
// rows deleted in the gap live on the topics; nothing is created or
// published. Deleting the state file, the documented way to accept the
// loss, takes a new snapshot.
func TestLostSlotRefused(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	for _, tc := range []struct {
		name     string
		snapshot string
		want     string
	}{
		{"snapshot initial", SnapshotInitial, "rows deleted while it was missing would never get a tombstone"},
		{"snapshot never", SnapshotNever, "every change made while it was missing is lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := "lost_" + strings.Fields(tc.name)[1]
			db := newDB(t, pg, name, `
				CREATE TABLE items (id int PRIMARY KEY, v text);
				INSERT INTO items SELECT i, 'v' FROM generate_series(1, 3) i;`)
			dir := t.TempDir()
			mode := func(c *Config) { c.Snapshot = tc.snapshot }
			h := newFakeHandler(false)
			r := run(t, db.newSource(dir, nil, mode, "items"), h)
			db.waitStreamable(dir)
			if err := r.stop(t); err != nil {
				t.Fatalf("first run: %v", err)
			}
			db.waitInactive()
			db.exec(`SELECT pg_drop_replication_slot($1)`, db.name)
			db.exec(`DELETE FROM items WHERE id = 2`) // in the gap: its tombstone is lost

			h = newFakeHandler(false)
			err := run(t, db.newSource(dir, nil, mode, "items"), h).wait(t)
			var lost *SlotLostError
			if !errors.As(err, &lost) || lost.Slot != db.name {
				t.Fatalf("Run with the slot gone: got %v, want a *SlotLostError for slot %s", err, db.name)
			}
			for _, w := range []string{"replication slot " + db.name + " is gone", "dropped", "failover", tc.want,
				"delete " + statePath(dir, db.name), "new topics"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if s := db.slot(); s.exists {
				t.Errorf("the refused start created slot %s", db.name)
			}
			// check reports the same.
			if err := CheckSlotKept(t.Context(), db.conn, db.name, dir, tc.snapshot == SnapshotInitial); !errors.As(err, &lost) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckSlotKept: got %v, want the *SlotLostError", err)
			}
			if n := len(h.got()); n != 0 {
				t.Errorf("the refused start published %d changes", n)
			}
			if tc.snapshot != SnapshotInitial {
				return
			}

			// The way out the message gives: delete the state file.
			if err := os.Remove(statePath(dir, db.name)); err != nil {
				t.Fatal(err)
			}
			if err := CheckSlotKept(t.Context(), db.conn, db.name, dir, true); err != nil {
				t.Errorf("CheckSlotKept without a state file: %v", err)
			}
			r = run(t, db.newSource(dir, nil, nil, "items"), h)
			r.waitChanges(t, h, "a new snapshot of the two rows left", atLeast(2))
			db.waitStreamable(dir)
			if err := r.stop(t); err != nil {
				t.Fatalf("run after deleting the state: %v", err)
			}
		})
	}
}
