package source

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// TestReread: the re-read of unchanged TOAST values never returns the row
// as it was before the change's transaction (the walsender can send a
// transaction a moment before it is visible to other sessions; here the
// transaction is simply kept open, which is the same to a reader), and
// copes with columns dropped since the change.
func TestReread(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	db := newDB(t, pg, "reread", `CREATE TABLE "Big Rows" ("Id" int PRIMARY KEY, n int, body text);
		INSERT INTO "Big Rows" VALUES (1, 0, 'old'), (2, 0, 'two')`)
	ctx := context.Background()
	conn, err := Connect(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	st := &stream{sql: conn, src: &Source{}}
	tbl := db.table("Big Rows")

	writer := pgtest.Connect(t, db.dsn)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var xid int64
	if err := tx.QueryRow(ctx, `UPDATE "Big Rows" SET n = 1, body = 'new' WHERE "Id" = 1 RETURNING txid_current()`).Scan(&xid); err != nil {
		t.Fatal(err)
	}

	// Not visible yet: the re-read keeps asking rather than return n = 0,
	// and returns the transaction's row once it is visible. No deadline
	// decides this (a loaded machine makes any short one flaky): the
	// re-read is seen asking again, still without an answer, and then
	// answered after the commit.
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	type result struct {
		rows []rereadRow
		err  error
	}
	done := make(chan result, 1)
	// Row 2 is read in the same statement as of the transaction that
	// inserted it, long visible: the statement waits for both.
	var xid2 int64
	if err := db.conn.QueryRow(ctx, `SELECT xmin::text::bigint FROM "Big Rows" WHERE "Id" = 2`).Scan(&xid2); err != nil {
		t.Fatal(err)
	}
	go func() {
		rows, err := st.rereadRows(wctx, &tbl, []uint32{uint32(xid), uint32(xid2)}, [][]string{{"1"}, {"2"}}, nil, nil)
		done <- result{rows, err}
	}()
	for deadline := time.Now().Add(waitTimeout); st.src.rereads.Load() < 3; {
		select {
		case r := <-done:
			t.Fatalf("re-read while the transaction is not visible: got %+v, %v after %d statement(s); want it to ask again until it is visible", r.rows, r.err, st.src.rereads.Load())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-read while the transaction is not visible: %d statement(s) after %v, want it to ask again", st.src.rereads.Load(), waitTimeout)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("re-read while the transaction is not visible: got %+v, %v; want it still waiting", r.rows, r.err)
	default:
	}
	// And an attempt that finds the transaction not visible reads no row
	// of the table: a row of 1 GB costs nothing while it waits.
	sql, err := rereadSQL(&tbl, pgx.Identifier{tbl.Schema, tbl.Name}.Sanitize(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	rows, err := db.conn.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+sql, []int64{xid}, []string{"1"})
	if err == nil {
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range plan {
		if strings.Contains(line, `"Big Rows"`) && !strings.Contains(line, "never executed") {
			t.Errorf("re-read plan while the transaction is not visible: got %q, want the table never read\n%s", line, strings.Join(plan, "\n"))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if want := []any{int32(1), int32(1), "new"}; r.err != nil || !r.rows[0].exists || !r.rows[0].mine || !reflect.DeepEqual(r.rows[0].vals, want) {
		t.Errorf("re-read once visible: got %+v, %v; want %v written by the transaction", r.rows, r.err, want)
	}
	if want := []any{int32(2), int32(0), "two"}; r.err == nil && (!r.rows[1].exists || !r.rows[1].mine || !reflect.DeepEqual(r.rows[1].vals, want)) {
		t.Errorf("re-read of row 2 in the same statement: got %+v; want %v written by its own transaction", r.rows[1], want)
	}
	// The size of the table's rows is learnt, as returned: the ordinal,
	// the two flags and the three columns' text, 8 bytes each row.
	if got := st.rowBytes.of(&tbl); got != 8 {
		t.Errorf("size of a re-read row learnt: got %d, want 8", got)
	}
	// A transaction long visible, a row that is gone: nil, at once; and
	// nothing learnt of the size of the table's rows.
	db.exec(`DELETE FROM "Big Rows" WHERE "Id" = 2`)
	row, err := st.rereadRows(wctx, &tbl, []uint32{uint32(xid)}, [][]string{{"2"}}, nil, nil)
	if err != nil || row[0].exists {
		t.Errorf("re-read of a deleted row: got %+v, %v; want it gone", row, err)
	}
	if got := st.rowBytes.of(&tbl); got != 8 {
		t.Errorf("size of a re-read row after a statement found none: got %d, want 8 still", got)
	}

	// The catalog ahead of the stream: a column dropped since the change
	// keeps the change's value, unless that is the unsent TOAST value.
	db.exec(`ALTER TABLE "Big Rows" DROP COLUMN n`)
	tuple := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("1")},
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("7")},
		{DataType: pglogrepl.TupleDataTypeToast},
	}}
	c := Change{Op: OpUpdate, Table: &tbl, XID: uint32(xid), New: []any{int32(1), int32(7), relation.UnchangedTOAST{}}}
	if err := resolve(wctx, st, &c, tuple); err != nil || !reflect.DeepEqual(c.New, []any{int32(1), int32(7), "new"}) {
		t.Errorf("re-read with column n dropped since: got %v, %v; want [1 7 new]", c.New, err)
	}
	db.exec(`ALTER TABLE "Big Rows" DROP COLUMN body`)
	c = Change{Op: OpUpdate, Table: &tbl, XID: uint32(xid), New: []any{int32(1), int32(7), relation.UnchangedTOAST{}}}
	err = resolve(wctx, st, &c, tuple)
	if want := `table public.Big Rows key ("Id")=(1) column "body": the UPDATE left its TOASTed value unsent and the column has been dropped since`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("re-read with the TOAST column dropped since: got %v, want an error containing %q", err, want)
	}
}

// resolve fills in c's unchanged TOAST values as the stream does for the
// only change of a transaction; c.New is nil when the row is gone.
func resolve(ctx context.Context, st *stream, c *Change, tuple *pglogrepl.TupleData) error {
	if !fillFromOld(c) {
		return nil
	}
	st.held = st.held[:0]
	if err := st.hold(c, nil, tuple, true); err != nil {
		return err
	}
	if err := st.rereadHeld(ctx, st.held, lastToName(st.held, true)); err != nil {
		return err
	}
	*c = st.held[0].c
	return nil
}
