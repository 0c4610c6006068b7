package source

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// TestStream covers the pgoutput stream: acknowledgement gating of the
// confirmed LSN, replay after a restart, stops, keepalive replies, row
// shapes, unchanged TOAST values, type decoding, and the changes that stop
// the source (TRUNCATE, a column change). One cluster serves every
// subtest; each has its own database and slot.
func TestStream(t *testing.T) {
	t.Parallel()
	// wal_sender_timeout: a source that did not answer the server's
	// keepalives would be disconnected within the test.
	pg := startCluster(t, pgtest.Setting("wal_sender_timeout", "2s"))

	t.Run("confirmed LSN waits for acks", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ack_gating", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := newFakeHandler(true)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1), (2)`) // transaction A
		db.exec(`INSERT INTO items VALUES (3)`)      // transaction B
		got := r.waitChanges(t, h, "3 inserts", atLeast(3))
		a, b := got[0].LSN, got[2].LSN
		if got[1].LSN != a || b <= a || got[0].XID == got[2].XID {
			t.Fatalf("LSNs: got %s %s %s, want two changes of one transaction then a later one", got[0].LSN, got[1].LSN, got[2].LSN)
		}

		db.waitStatusReplies(r, 3)
		if c := db.slot().confirmed; c >= a {
			t.Errorf("confirmed_flush_lsn with nothing acknowledged: got %s, want before A's commit %s", c, a)
		}
		h.ack(t, 2) // all of B
		h.ack(t, 0) // half of A
		db.waitStatusReplies(r, 3)
		if c := db.slot().confirmed; c >= a {
			t.Errorf("confirmed_flush_lsn with A half acknowledged: got %s, want before A's commit %s", c, a)
		}
		h.ack(t, 1)
		// Past the start of B's commit record means at least its end: the
		// source confirms transaction ends only.
		db.waitSlot("past B's commit", func(s slotInfo) bool { return s.confirmed > b })
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
	})

	t.Run("restart replays unacknowledged changes", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "replay", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := newFakeHandler(true)
		r := run(t, db.newSource(dir, nil, func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond }, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1)`)
		db.exec(`INSERT INTO items VALUES (2)`)
		first := r.waitChanges(t, h, "2 inserts", atLeast(2))
		h.ack(t, 1) // the second transaction only
		err := r.stop(t)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unacknowledged changes will be replayed on restart") {
			t.Fatalf("Run after cancel with an unacknowledged change: got %v, want the flush timeout", err)
		}
		s := db.waitSlot("inactive", func(s slotInfo) bool { return !s.active })
		if s.confirmed >= first[0].LSN {
			t.Errorf("confirmed_flush_lsn after stop: got %s, want before the unacknowledged commit %s", s.confirmed, first[0].LSN)
		}

		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, nil, "items"), h2)
		again := r2.waitChanges(t, h2, "the replay", atLeast(2))
		db.waitSlot("past both commits", func(s slotInfo) bool { return s.confirmed > first[1].LSN })
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if len(again) != 2 {
			t.Fatalf("replayed: got %s, want both inserts", summarize(again))
		}
		for i := range again {
			if again[i].Op != OpInsert || again[i].LSN != first[i].LSN || !reflect.DeepEqual(again[i].New, first[i].New) {
				t.Errorf("replayed change %d: got %s %v @%s, want %s %v @%s", i, again[i].Op, again[i].New, again[i].LSN, first[i].Op, first[i].New, first[i].LSN)
			}
		}
	})

	t.Run("idle stream releases WAL of unpublished tables", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "idle", `CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE other (id int)`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1)`)
		r.waitChanges(t, h, "1 insert", atLeast(1))
		db.exec(`INSERT INTO other SELECT generate_series(1, 1000)`)
		target := db.lsn(`SELECT pg_current_wal_lsn()`)
		db.waitSlot("confirmed past the unpublished writes", func(s slotInfo) bool { return s.confirmed >= target })
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
	})

	t.Run("stop while Handle blocks", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "blocked", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		blocked := make(chan struct{})
		h.before = func(ctx context.Context, n int, _ *Change) error {
			if n == 1 { // the second change waits for room, as a full producer does
				close(blocked)
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1)`)
		db.exec(`INSERT INTO items VALUES (2)`)
		select {
		case <-blocked:
		case <-r.done:
			t.Fatalf("Run returned %v before the second change", r.err)
		case <-time.After(waitTimeout):
			t.Fatal("timed out waiting for the second change")
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("Run cancelled while Handle blocks: got %v, want nil", err)
		}
		first := h.got()[0]
		s := db.waitSlot("inactive", func(s slotInfo) bool { return !s.active })
		if s.confirmed <= first.LSN {
			t.Errorf("confirmed_flush_lsn after stop: got %s, want past the acknowledged commit %s (confirmed on stop)", s.confirmed, first.LSN)
		}
		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, nil, "items"), h2)
		got := r2.waitChanges(t, h2, "the interrupted change", atLeast(1))
		db.exec(`INSERT INTO items VALUES (3)`)
		got = r2.waitChanges(t, h2, "a new change", atLeast(2))
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		if ids := ids(got); !slices.Equal(ids, []int32{2, 3}) {
			t.Errorf("after restart: got ids %v, want [2 3] (the interrupted change replayed, the acknowledged one not)", ids)
		}
	})

	t.Run("keepalive asking for a reply is answered at once", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "keepalive", `CREATE TABLE items (id int PRIMARY KEY)`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		// No periodic status update during the test: the replies the server
		// sees answer its keepalives (sent after wal_sender_timeout/2 without
		// one); without them it would drop the connection after 2s.
		r := run(t, db.newSource(dir, nil, func(c *Config) { c.StatusInterval = time.Hour }, "items"), h)
		db.waitStreamable(dir)
		db.waitStatusReplies(r, 3)
		db.exec(`INSERT INTO items VALUES (1)`)
		r.waitChanges(t, h, "an insert", atLeast(1))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
	})

	t.Run("column change stops the source", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ddl", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1, 'a')`)
		r.waitChanges(t, h, "an insert", atLeast(1))
		db.exec(`ALTER TABLE items ADD COLUMN extra int`)
		db.exec(`INSERT INTO items VALUES (2, 'b', 2)`)
		err := r.wait(t)
		want := "table public.items changed while streaming (columns were [id, v], WAL now has [id, v, extra])"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run after ADD COLUMN: got %v, want an error containing %q", err, want)
		}
		if got := h.got(); len(got) != 1 {
			t.Errorf("changes: got %s, want only the first insert", summarize(got))
		}
	})

	t.Run("row shapes", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "shapes", `
			CREATE TABLE kv (id int PRIMARY KEY, v text, n int);
			CREATE TABLE kv_full (id int PRIMARY KEY, v text, n int);
			ALTER TABLE kv_full REPLICA IDENTITY FULL;
			CREATE TABLE kv_index (id int PRIMARY KEY, code text NOT NULL, v text);
			CREATE UNIQUE INDEX kv_index_code ON kv_index (code);
			ALTER TABLE kv_index REPLICA IDENTITY USING INDEX kv_index_code;
			CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, "Value" text);`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "kv", "kv_full", "kv_index", "Mixed Case"), h)
		db.waitStreamable(dir)
		type want struct {
			table    string
			op       Op
			old, new []any
		}
		steps := []struct {
			sql  string
			want []want
		}{
			{`INSERT INTO kv VALUES (1, 'a', 1), (2, 'b', 2), (3, NULL, NULL)`, []want{
				{"kv", OpInsert, nil, []any{int32(1), "a", int32(1)}},
				{"kv", OpInsert, nil, []any{int32(2), "b", int32(2)}},
				{"kv", OpInsert, nil, []any{int32(3), nil, nil}},
			}},
			{`UPDATE kv SET v = 'a2' WHERE id = 1`, []want{
				{"kv", OpUpdate, nil, []any{int32(1), "a2", int32(1)}},
			}},
			{`UPDATE kv SET id = 20 WHERE id = 2`, []want{
				{"kv", OpUpdate, []any{int32(2), nil, nil}, []any{int32(20), "b", int32(2)}},
			}},
			{`DELETE FROM kv WHERE id = 1`, []want{
				{"kv", OpDelete, []any{int32(1), nil, nil}, nil},
			}},
			{`INSERT INTO kv_full VALUES (1, 'x', 1)`, []want{
				{"kv_full", OpInsert, nil, []any{int32(1), "x", int32(1)}},
			}},
			{`UPDATE kv_full SET v = 'y' WHERE id = 1`, []want{
				{"kv_full", OpUpdate, []any{int32(1), "x", int32(1)}, []any{int32(1), "y", int32(1)}},
			}},
			{`UPDATE kv_full SET id = 2 WHERE id = 1`, []want{
				{"kv_full", OpUpdate, []any{int32(1), "y", int32(1)}, []any{int32(2), "y", int32(1)}},
			}},
			{`DELETE FROM kv_full WHERE id = 2`, []want{
				{"kv_full", OpDelete, []any{int32(2), "y", int32(1)}, nil},
			}},
			{`INSERT INTO kv_index VALUES (1, 'c1', 'v')`, []want{
				{"kv_index", OpInsert, nil, []any{int32(1), "c1", "v"}},
			}},
			{`UPDATE kv_index SET v = 'w'`, []want{
				{"kv_index", OpUpdate, nil, []any{int32(1), "c1", "w"}},
			}},
			{`UPDATE kv_index SET code = 'c2'`, []want{
				{"kv_index", OpUpdate, []any{nil, "c1", nil}, []any{int32(1), "c2", "w"}},
			}},
			{`DELETE FROM kv_index`, []want{
				{"kv_index", OpDelete, []any{nil, "c2", nil}, nil},
			}},
			{`INSERT INTO "Mixed Case" VALUES (1, 'q')`, []want{
				{"Mixed Case", OpInsert, nil, []any{int32(1), "q"}},
			}},
			{`DELETE FROM "Mixed Case"`, []want{
				{"Mixed Case", OpDelete, []any{int32(1), nil}, nil},
			}},
		}
		var wants []want
		var sqls []string
		for _, s := range steps {
			db.exec(s.sql)
			for range s.want {
				sqls = append(sqls, s.sql)
			}
			wants = append(wants, s.want...)
		}
		got := r.waitChanges(t, h, "every change", atLeast(len(wants)))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		if len(got) != len(wants) {
			t.Errorf("changes: got %d (%s), want %d", len(got), summarize(got), len(wants))
		}
		tableIndex := map[string]int{"kv": 0, "kv_full": 1, "kv_index": 2, "Mixed Case": 3}
		var last pglogrepl.LSN
		for i := range min(len(got), len(wants)) {
			g, w := got[i], wants[i]
			if g.Table.Name != w.table || g.TableIndex != tableIndex[w.table] || g.Op != w.op ||
				!reflect.DeepEqual(g.Old, w.old) || !reflect.DeepEqual(g.New, w.new) {
				t.Errorf("%s: got %s %s (index %d) old %#v new %#v, want %s %s (index %d) old %#v new %#v",
					sqls[i], g.Op, g.Table.Name, g.TableIndex, g.Old, g.New, w.op, w.table, tableIndex[w.table], w.old, w.new)
			}
			if g.LSN < last || g.XID == 0 || g.CommitTime.IsZero() {
				t.Errorf("%s: got LSN %s (previous %s), xid %d, commit time %v; want commit order and transaction metadata", sqls[i], g.LSN, last, g.XID, g.CommitTime)
			}
			last = g.LSN
		}
	})

	toastDDL := `
		CREATE TABLE big (id int PRIMARY KEY, n int, body text);
		ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
		CREATE TABLE big_full (id int PRIMARY KEY, n int, body text);
		ALTER TABLE big_full ALTER COLUMN body SET STORAGE EXTERNAL;
		ALTER TABLE big_full REPLICA IDENTITY FULL;
		-- 100 KB of md5 hex digits: stored out of line, uncompressed
		INSERT INTO big SELECT 1, 0, string_agg(md5(i::text), '') FROM generate_series(1, 3200) i;
		INSERT INTO big_full SELECT id, n, body FROM big;
		-- the re-read finds the row by a key of many kinds
		CREATE TABLE big_keys (u uuid, nu numeric(10,2), tz timestamptz, ts timestamp, d date, tm time,
			tx text, bt bytea, i8 bigint, n int, body text, PRIMARY KEY (u, nu, tz, ts, d, tm, tx, bt, i8));
		ALTER TABLE big_keys ALTER COLUMN body SET STORAGE EXTERNAL;
		INSERT INTO big_keys SELECT 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 12.5, '2024-01-01 10:00:00.5+03',
			'2024-02-29 01:02:03.25', '2024-02-29', '10:11:12.5', 'k', '\xdead', 9, 0, body FROM big;`

	t.Run("unchanged TOAST", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "toast", toastDDL)
		body := toastedBody(t, db)
		h := newFakeHandler(false)
		r := run(t, db.newSource(t.TempDir(), nil, nil, "big", "big_full", "big_keys"), h)
		snap := r.waitChanges(t, h, "the snapshot", atLeast(3))
		for _, c := range snap {
			if got := c.New[len(c.New)-1]; got != body {
				t.Errorf("snapshot row of %s: got body %s, want the 100 KB value", c.Table.Name, describe(got))
			}
		}
		// A second slot decodes the same updates, to prove the test covers
		// what it claims: pgoutput leaves the body out of the new tuple.
		db.exec(`SELECT pg_create_logical_replication_slot('toast_probe', 'pgoutput')`)
		db.exec(`UPDATE big SET n = 1 WHERE id = 1`)
		db.exec(`UPDATE big_full SET n = 1 WHERE id = 1`)
		db.exec(`UPDATE big_keys SET n = 1`)
		got := r.waitChanges(t, h, "3 updates", atLeast(6))[3:]
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		if n := unchangedTOASTUpdates(t, db, "toast_probe"); n != 3 {
			t.Fatalf("precondition: pgoutput sent %d updates with an unchanged TOAST body, want 3", n)
		}
		db.exec(`SELECT pg_drop_replication_slot('toast_probe')`)
		for _, c := range got[:2] {
			if c.Op != OpUpdate || c.New[0] != int32(1) || c.New[1] != int32(1) || c.New[2] != body {
				t.Errorf("update of %s: got %s [%v %v %s], want update [1 1 <the 100 KB body>]", c.Table.Name, c.Op, c.New[0], c.New[1], describe(c.New[2]))
			}
		}
		if c := got[2]; c.Op != OpUpdate || c.New[9] != int32(1) || c.New[10] != body || c.New[5] != 10*time.Hour+11*time.Minute+12500*time.Millisecond {
			t.Errorf("update of big_keys: got %s n=%v tm=%v body %s, want an update with n=1, tm=10:11:12.5 and the full body", c.Op, c.New[9], c.New[5], describe(c.New[10]))
		}
		if got[0].Old != nil {
			t.Errorf("update of big (default identity): got Old %v, want nil", got[0].Old)
		}
		if len(got[1].Old) != 3 || got[1].Old[2] != body || got[1].Old[1] != int32(0) {
			t.Errorf("update of big_full (identity full): got Old with n=%v body %s, want n=0 and the full body", got[1].Old[1], describe(got[1].Old[2]))
		}
	})

	t.Run("unchanged TOAST of a row deleted before it is read", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "toast_gone", toastDDL)
		body := toastedBody(t, db)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "big", "big_full"), h)
		r.waitChanges(t, h, "the snapshot", atLeast(2))
		db.waitStreamable(dir) // else the next Run redoes the snapshot
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		db.waitInactive()
		// While the source is stopped, the row changes and goes away.
		for _, sql := range []string{
			`INSERT INTO big SELECT 3, 0, body FROM big WHERE id = 1`,
			`INSERT INTO big SELECT 5, 0, body FROM big WHERE id = 1`,
			`UPDATE big SET n = 1 WHERE id = 1`,
			`DELETE FROM big WHERE id = 1`,
			`UPDATE big_full SET n = 1 WHERE id = 1`,
			`DELETE FROM big_full WHERE id = 1`,
			// A key change whose new key is gone too: the old key must
			// still be removed, as nothing later names it.
			`UPDATE big SET id = 4, n = 1 WHERE id = 3`,
			`DELETE FROM big WHERE id = 4`,
			// Both updates are read after the second: each record is the
			// row as re-read (n = 6), never n = 5 beside a re-read body.
			`UPDATE big SET n = 5 WHERE id = 5`,
			`UPDATE big SET n = 6 WHERE id = 5`,
			`INSERT INTO big VALUES (2, 0, 'last')`,
		} {
			db.exec(sql)
		}
		h2 := newFakeHandler(false)
		r2 := run(t, db.newSource(dir, nil, nil, "big", "big_full"), h2)
		got := r2.waitChanges(t, h2, "the last insert", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(2) })
		})
		if err := r2.stop(t); err != nil {
			t.Fatalf("second Run after cancel: got %v, want nil", err)
		}
		type shape struct {
			table string
			op    Op
		}
		var shapes []shape
		var deletedBig []any
		for _, c := range got {
			shapes = append(shapes, shape{c.Table.Name, c.Op})
			for _, row := range [][]any{c.New, c.Old} {
				if slices.Contains(row, any(relation.UnchangedTOAST{})) {
					t.Errorf("%s %s: got an unchanged TOAST placeholder in %v", c.Op, c.Table.Name, row)
				}
			}
			switch {
			case c.Table.Name == "big" && c.Op == OpDelete:
				if id := c.Old[0]; len(deletedBig) < 3 && !reflect.DeepEqual(c.Old, []any{id, nil, nil}) {
					t.Errorf("delete of big: got Old %v, want [id <nil> <nil>]", c.Old)
				}
				deletedBig = append(deletedBig, c.Old[0])
			case c.Table.Name == "big" && c.Op == OpUpdate:
				if !reflect.DeepEqual(c.New[:2], []any{int32(5), int32(6)}) || c.New[2] != body {
					t.Errorf("update of big: got [%v %v %s], want [5 6 <the full body>]: the row as re-read", c.New[0], c.New[1], describe(c.New[2]))
				}
			case c.Table.Name == "big_full" && c.Op == OpUpdate:
				// Under REPLICA IDENTITY FULL the old tuple holds the value as
				// it was at the update: exact, not re-read.
				if c.New[1] != int32(1) || c.New[2] != body {
					t.Errorf("update of big_full: got n=%v body %s, want n=1 and the full body", c.New[1], describe(c.New[2]))
				}
			case c.Table.Name == "big_full" && c.Op == OpDelete:
				if c.Old[2] != body {
					t.Errorf("delete of big_full: got Old body %s, want the full body", describe(c.Old[2]))
				}
			}
		}
		want := []shape{{"big", OpInsert}, {"big", OpInsert}, {"big", OpDelete}, {"big_full", OpUpdate}, {"big_full", OpDelete},
			{"big", OpDelete}, {"big", OpDelete}, {"big", OpUpdate}, {"big", OpUpdate}, {"big", OpInsert}}
		if !slices.Equal(shapes, want) {
			t.Errorf("changes: got %v, want %v (no update of big 1: its row was gone when the update was read; the gone key change 3 → 4 a delete of 3)", shapes, want)
		}
		if want := []any{int32(1), int32(3), int32(4)}; !reflect.DeepEqual(deletedBig, want) {
			t.Errorf("deleted keys of big: got %v, want %v", deletedBig, want)
		}
	})

	// The re-reads of a transaction are batched: one statement per table
	// for the rows its changes left as they were (only the unsent
	// columns), one more for rows changed again since (read whole, as they
	// are now); transactions waiting in the re-read pipeline share them.
	// Here every transaction is read only after all are committed: the
	// handler blocks on a marker before them, and the first re-read waits
	// until the rest are in the pipeline.
	t.Run("unchanged TOAST re-read in batches", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "toast_batch", toastDDL)
		body := toastedBody(t, db)
		db.exec(`INSERT INTO big SELECT i, 0, body FROM big, generate_series(10, 14) i WHERE id = 1;
			INSERT INTO big SELECT i, 0, body FROM big, generate_series(20, 24) i WHERE id = 1`)
		dir := t.TempDir()
		gate := make(chan struct{})
		h := newFakeHandler(false)
		h.before = func(ctx context.Context, _ int, c *Change) error {
			if c.Op == OpInsert && c.New[0] == int32(99) {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		src := db.newSource(dir, nil, nil, "big")
		src.beforeReread = firstRereadWaits(t, 15, make(chan struct{}), false)
		r := run(t, src, h)
		db.waitStreamable(dir)
		before := src.rereads.Load()
		for _, sql := range []string{
			`INSERT INTO big VALUES (99, 0, 'marker')`,
			// Five rows in one transaction: one statement.
			`UPDATE big SET n = 1 WHERE id BETWEEN 10 AND 14`,
			// Then, before it is read: 20 is updated again, 21 deleted,
			// and 23's key change to 230 deleted too (its old key must be
			// removed); 22 is as the transaction left it.
			`BEGIN; UPDATE big SET n = 2 WHERE id IN (20, 21, 22); UPDATE big SET id = 230, n = 2 WHERE id = 23; COMMIT`,
			`UPDATE big SET n = 3, body = 'changed' WHERE id = 20`,
			`DELETE FROM big WHERE id = 21`,
			`DELETE FROM big WHERE id = 230`,
			// A row updated again later in the same transaction: read
			// whole, as the transaction left it (n = 8), never n = 7
			// beside the body of n = 8.
			`BEGIN; UPDATE big SET n = 7 WHERE id = 24; UPDATE big SET n = 8, body = 'later' WHERE id = 24; COMMIT`,
			`INSERT INTO big VALUES (98, 0, 'end')`,
		} {
			db.exec(sql)
		}
		close(gate)
		got := r.waitChanges(t, h, "the last insert", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(98) })
		})
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		marker := slices.IndexFunc(got, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(99) })
		var lines []string
		for _, c := range got[marker+1:] {
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
		want := []string{
			"u 10 1 body", "u 11 1 body", "u 12 1 body", "u 13 1 body", "u 14 1 body",
			`u 20 3 "changed"`, "u 22 2 body", "d 23 <nil> <nil>",
			`u 20 3 "changed"`, "d 21 <nil> <nil>", "d 230 <nil> <nil>",
			`u 24 8 "later"`, `u 24 8 "later"`,
			`c 98 0 "end"`,
		}
		if !slices.Equal(lines, want) {
			t.Errorf("changes after the marker:\n got %s\nwant %s", strings.Join(lines, " | "), strings.Join(want, " | "))
		}
		// Three statements for all the transactions: the unsent columns
		// of 10 to 13 (4 keys: no row of the table seen yet), then of 14,
		// 20, 21, 22 and 230, each as of its own transaction; then whole
		// 20 (changed since) and 24 (changed again in its own
		// transaction).
		if n := src.rereads.Load() - before; n != 3 {
			t.Errorf("re-read statements: got %d, want 3", n)
		}
	})

	// A TRUNCATE in the transaction of a change waiting for its re-read:
	// the change is re-read (whole: the rest of the transaction is not
	// known yet) and handed over before the TRUNCATE. pgoutput describes
	// the truncated table again (RELATION) just before it, which releases
	// held changes as the TRUNCATE does.
	t.Run("unchanged TOAST re-read before a TRUNCATE of its transaction", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "toast_truncate", toastDDL)
		body := toastedBody(t, db)
		dir := t.TempDir()
		h := truncatingHandler{newFakeHandler(false)}
		src := db.newSource(dir, nil, nil, "big", "big_full")
		r := run(t, src, h)
		db.waitStreamable(dir)
		db.exec(`UPDATE big_full SET n = 5 WHERE id = 1`)
		r.waitChanges(t, h.fakeHandler, "the update of big_full", func(cs []Change) bool { return slices.ContainsFunc(cs, byOp(OpUpdate)) })
		db.exec(`BEGIN; UPDATE big SET n = 1 WHERE id = 1; TRUNCATE big_full; COMMIT`)
		got := r.waitChanges(t, h.fakeHandler, "the TRUNCATE", func(cs []Change) bool { return slices.ContainsFunc(cs, byOp(OpTruncate)) })
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		got = filter(got, func(c Change) bool { return c.Op != OpSnapshot })
		if len(got) != 3 || got[1].Op != OpUpdate || got[1].Table.Name != "big" || got[2].Op != OpTruncate || got[2].Table.Name != "big_full" {
			t.Fatalf("changes: got %s, want the update of big_full, then the update of big, then the TRUNCATE of big_full", summarize(got))
		}
		if c := got[1]; c.New[1] != int32(1) || c.New[2] != body {
			t.Errorf("update of big: got [%v %v %s], want [1 1 <the 100 KB body>]", c.New[0], c.New[1], describe(c.New[2]))
		}
	})

	// A transaction with more re-reads than one statement takes
	// (nextChunk: 64 before a row of the table was seen, then about 8 MB
	// of rows of 32 KB) is
	// re-read in chunks, one ahead of the hand-over, and handed over in
	// WAL order all the same.
	t.Run("unchanged TOAST re-read of a large transaction in chunks", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "toast_chunks", `
			CREATE TABLE mid (id int PRIMARY KEY, n int, body text);
			ALTER TABLE mid ALTER COLUMN body SET STORAGE EXTERNAL;
			INSERT INTO mid SELECT i, 0, repeat(md5(i::text), 1000) FROM generate_series(1, 600) i;`)
		dir := t.TempDir()
		gate := make(chan struct{})
		h := newFakeHandler(false)
		h.before = func(ctx context.Context, _ int, c *Change) error {
			if c.Op == OpInsert && c.New[0] == int32(999) {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		src := db.newSource(dir, nil, nil, "mid")
		r := run(t, src, h)
		db.waitStreamable(dir)
		before := src.rereads.Load()
		for _, sql := range []string{
			`INSERT INTO mid VALUES (999, 0, 'marker')`,
			`UPDATE mid SET n = 1 WHERE id <= 600`,
			`UPDATE mid SET n = 2, body = 'changed' WHERE id = 300`,
			`DELETE FROM mid WHERE id = 400`,
			`INSERT INTO mid VALUES (998, 0, 'end')`,
		} {
			db.exec(sql)
		}
		close(gate)
		got := r.waitChanges(t, h, "the last insert", func(cs []Change) bool {
			return slices.ContainsFunc(cs, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(998) })
		})
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		marker := slices.IndexFunc(got, func(c Change) bool { return c.Op == OpInsert && c.New[0] == int32(999) })
		got = got[marker+1:]
		if len(got) != 599+3 {
			t.Fatalf("changes after the marker: got %d (%s), want 599 updates, then an update, a delete and an insert", len(got), summarize(got))
		}
		seen := map[int32]bool{}
		for _, c := range got[:599] {
			id := c.New[0].(int32)
			want := []any{id, int32(1), strings.Repeat(fmt.Sprintf("%x", md5.Sum([]byte(fmt.Sprint(id)))), 1000)}
			if id == 300 {
				want = []any{id, int32(2), "changed"} // updated again since: read whole
			}
			if c.Op != OpUpdate || seen[id] || id == 400 || !reflect.DeepEqual(c.New, want) {
				t.Fatalf("update of %d: got %s [%v %v %s], want one update %v %v %s", id, c.Op, c.New[0], c.New[1], describe(c.New[2]), want[0], want[1], describe(want[2]))
			}
			seen[id] = true
		}
		if c := got[599]; c.Op != OpUpdate || c.New[0] != int32(300) || c.New[2] != "changed" {
			t.Errorf("after the large transaction: got %s %v, want the update of 300", c.Op, c.New)
		}
		if c := got[600]; c.Op != OpDelete || c.Old[0] != int32(400) {
			t.Errorf("then: got %s %v, want the delete of 400", c.Op, c.Old)
		}
		// Four chunks of the unsent columns: 4 before a row of the table
		// was seen, then 262 of 32 KB rows, and 262 again, whose re-read
		// of 300 whole finds a small row that halves the estimate: the
		// last 71 in one. And 300 whole.
		if n := src.rereads.Load() - before; n != 5 {
			t.Errorf("re-read statements: got %d, want 5", n)
		}
	})

	t.Run("types", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "types", `
			CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
			CREATE DOMAIN posint AS int CHECK (VALUE > 0);
			CREATE TABLE kinds (id int PRIMARY KEY, `+strings.Join(typeColumns(), ", ")+`);`)
		db.exec(typesInsert(1))
		db.exec(`INSERT INTO kinds (id) VALUES (3)`)
		h := newFakeHandler(false)
		src := db.newSource(t.TempDir(), nil, nil, "kinds")
		r := run(t, src, h)
		r.waitChanges(t, h, "the snapshot", atLeast(2))
		db.exec(typesInsert(2))
		db.exec(`INSERT INTO kinds (id) VALUES (4)`)
		got := r.waitChanges(t, h, "the inserts", atLeast(4))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		rows := map[int32]Change{}
		for _, c := range got {
			rows[c.New[0].(int32)] = c
		}
		cols := src.tables[0].Columns
		for _, tt := range []struct {
			id   int32
			op   Op
			want []any
		}{
			{1, OpSnapshot, typeValues()},
			{2, OpInsert, typeValues()},
			{3, OpSnapshot, make([]any, len(typeCases))},
			{4, OpInsert, make([]any, len(typeCases))},
		} {
			c, ok := rows[tt.id]
			if !ok || c.Op != tt.op {
				t.Errorf("row %d: got %v (present %v), want %s", tt.id, c.Op, ok, tt.op)
				continue
			}
			for i, w := range tt.want {
				if g := c.New[i+1]; !sameValue(g, w) {
					t.Errorf("row %d (%s) column %s: got %#v (%T), want %#v (%T)", tt.id, tt.op, cols[i+1].Name, g, g, w, w)
				}
			}
		}
	})

	t.Run("truncate stops the source", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "trunc", `
			CREATE TABLE items (id int PRIMARY KEY);
			CREATE TABLE other (id int PRIMARY KEY);
			CREATE PUBLICATION trunc FOR TABLE items, other;`)
		dir := t.TempDir()
		h := newFakeHandler(false)
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		// A table of the publication that is not configured is none of
		// the source's business.
		db.exec(`INSERT INTO other VALUES (1)`)
		db.exec(`TRUNCATE other`)
		db.exec(`INSERT INTO items VALUES (1)`)
		r.waitChanges(t, h, "the insert after truncating another table", atLeast(1))
		db.exec(`TRUNCATE items`)
		err := r.wait(t)
		if err == nil || !strings.Contains(err.Error(), "TRUNCATE of public.items") {
			t.Fatalf("Run after TRUNCATE: got %v, want an error naming public.items", err)
		}
		if got := h.got(); len(got) != 1 {
			t.Errorf("changes: got %s, want only the insert", summarize(got))
		}
		// The TRUNCATE was not confirmed: a restart stops at it again.
		db.waitInactive()
		err = run(t, db.newSource(dir, nil, nil, "items"), newFakeHandler(false)).wait(t)
		if err == nil || !strings.Contains(err.Error(), "TRUNCATE of public.items") {
			t.Fatalf("Run after a restart: got %v, want the TRUNCATE error again", err)
		}
	})
}

// toastedBody returns the body of big id 1 and checks that it is stored
// out of line.
func toastedBody(t *testing.T, db *testDB) string {
	t.Helper()
	var body string
	var chunks int
	ctx := context.Background()
	if err := db.conn.QueryRow(ctx, `SELECT body FROM big WHERE id = 1`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	var toast string
	if err := db.conn.QueryRow(ctx, `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'big'::regclass`).Scan(&toast); err != nil {
		t.Fatal(err)
	}
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM `+toast).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if len(body) != 102400 || chunks == 0 {
		t.Fatalf("precondition: got a body of %d bytes in %d TOAST chunks, want 102400 bytes out of line", len(body), chunks)
	}
	return body
}

// unchangedTOASTUpdates decodes the slot's pending pgoutput messages and
// counts the updates whose new tuple holds an unchanged TOAST column.
func unchangedTOASTUpdates(t *testing.T, db *testDB, slot string) int {
	t.Helper()
	rows, err := db.conn.Query(context.Background(),
		`SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)`,
		slot, db.name)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, data := range msgs {
		m, err := pglogrepl.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if u, ok := m.(*pglogrepl.UpdateMessage); ok && slices.ContainsFunc(u.NewTuple.Columns, func(c *pglogrepl.TupleDataColumn) bool {
			return c.DataType == pglogrepl.TupleDataTypeToast
		}) {
			n++
		}
	}
	return n
}

// describe prints a value briefly: long strings by length and ends.
func describe(v any) string {
	if s, ok := v.(string); ok && len(s) > 40 {
		return fmt.Sprintf("%d bytes %q…%q", len(s), s[:10], s[len(s)-10:])
	}
	return fmt.Sprintf("%#v", v)
}

// typeCases is one column per supported kind: its SQL type, a literal,
// and the Go value relation.Kind documents for it.
var typeCases = []struct {
	name, sqlType, literal string
	want                   any
}{
	{"i2", "smallint", "-32768", int32(-32768)},
	{"i4", "integer", "2147483647", int32(2147483647)},
	{"i8", "bigint", "-9223372036854775808", int64(-9223372036854775808)},
	{"f4", "real", "3.14159", float32(3.14159)},
	{"f8", "double precision", "2.718281828459045", 2.718281828459045},
	{"n", "numeric(12,2)", "1234567890.5", "1234567890.50"},
	{"nany", "numeric", "-0.000000000000000000001234567890123456789", "-0.000000000000000000001234567890123456789"},
	{"t", "text", `E'h\u00e9llo "w\u00f6rld"\n\ttab\\'`, "héllo \"wörld\"\n\ttab\\"},
	{"vc", "varchar(10)", "'abc'", "abc"},
	{"ch", "char(3)", "'ab'", "ab "},
	{"b", "boolean", "true", true},
	{"bt", "bytea", `'\xdeadbeef00'`, []byte{0xde, 0xad, 0xbe, 0xef, 0x00}},
	{"u", "uuid", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	{"d", "date", "'2024-02-29'", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
	{"tm", "time", "'13:14:15.123456'", 13*time.Hour + 14*time.Minute + 15*time.Second + 123456*time.Microsecond},
	{"ts", "timestamp", "'2024-02-29 13:14:15.123456'", time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)},
	{"tstz", "timestamptz", "'2024-02-29 13:14:15.123456+02'", time.Date(2024, 2, 29, 11, 14, 15, 123456000, time.UTC)},
	{"j", "json", `'{"a": [1, 2],  "b":null}'`, `{"a": [1, 2],  "b":null}`},
	{"jb", "jsonb", `'{"b":1,"a":[1,2]}'`, `{"a": [1, 2], "b": 1}`},
	{"ta", "text[]", `ARRAY['a', NULL, 'b c', 'd"e', 'NULL', '', 'x,y']`, []any{"a", nil, "b c", `d"e`, "NULL", "", "x,y"}},
	{"ia", "int[]", `'{1,NULL,-3}'`, []any{int32(1), nil, int32(-3)}},
	{"m", "mood", "'happy'", "happy"},
	{"p", "posint", "7", int32(7)},
}

func typeColumns() []string {
	var cols []string
	for _, c := range typeCases {
		cols = append(cols, c.name+" "+c.sqlType)
	}
	return cols
}

func typesInsert(id int) string {
	names, lits := []string{"id"}, []string{fmt.Sprint(id)}
	for _, c := range typeCases {
		names = append(names, c.name)
		lits = append(lits, c.literal)
	}
	return "INSERT INTO kinds (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(lits, ", ") + ")"
}

func typeValues() []any {
	var vs []any
	for _, c := range typeCases {
		vs = append(vs, c.want)
	}
	return vs
}

// sameValue compares decoded values: same Go type and value, times by
// instant and UTC location.
func sameValue(got, want any) bool {
	switch w := want.(type) {
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g.Equal(w) && g.Location() == time.UTC
	case []byte:
		g, ok := got.([]byte)
		return ok && bytes.Equal(g, w)
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !sameValue(g[i], w[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(got, want)
}

func TestDecodeTuple(t *testing.T) {
	t.Parallel()
	tbl := &relation.Table{Schema: "public", Name: "t", Columns: []relation.Column{
		{Name: "id", Type: relation.Type{Kind: relation.Int32}},
		{Name: "a", Type: relation.Type{Kind: relation.Text}},
		{Name: "b", Type: relation.Type{Kind: relation.Text}},
	}}
	col := func(typ byte, data string) *pglogrepl.TupleDataColumn {
		return &pglogrepl.TupleDataColumn{DataType: typ, Data: []byte(data)}
	}
	tests := []struct {
		name    string
		cols    []*pglogrepl.TupleDataColumn
		want    []any
		wantErr string
	}{
		{
			name: "text, null, unchanged TOAST",
			cols: []*pglogrepl.TupleDataColumn{col('t', "7"), col('n', ""), col('u', "")},
			want: []any{int32(7), nil, relation.UnchangedTOAST{}},
		},
		{
			name:    "too few columns",
			cols:    []*pglogrepl.TupleDataColumn{col('t', "7")},
			wantErr: "table public.t: tuple has 1 columns, want 3",
		},
		{
			name:    "undecodable text names the column",
			cols:    []*pglogrepl.TupleDataColumn{col('t', "seven"), col('n', ""), col('n', "")},
			wantErr: `table public.t key (the table has no primary key) column "id" (int32): parse int32 "seven"`,
		},
		{
			name:    "binary is not requested, so not accepted",
			cols:    []*pglogrepl.TupleDataColumn{col('t', "7"), col('b', "x"), col('n', "")},
			wantErr: "table public.t column a: unexpected tuple data type",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeTuple(tbl, &pglogrepl.TupleData{Columns: tt.cols})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeTuple: got %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeTuple: got %#v, %v; want %#v", got, err, tt.want)
			}
		})
	}
}

// TestResolveUnchangedWithoutQuery covers the paths of the TOAST
// resolution (fillFromOld, hold) that never reach the database (the
// re-read is covered by TestStream and TestReread).
func TestResolveUnchangedWithoutQuery(t *testing.T) {
	t.Parallel()
	cols := []relation.Column{
		{Name: "id", Type: relation.Type{Kind: relation.Int32}},
		{Name: "body", Type: relation.Type{Kind: relation.Text}},
	}
	full := &relation.Table{Schema: "public", Name: "full", Columns: cols, PrimaryKey: []string{"id"}, IdentityFull: true}
	noKey := &relation.Table{Schema: "public", Name: "nokey", Columns: cols}
	// The key list outlived a rename of its column (shapeFromRelation
	// keeps it across a schema change).
	staleKey := &relation.Table{Schema: "public", Name: "stale", Columns: cols, PrimaryKey: []string{"item_id"}}
	tuple := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("1")},
		{DataType: pglogrepl.TupleDataTypeToast},
	}}
	tests := []struct {
		name    string
		c       Change
		want    []any
		wantErr string
	}{
		{
			name:    "a stale key list is an error, not a panic",
			c:       Change{Op: OpUpdate, Table: staleKey, Old: []any{int32(1), nil}, New: []any{int32(1), relation.UnchangedTOAST{}}},
			wantErr: "table public.stale: primary key column item_id is no longer in the stream's shape of the table (columns [id, body]): it was renamed or dropped while streaming",
		},
		{
			name: "nothing unchanged",
			c:    Change{Table: noKey, New: []any{int32(1), "x"}},
			want: []any{int32(1), "x"},
		},
		{
			name: "identity full takes the old value",
			c:    Change{Table: full, Old: []any{int32(1), "old body"}, New: []any{int32(1), relation.UnchangedTOAST{}}},
			want: []any{int32(1), "old body"},
		},
		{
			name:    "no key and no full identity cannot be resolved",
			c:       Change{Table: noKey, New: []any{int32(1), relation.UnchangedTOAST{}}},
			wantErr: "table public.nokey: an UPDATE left TOASTed columns unsent and the table has no primary key to re-read them by: set REPLICA IDENTITY FULL on it",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := &stream{} // no sql connection: a query would panic
			c := tt.c
			err := resolve(context.Background(), st, &c, tuple)
			if goneKeyChange(&c) && c.Table == staleKey {
				t.Errorf("goneKeyChange with a stale key list: got true, want false")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("resolve: got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(c.New, tt.want) {
				t.Errorf("resolve: got %#v, %v; want %#v", c.New, err, tt.want)
			}
		})
	}
}
