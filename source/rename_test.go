package source

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
)

// A configured table renamed while the source streams keeps sending its
// changes under its new name (the publication lists it by OID): they go to
// the configured table, never dropped, with one warning per name.
func TestStreamRenamedTable(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("renamed while streaming", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "renamed", `
			CREATE TABLE items (id int PRIMARY KEY, v text, body text, x int);
			ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL;
			CREATE TABLE other (id int PRIMARY KEY);
			-- 100 KB of md5 hex digits: stored out of line, uncompressed
			INSERT INTO items SELECT 1, 'a', string_agg(md5(i::text), ''), 5 FROM generate_series(1, 3200) i;`)
		var body string
		if err := db.conn.QueryRow(context.Background(), `SELECT body FROM items WHERE id = 1`).Scan(&body); err != nil || len(body) != 102400 {
			t.Fatalf("precondition: body of %d bytes (%v), want 102400", len(body), err)
		}
		dir := t.TempDir()
		logs := &logBuffer{}
		h := newFakeHandler(false)
		src := db.newSource(dir, logs, nil, "items", "other")
		// Armed for the last step: before the re-read, the row changes
		// again and a column goes.
		var armed atomic.Bool
		later := db.in(t).conn
		src.beforeReread = func(ctx context.Context, _ *rereadPipe) {
			if armed.CompareAndSwap(true, false) {
				if _, err := later.Exec(ctx, `SET lock_timeout = '10s'; UPDATE wares SET v = 'z' WHERE id = 1; ALTER TABLE wares DROP COLUMN x`); err != nil {
					t.Errorf("write before the re-read: %v", err)
				}
			}
		}
		r := run(t, src, h)
		db.waitStreamable(dir)
		r.waitChanges(t, h, "the snapshot row", atLeast(1))

		db.exec(`ALTER TABLE items RENAME TO goods`)
		db.exec(`INSERT INTO goods VALUES (2, 'b', 'short', 6)`)
		// Leaves body unsent (unchanged TOAST): re-read, by the table's
		// name now.
		db.exec(`UPDATE goods SET v = 'u' WHERE id = 1`)
		db.exec(`DELETE FROM goods WHERE id = 2`)
		db.exec(`INSERT INTO other VALUES (1)`) // a RELATION of another table between
		db.exec(`INSERT INTO goods VALUES (3, 'c', 'short', 7)`)
		got := r.waitChanges(t, h, "the changes after the rename", atLeast(6))
		// Renamed again after its name was looked up for a re-read: the
		// next re-read looks again.
		db.exec(`ALTER TABLE goods RENAME TO wares`)
		db.exec(`UPDATE wares SET v = 'w' WHERE id = 1`)
		r.waitChanges(t, h, "the update after the second rename", atLeast(7))
		// Changed again and a column dropped before the re-read: the row is
		// re-read whole, the columns left found by the table's OID (the
		// dropped one keeps the change's value).
		armed.Store(true)
		db.exec(`UPDATE wares SET v = 'y' WHERE id = 1`)
		got = r.waitChanges(t, h, "the updates around the dropped column", atLeast(9))[1:]
		want := []struct {
			op  Op
			idx int
			id  int32
		}{{OpInsert, 0, 2}, {OpUpdate, 0, 1}, {OpDelete, 0, 2}, {OpInsert, 1, 1}, {OpInsert, 0, 3}, {OpUpdate, 0, 1}, {OpUpdate, 0, 1}, {OpUpdate, 0, 1}}
		if len(got) != len(want) {
			t.Fatalf("changes after the rename: got %s, want insert 2, update 1, delete 2, insert other 1, insert 3, update 1 three times", summarize(got))
		}
		for i, w := range want {
			c := got[i]
			row := c.New
			if c.Op == OpDelete {
				row = c.Old
			}
			if c.Op != w.op || c.TableIndex != w.idx || len(row) == 0 || row[0] != w.id {
				t.Fatalf("changes after the rename: got %s, want insert 2, update 1, delete 2, insert other 1, insert 3, update 1 three times (items at index 0)", summarize(got))
			}
			if w.idx == 0 && c.Table.Name != "items" {
				t.Errorf("change %d: table %s, want the configured items", i, c.Table.QualifiedName())
			}
		}
		for i, w := range []struct {
			v string
			x any
		}{1: {"u", int32(5)}, 5: {"w", int32(5)}, 6: {"z", int32(5)}, 7: {"z", int32(5)}} {
			if w.v == "" {
				continue
			}
			if u := got[i]; u.New[1] != w.v || u.New[2] != body || u.New[3] != w.x {
				t.Errorf("update %d after the rename: got v %v body %s x %v, want %s, the 100 KB body re-read and %v", i, u.New[1], describe(u.New[2]), u.New[3], w.v, w.x)
			}
		}
		if n := strings.Count(logs.String(), LogTableRenamed); n != 2 {
			t.Errorf("rename warnings: got %d, want 2 (goods, then wares):\n%s", n, logs)
		}
		line := logs.String()
		for _, part := range []string{"table=public.items", "wal_name=public.goods", "wal_name=public.wares", "set `table: public.goods` in entities", "keep `name:`/`topic:`"} {
			if !strings.Contains(line, part) {
				t.Errorf("rename warning lacks %q:\n%s", part, line)
			}
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("renamed and altered while streaming", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "renalter", `CREATE TABLE items (id int PRIMARY KEY, v text, body text);
			ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL`)
		dir := t.TempDir()
		logs := &logBuffer{}
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		r := run(t, db.newSource(dir, logs, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items SELECT 1, 'a', string_agg(md5(i::text), '') FROM generate_series(1, 3200) i`)
		r.waitChanges(t, h.fakeHandler, "the first insert", atLeast(1))

		db.exec(`ALTER TABLE items RENAME TO goods`)
		db.exec(`INSERT INTO goods VALUES (2, 'b')`)
		db.exec(`ALTER TABLE goods ADD COLUMN extra int`) // a new RELATION under the same name
		db.exec(`INSERT INTO goods VALUES (3, 'c', NULL, 7)`)
		db.exec(`ALTER TABLE goods RENAME TO wares`)
		db.exec(`INSERT INTO wares VALUES (4, 'd', NULL, 8)`)
		// Leaves body unsent: re-read in the shape followed since the
		// ADD COLUMN, which must still know the table by its OID.
		db.exec(`UPDATE wares SET v = 'e' WHERE id = 1`)
		got := r.waitChanges(t, h.fakeHandler, "the changes after the renames", atLeast(5))
		if len(got) != 5 || ids(got)[3] != 4 {
			t.Fatalf("changes: got %s, want inserts 1 to 4 and an update of 1", summarize(got))
		}
		if u := got[4]; u.Op != OpUpdate || u.New[1] != "e" || u.New[2] != got[0].New[2] {
			t.Errorf("the update after ADD COLUMN and the renames: got %s with body %s, want v e and the 100 KB body re-read", summarize([]Change{u}), describe(u.New[2]))
		}
		for _, c := range got {
			if c.TableIndex != 0 || c.Table.Name != "items" {
				t.Errorf("change %s: want table items at index 0", summarize([]Change{c}))
			}
		}
		if row := got[2].New; len(row) != 4 || row[3] != int32(7) {
			t.Errorf("insert after ADD COLUMN: got %v, want 4 values ending in 7", row)
		}
		calls := h.calls()
		if len(calls) < 2 || colNames(calls[len(calls)-1].next) != "id, v, body, extra" {
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
