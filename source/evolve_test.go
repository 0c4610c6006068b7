package source

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// followingHandler is a fakeHandler that follows shape changes and
// receives TRUNCATEs as changes of their own (Op OpTruncate).
type followingHandler struct {
	*fakeHandler
	smu      sync.Mutex              // guards the fields below
	decodeAs func(t *relation.Table) // edits the table FollowShape returns: the source must decode with it
	fail     error                   // returned by FollowShape when set
	shapes   []shapeCall
}

type shapeCall struct {
	idx        int
	prev, next relation.Table
	lsn        pglogrepl.LSN
}

func (h *followingHandler) FollowShape(_ context.Context, idx int, prev, next *relation.Table, lsn pglogrepl.LSN) (*relation.Table, error) {
	h.smu.Lock()
	defer h.smu.Unlock()
	h.shapes = append(h.shapes, shapeCall{idx: idx, prev: *prev, next: *next, lsn: lsn})
	if h.fail != nil {
		return nil, h.fail
	}
	t := *next
	t.Columns = slices.Clone(next.Columns)
	if h.decodeAs != nil {
		h.decodeAs(&t)
	}
	return &t, nil
}

func (h *followingHandler) Truncate(ctx context.Context, c *Change) error { return h.Handle(ctx, c) }

func (h *followingHandler) calls() []shapeCall {
	h.smu.Lock()
	defer h.smu.Unlock()
	return slices.Clone(h.shapes)
}

func colNames(t relation.Table) string { return columnNames(&t) }

func TestStreamFollowsShape(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("add column, numeric typmod, returned table", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "follow", `CREATE TABLE items (id int PRIMARY KEY, v text, n numeric(10,2))`)
		dir := t.TempDir()
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1, 'a', 1.5)`)
		r.waitChanges(t, h.fakeHandler, "the first insert", atLeast(1))
		if c := h.calls(); len(c) != 1 || colNames(c[0].prev) != "id, v, n" || colNames(c[0].next) != "id, v, n" {
			t.Fatalf("first RELATION: got %+v, want one call realigning on the loaded shape", c)
		}

		db.exec(`CREATE TYPE mood AS ENUM ('sad', 'happy')`)
		db.exec(`ALTER TABLE items ADD COLUMN m mood NOT NULL DEFAULT 'happy'`)
		db.exec(`INSERT INTO items VALUES (2, 'b', 2.5, 'sad')`)
		got := r.waitChanges(t, h.fakeHandler, "the insert after ADD COLUMN", atLeast(2))
		calls := h.calls()
		if len(calls) != 2 {
			t.Fatalf("FollowShape calls: got %d, want 2", len(calls))
		}
		add := calls[1]
		if colNames(add.prev) != "id, v, n" || colNames(add.next) != "id, v, n, m" || add.lsn != got[1].LSN {
			t.Errorf("ADD COLUMN: got %s → %s at %s, want id, v, n → id, v, n, m at %s", colNames(add.prev), colNames(add.next), add.lsn, got[1].LSN)
		}
		m := add.next.Columns[3]
		if m.Type.Kind != relation.Enum || m.Type.Name != "mood" || !m.Nullable {
			t.Errorf("new column m: got %+v, want a nullable enum named mood", m)
		}
		if n := add.next.Columns[2]; n.Type.Precision != 10 || n.Type.Scale != 2 || n.Nullable != true {
			t.Errorf("kept column n: got %+v, want numeric(10,2) as loaded", n)
		}
		if !slices.Equal(add.next.PrimaryKey, []string{"id"}) {
			t.Errorf("primary key: got %v, want [id]", add.next.PrimaryKey)
		}
		if row := got[1].New; len(row) != 4 || row[3] != "sad" {
			t.Errorf("row after ADD COLUMN: got %v, want 4 values ending in sad", row)
		}

		// A precision change keeps the OID; the handler must still hear of
		// it. The handler decodes v as an int column's text: the source
		// uses the returned table.
		h.smu.Lock()
		h.decodeAs = func(t *relation.Table) { t.Columns[0].Type.Kind = relation.Text }
		h.smu.Unlock()
		db.exec(`ALTER TABLE items ALTER COLUMN n TYPE numeric(12,4)`)
		db.exec(`INSERT INTO items VALUES (3, 'c', 3.25, 'happy')`)
		got = r.waitChanges(t, h.fakeHandler, "the insert after the precision change", atLeast(3))
		calls = h.calls()
		if len(calls) != 3 {
			t.Fatalf("FollowShape calls: got %d, want 3", len(calls))
		}
		if n := calls[2].next.Columns[2].Type; n.Precision != 12 || n.Scale != 4 || n.Name != "numeric(12,4)" {
			t.Errorf("changed column n: got %+v, want numeric(12,4)", n)
		}
		if id := got[2].New[0]; id != "3" {
			t.Errorf("id decoded with the returned table: got %#v, want the text \"3\"", id)
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})

	t.Run("catalog ahead of the stream", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "ahead", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		dir := t.TempDir()
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		db.waitInactive()
		// While stopped: a column comes and goes, another replaces it.
		db.exec(`ALTER TABLE items ADD COLUMN extra int`)
		db.exec(`INSERT INTO items VALUES (1, 'a', 5)`)
		db.exec(`ALTER TABLE items DROP COLUMN extra`)
		db.exec(`ALTER TABLE items ADD COLUMN extra text`)
		db.exec(`INSERT INTO items VALUES (2, 'b', 'x')`)

		h = &followingHandler{fakeHandler: newFakeHandler(false)}
		r = run(t, db.newSource(dir, nil, nil, "items"), h) // loads id, v, extra text
		got := r.waitChanges(t, h.fakeHandler, "both inserts", atLeast(2))
		if got[0].New[2] != int32(5) || got[1].New[2] != "x" {
			t.Errorf("extra: got %#v then %#v, want int32 5 (the WAL's shape, not the catalog's) then \"x\"", got[0].New[2], got[1].New[2])
		}
		calls := h.calls()
		if len(calls) != 2 {
			t.Fatalf("FollowShape calls: got %d, want 2", len(calls))
		}
		if c := calls[0]; c.next.Columns[2].Type.Kind != relation.Int32 || c.prev.Columns[2].Type.Kind != relation.Text {
			t.Errorf("replayed shape: got %+v → %+v, want extra text → int", c.prev.Columns[2], c.next.Columns[2])
		}
		if c := calls[1]; c.next.Columns[2].Type.Kind != relation.Text {
			t.Errorf("current shape: got extra %+v, want text", c.next.Columns[2])
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("refused shape stops unconfirmed", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "refused", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		dir := t.TempDir()
		h := &followingHandler{fakeHandler: newFakeHandler(false)}
		r := run(t, db.newSource(dir, nil, nil, "items"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1, 'a')`)
		r.waitChanges(t, h.fakeHandler, "the first insert", atLeast(1))
		h.smu.Lock()
		h.fail = errors.New("refused by the test")
		h.smu.Unlock()
		db.exec(`ALTER TABLE items DROP COLUMN v`)
		at := db.lsn(`SELECT pg_current_wal_lsn()`)
		db.exec(`INSERT INTO items VALUES (2)`)
		if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "refused by the test") {
			t.Fatalf("Run: got %v, want the handler's refusal", err)
		}
		if got := h.got(); len(got) != 1 {
			t.Errorf("changes: got %s, want only the first insert", summarize(got))
		}
		db.waitInactive()
		if c := db.slot().confirmed; c > at {
			t.Errorf("confirmed_flush_lsn: got %s, past the refused change at %s", c, at)
		}
	})

	t.Run("truncate is handed over", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "truncate", `
			CREATE TABLE items (id int PRIMARY KEY);
			CREATE TABLE more (id int PRIMARY KEY);
			CREATE TABLE other (id int PRIMARY KEY);
			CREATE PUBLICATION truncate FOR TABLE items, more, other;`)
		dir := t.TempDir()
		h := &followingHandler{fakeHandler: newFakeHandler(true)}
		r := run(t, db.newSource(dir, nil, nil, "items", "more"), h)
		db.waitStreamable(dir)
		db.exec(`INSERT INTO items VALUES (1); INSERT INTO more VALUES (1); INSERT INTO other VALUES (1)`)
		db.exec(`BEGIN; INSERT INTO items VALUES (2); TRUNCATE items, more, other; INSERT INTO items VALUES (1); COMMIT`)
		got := r.waitChanges(t, h.fakeHandler, "inserts and truncates", atLeast(6))
		want := []struct {
			op  Op
			idx int
		}{{OpInsert, 0}, {OpInsert, 1}, {OpInsert, 0}, {OpTruncate, 0}, {OpTruncate, 1}, {OpInsert, 0}}
		for i, w := range want {
			if got[i].Op != w.op || got[i].TableIndex != w.idx {
				t.Fatalf("changes: got %s, want insert, insert, insert, truncate items, truncate more, insert", summarize(got))
			}
		}
		if got[3].LSN != got[2].LSN || got[3].New != nil || got[3].Table.Name != "items" {
			t.Errorf("truncate change: got %+v, want items in the insert's transaction", got[3])
		}
		h.ack(t, 0, 1, 2, 4, 5)
		db.waitStatusReplies(r, 3)
		if c := db.slot().confirmed; c >= got[3].LSN {
			t.Errorf("confirmed_flush_lsn with the truncate unacknowledged: got %s, want before %s", c, got[3].LSN)
		}
		h.ack(t, 3)
		db.waitSlot("past the truncate", func(s slotInfo) bool { return s.confirmed > got[3].LSN })
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	})
}
