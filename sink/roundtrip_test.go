package sink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// readyCounter is a TCP proxy to a PostgreSQL server (sslmode=disable)
// that counts the ReadyForQuery messages the server sends: one per round
// trip of a query (a simple query, however many statements it holds, a
// COPY, or an extended query's Sync).
type readyCounter struct {
	ln     net.Listener
	target string
	ready  atomic.Int64
	conns  atomic.Int64 // connections accepted
	wg     sync.WaitGroup
}

// proxyURL starts a readyCounter in front of the server of raw and returns
// it and raw pointed at it; both stop with the test.
func proxyURL(t *testing.T, raw string) (*readyCounter, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &readyCounter{ln: ln, target: u.Host}
	rc.wg.Add(1)
	go rc.accept()
	t.Cleanup(func() {
		ln.Close()
		rc.wg.Wait()
	})
	u.Host = ln.Addr().String()
	return rc, u.String()
}

func (rc *readyCounter) accept() {
	defer rc.wg.Done()
	for {
		c, err := rc.ln.Accept()
		if err != nil {
			return
		}
		rc.conns.Add(1)
		s, err := net.Dial("tcp", rc.target)
		if err != nil {
			c.Close()
			continue
		}
		rc.wg.Add(2)
		go func() { // client → server, as is
			defer rc.wg.Done()
			io.Copy(s, c)
			s.Close()
		}()
		go func() { // server → client, message by message
			defer rc.wg.Done()
			defer c.Close()
			var head [5]byte
			for {
				if _, err := io.ReadFull(s, head[:]); err != nil {
					return
				}
				if head[0] == 'Z' {
					rc.ready.Add(1)
				}
				if _, err := c.Write(head[:]); err != nil {
					return
				}
				n := int64(binary.BigEndian.Uint32(head[1:])) - 4
				if _, err := io.CopyN(c, s, n); err != nil {
					return
				}
			}
		}()
	}
}

// sinkTablesStore opens the store of url with the sink's own tables.
func sinkTablesStore(t *testing.T, url string) *store {
	t.Helper()
	st := openTestStore(t, url)
	if err := st.ensureSinkTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestBatchRoundTrips: a PostgreSQL batch of the steady state (the
// partitions' offsets stored, updates going through the temporary table)
// is two round trips: BEGIN with the lock, the column types, the offsets'
// compare-and-set and the temporary table's CREATE … IF NOT EXISTS (emptied
// by every COMMIT); COPY with the
// INSERT … SELECT and the COMMIT. A batch of new keys only (straight into
// the table) is three: its COPY's outcome decides whether the temporary
// table follows, and its savepoint is released by the COMMIT. Before,
// each was six (BEGIN, COMMIT, the offsets and the RELEASE or the INSERT
// on their own).
func TestBatchRoundTrips(t *testing.T) {
	t.Parallel()
	rc, url := proxyURL(t, postgresStore(t).fresh(t))
	st := sinkTablesStore(t, url)
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Model: ReadModel{Name: "m", Table: "t"}}, st: st}
	parts := []tp{{"a", 0}, {"a", 1}, {"b", 0}}
	expected := map[tp]int64{}
	for _, p := range parts {
		expected[p] = -1
	}
	// batch applies rows [from, to) at version v, each partition's offset
	// one further, and returns its round trips.
	batch := func(from, to int, v string) int64 {
		t.Helper()
		next := map[tp]int64{}
		for _, p := range parts {
			next[p] = max(expected[p], 0) + 1
		}
		var rows [][]any
		for id := from; id < to; id++ {
			rows = append(rows, []any{int64(id), fmt.Sprintf("%s %d", v, id)})
		}
		before := rc.ready.Load()
		err := s.commit(ctx, expected, next, func(tx batchTx) error {
			return st.upsertRows(ctx, tx, "t", []string{"id", "v"}, 1, rows)
		})
		if err != nil {
			t.Fatalf("batch %s: %v", v, err)
		}
		for p, n := range next {
			expected[p] = n
		}
		return rc.ready.Load() - before
	}
	batch(0, 10, "first")  // the offsets' rows inserted, the types read
	batch(0, 20, "second") // a key there: the direct COPY fails, the temporary table created
	batch(10, 30, "third") // a warm-up of the temporary table's path
	if n := batch(20, 40, "steady"); n != 2 {
		t.Errorf("round trips of a batch of updates through the temporary table: got %d, want 2", n)
	}
	st.skipDirect = nil // the next batch tries the direct COPY again
	if n := batch(100, 120, "new"); n != 3 {
		t.Errorf("round trips of a batch of new keys straight into the table: got %d, want 3", n)
	}
	var got string
	if err := st.db.QueryRowContext(ctx, `SELECT string_agg(v, ',' ORDER BY id) FILTER (WHERE id IN (0, 15, 25, 35, 110)) || ' ' ||
		count(*) FROM t`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "second 0,third 15,steady 25,steady 35,new 110 60"; got != want {
		t.Errorf("rows: got %q, want %q", got, want)
	}
	offs, err := st.loadOffsets(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if offs[p].next != 5 {
			t.Errorf("offset of %v: got %d, want 5", p, offs[p].next)
		}
	}
}

// TestBatchFailedAtCommit: a batch whose INSERT, sent with the COMMIT,
// fails (a CHECK the read model's owner added) stores nothing and moves
// no offset; its transaction is rolled back, so the connection goes back
// to the pool idle and the next batch runs on it, not on a new session.
func TestBatchFailedAtCommit(t *testing.T) {
	t.Parallel()
	rc, url := proxyURL(t, postgresStore(t).fresh(t))
	st := sinkTablesStore(t, url)
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, v text CHECK (v <> 'bad'))`); err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Model: ReadModel{Name: "m", Table: "t"}}, st: st}
	p := tp{"a", 0}
	at := int64(-1)
	batch := func(v string) error {
		next := map[tp]int64{p: max(at, 0) + 1}
		err := s.commit(ctx, map[tp]int64{p: at}, next, func(tx batchTx) error {
			return st.upsertRows(ctx, tx, "t", []string{"id", "v"}, 1, [][]any{{int64(1), "ok"}, {int64(2), v}})
		})
		if err == nil {
			at = next[p]
		}
		return err
	}
	for _, v := range []string{"first", "second", "third"} { // the temporary table's path from the second on
		if err := batch(v); err != nil {
			t.Fatalf("batch %s: %v", v, err)
		}
	}
	conns := rc.conns.Load()
	if err := batch("bad"); err == nil || !strings.Contains(err.Error(), "check constraint") {
		t.Fatalf("a batch breaking the table's CHECK: got %v, want the constraint's error", err)
	}
	var v string
	var off int64
	if err := st.db.QueryRowContext(ctx, `SELECT (SELECT v FROM t WHERE id = 2), (SELECT next_offset FROM replicator_sink_offsets)`).Scan(&v, &off); err != nil {
		t.Fatal(err)
	}
	if v != "third" || off != at {
		t.Errorf("after the failed batch: v %q, offset %d; want \"third\" and %d", v, off, at)
	}
	if err := batch("fourth"); err != nil {
		t.Fatal(err)
	}
	if n := rc.conns.Load() - conns; n != 0 {
		t.Errorf("%d new connections after a batch failed at its COMMIT; want the pooled one reused", n)
	}
}

// TestBatchFoldedFence: a compare-and-set sent with the batch's first
// statements (foldCAS) that finds one partition moved fails the batch with
// errFenced: no row stored, no offset moved.
func TestBatchFoldedFence(t *testing.T) {
	t.Parallel()
	st := sinkTablesStore(t, postgresStore(t).fresh(t))
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.db.ExecContext(ctx, `INSERT INTO replicator_sink_offsets VALUES ('m', 'a', 0, 7, 0), ('m', 'it''s', 1, 9, 0)`); err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Model: ReadModel{Name: "m", Table: "t"}}, st: st}
	upsert := func(tx batchTx) error {
		return st.upsertRows(ctx, tx, "t", []string{"id", "v"}, 1, [][]any{{int64(1), "one"}})
	}
	// it's/1 is at 9, not 8: another process moved it.
	err := s.commit(ctx, map[tp]int64{{"a", 0}: 7, {"it's", 1}: 8}, map[tp]int64{{"a", 0}: 8, {"it's", 1}: 9}, upsert)
	if !errors.Is(err, errFenced) || !strings.Contains(err.Error(), "partition it's/1 is no longer at offset 8") {
		t.Fatalf("got %v, want errFenced naming partition it's/1", err)
	}
	var n, at int64
	if err := st.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM t), (SELECT next_offset FROM replicator_sink_offsets WHERE topic = 'a')`).Scan(&n, &at); err != nil {
		t.Fatal(err)
	}
	if n != 0 || at != 7 {
		t.Errorf("after the fence: %d rows, offset of a/0 %d; want 0 and 7", n, at)
	}
	// At the stored offsets the same batch goes through.
	if err := s.commit(ctx, map[tp]int64{{"a", 0}: 7, {"it's", 1}: 9}, map[tp]int64{{"a", 0}: 8, {"it's", 1}: 10}, upsert); err != nil {
		t.Fatal(err)
	}
	offs, err := st.loadOffsets(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if offs[tp{"a", 0}].next != 8 || offs[tp{"it's", 1}].next != 10 {
		t.Errorf("offsets after the batch: %v", offs)
	}
}

// BenchmarkBatchPostgres is the sink-latency benchmark's steady state on
// one read model, through Sink.commit: batches of 84 rows of the bench
// table's shape over six partitions, half new keys and half updates of
// the previous batch's new keys, each batch in its own transaction with
// its offsets. It reports the batches' wall time (client and server) and
// the client's CPU per batch (the sink's share).
//
//	go test -run '^$' -bench BatchPostgres -benchtime 3000x ./sink/
func BenchmarkBatchPostgres(b *testing.B) {
	st := benchStore(b, pgtest.Start(b), fmt.Sprintf("batch_%d", b.N))
	db := st.db
	ctx := b.Context()
	if err := st.ensureSinkTables(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, name text, email text, amount numeric(12,2),
		created_at timestamptz, attrs jsonb, quantity integer, active boolean, note text)`); err != nil {
		b.Fatal(err)
	}
	s := &Sink{cfg: Config{Model: ReadModel{Name: "m", Table: "t"}}, st: st}
	cols := []string{"id", "name", "email", "amount", "created_at", "attrs", "quantity", "active", "note"}
	const half = 42
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	expected := map[tp]int64{}
	for p := range int32(6) {
		expected[tp{"topic", p}] = -1
	}
	var cpu0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &cpu0)
	b.ResetTimer()
	for i := range b.N {
		rows := make([][]any, 0, 2*half)
		for j := range 2 * half {
			id := int64(i*half + j) // the second half: the next batch's updates
			rows = append(rows, []any{id, fmt.Sprintf("customer %d", id), fmt.Sprintf("customer.%d@example.com", id), "1234.50",
				at.Add(time.Duration(id) * time.Second), `{"plan": "pro", "seats": 7}`, int32(i), id%2 == 0, "note " + fmt.Sprint(id)})
		}
		next := map[tp]int64{}
		for p, e := range expected {
			next[p] = max(e, 0) + 14
		}
		if err := s.commit(ctx, expected, next, func(tx batchTx) error {
			return st.upsertRows(ctx, tx, "t", cols, 1, rows)
		}); err != nil {
			b.Fatal(err)
		}
		expected = next
	}
	b.StopTimer()
	var cpu1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &cpu1)
	us := func(r syscall.Rusage) float64 {
		return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e3
	}
	b.ReportMetric((us(cpu1)-us(cpu0))/float64(b.N), "client-cpu-µs/batch")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
}
