package source

import (
	"strings"
	"testing"
)

// A configured table renamed while the source streams keeps sending its
// changes under its new name (the publication lists it by OID): they go to
// the configured table, never dropped, with one warning per name.
func TestStreamRenamedTable(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("renamed and altered while streaming", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "renalter", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		dir := t.TempDir()
		logs := &logBuffer{}
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		r := run(t, db.newSource(dir, logs, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1, 'a')`)
		r.waitChanges(t, h.fakeHandler, "the first insert", atLeast(1))

		db.exec(`ALTER TABLE items RENAME TO goods`)
		db.exec(`INSERT INTO goods VALUES (2, 'b')`)
		db.exec(`ALTER TABLE goods ADD COLUMN extra int`) // a new RELATION under the same name
		db.exec(`INSERT INTO goods VALUES (3, 'c', 7)`)
		db.exec(`ALTER TABLE goods RENAME TO wares`)
		db.exec(`INSERT INTO wares VALUES (4, 'd', 8)`)
		got := r.waitChanges(t, h.fakeHandler, "the inserts after the renames", atLeast(4))
		if len(got) != 4 || ids(got)[3] != 4 {
			t.Fatalf("changes: got %s, want inserts 1 to 4", summarize(got))
		}
		for _, c := range got {
			if c.TableIndex != 0 || c.Table.Name != "items" {
				t.Errorf("change %s: want table items at index 0", summarize([]Change{c}))
			}
		}
		if row := got[2].New; len(row) != 3 || row[2] != int32(7) {
			t.Errorf("insert after ADD COLUMN: got %v, want 3 values ending in 7", row)
		}
		calls := h.calls()
		if len(calls) < 2 || colNames(calls[len(calls)-1].next) != "id, v, extra" {
			t.Errorf("FollowShape: got %+v, want the added column followed", calls)
		}
		out := logs.String()
		if n := strings.Count(out, LogTableRenamed); n != 2 {
			t.Errorf("rename warnings: got %d, want 2 (goods, then wares):\n%s", n, out)
		}
		if !strings.Contains(out, "wal_name=public.wares") {
			t.Errorf("no warning of the second rename:\n%s", out)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restart configured with the new name", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "renrestart", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		dir := t.TempDir()
		never := func(c *Config) { c.Snapshot = SnapshotNever }
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, never, "items"), h)
		db.waitStreamable(dir)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		db.waitInactive()
		// While stopped: changes under the old name, the rename, and the
		// configuration follows it.
		db.exec(`INSERT INTO items VALUES (1, 'a')`)
		db.exec(`UPDATE items SET v = 'u' WHERE id = 1`)
		db.exec(`ALTER TABLE items RENAME TO goods`)
		db.exec(`INSERT INTO goods VALUES (2, 'b')`)

		logs := &logBuffer{}
		h = newFakeHandler(false)
		r = run(t, db.newSource(dir, logs, never, "goods"), h)
		got := r.waitChanges(t, h, "the changes before and after the rename", atLeast(3))
		if len(got) != 3 || got[0].Op != OpInsert || got[1].Op != OpUpdate || ids(got)[2] != 2 {
			t.Fatalf("changes: got %s, want insert 1, update 1, insert 2", summarize(got))
		}
		for _, c := range got {
			if c.TableIndex != 0 || c.Table.Name != "goods" {
				t.Errorf("change %s: want the configured goods at index 0", summarize([]Change{c}))
			}
		}
		if n := strings.Count(logs.String(), LogTableRenamed); n != 1 || !strings.Contains(logs.String(), "wal_name=public.items") {
			t.Errorf("rename warnings: got %d, want 1 naming public.items:\n%s", n, logs)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})
}
