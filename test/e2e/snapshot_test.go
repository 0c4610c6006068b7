//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"golang.org/x/sync/errgroup"
)

// Log messages of the snapshot (source.LogSnapshotRestart and friends).
const (
	logSnapshotStarted  = `msg="initial snapshot started"`
	logSnapshotComplete = `msg="initial snapshot complete"`
	logSnapshotRestart  = `msg="initial snapshot incomplete: starting it again from a new consistent point"`
	logSnapshotProgress = `msg="snapshot progress"`
)

// counterRows is the size of the snapshot tests' main table: large enough
// that reading it takes a while on a loaded two-core machine.
const counterRows = 200_000

const counterDDL = `
CREATE TABLE counters (id bigint PRIMARY KEY, n bigint NOT NULL, pad text NOT NULL);
INSERT INTO counters SELECT g, 0, repeat(md5(g::text), 6) FROM generate_series(1::bigint, %d::bigint) g;
CREATE TABLE side (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO side SELECT g, 0 FROM generate_series(1, 20000) g;
ANALYZE counters, side;`

// counterWriters change rows while the snapshot runs: every update adds
// one to a row's counter n, so per key the values on the topic must never
// go backwards; inserts add new keys (n starts at 0); deletes remove keys
// for good (a deleted key is never written again).
type counterWriters struct {
	dsn     string
	commits atomic.Int64
	mu      sync.Mutex // guards deleted
	deleted map[int64]bool
}

// run writes from writers connections until ctx ends or each has committed
// maxTxns transactions.
func (w *counterWriters) run(ctx context.Context, writers, maxTxns int) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := range writers {
		g.Go(func() error { return w.write(gctx, i, writers, maxTxns) })
	}
	return g.Wait()
}

func (w *counterWriters) write(ctx context.Context, writer, writers, maxTxns int) error {
	conn, err := pgx.Connect(ctx, w.dsn)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer conn.Close(context.Background())
	rng := rand.New(rand.NewPCG(uint64(writer), 99))
	next := int64(10_000_000 * (writer + 1))
	// Each writer owns the keys ≡ writer (mod writers), so writers never
	// wait on each other's row locks.
	own := func() int64 {
		return rng.Int64N(counterRows/int64(writers))*int64(writers) + int64(writer) + 1
	}
	for i := 0; i < maxTxns && ctx.Err() == nil; i++ {
		ids := make([]int64, 20)
		for j := range ids {
			ids[j] = own()
		}
		// A new key now and then, updated by the next transactions.
		if i%5 == 0 {
			next++
		}
		del := own()
		w.mu.Lock()
		if w.deleted[del] {
			del = 0
		}
		w.mu.Unlock()
		tx, err := conn.Begin(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		stmts := []struct {
			sql  string
			args []any
		}{
			{`UPDATE counters SET n = n + 1 WHERE id = ANY($1)`, []any{ids}},
			{`INSERT INTO counters VALUES ($1, 0, 'new') ON CONFLICT (id) DO UPDATE SET n = counters.n + 1`, []any{next}},
			{`UPDATE side SET n = n + 1 WHERE id = $1`, []any{rng.IntN(20000) + 1}},
			{`DELETE FROM counters WHERE id = $1`, []any{del}},
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
				_ = tx.Rollback(context.Background())
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("writer %d: %s: %w", writer, s.sql, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writer %d: commit: %w", writer, err)
		}
		if del != 0 {
			w.mu.Lock()
			w.deleted[del] = true
			w.mu.Unlock()
		}
		w.commits.Add(1)
	}
	return nil
}

func (w *counterWriters) deletedKeys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range w.deleted {
		out = append(out, strconv.FormatInt(id, 10))
	}
	return out
}

// snapshotConfig writes the config of the snapshot tests.
func snapshotConfig(t *testing.T, dsn string) (cfgPath, brokerAddr, registryURL string) {
	t.Helper()
	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	cfgPath = filepath.Join(dataDir, "replicator.yaml")
	// A small producer buffer makes the snapshot wait on the broker, so it
	// lasts long enough for the writers to overlap it.
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
  snapshot_workers: 2
  snapshot_chunk_rows: 5000
  snapshot_progress_interval: 100ms
kafka:
  listen: %q
  partitions: 3
  max_buffered_records: 2000
registry:
  listen: %q
entities:
  - table: counters
  - table: side
`, filepath.Join(dataDir, "data"), dsn, brokerAddr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, brokerAddr, "http://" + registryAddr
}

// checkKeyHistories checks guarantee 2 around the snapshot, key by key, in
// topic order: at most one snapshot record (op r) per snapshot run and
// before any change of the key streamed after it (op c/u/d, at a later
// LSN); the counter n never goes backwards; nothing follows a tombstone
// (deleted keys are never written again). It returns how many keys had
// both a snapshot record and streamed changes.
func checkKeyHistories(t *testing.T, topic string, records []topicRecord, snapshots int) int {
	t.Helper()
	type history struct {
		n        int64
		snaps    int
		streamed bool
		dead     bool
	}
	keys := map[string]*history{}
	bad := 0
	fail := func(format string, args ...any) {
		bad++
		if bad <= 10 {
			t.Errorf(topic+": "+format, args...)
		}
	}
	var snapLSN pglogrepl.LSN
	both := 0
	for _, r := range records {
		key := pgText(r.Key["id"])
		h := keys[key]
		if h == nil {
			h = &history{n: -1}
			keys[key] = h
		}
		lsn, err := pglogrepl.ParseLSN(r.Headers[cdc.HeaderLSN])
		if err != nil {
			fail("key %s: lsn header %q: %v", key, r.Headers[cdc.HeaderLSN], err)
			continue
		}
		switch op := r.Headers[cdc.HeaderOp]; op {
		case "r":
			h.snaps++
			if h.snaps > snapshots {
				fail("key %s: %d snapshot records, want at most %d", key, h.snaps, snapshots)
			}
			if h.streamed && snapshots == 1 {
				fail("key %s: snapshot record after a streamed change", key)
			}
			if snapLSN == 0 || lsn > snapLSN {
				snapLSN = lsn
			}
		case "c", "u", "d":
			if lsn <= snapLSN && snapshots == 1 {
				fail("key %s: %s record at %s, not after the snapshot's consistent point %s", key, op, lsn, snapLSN)
			}
			if h.snaps > 0 && !h.streamed {
				both++
			}
			h.streamed = true
		default:
			fail("key %s: op header %q", key, op)
		}
		if h.dead {
			fail("key %s: a record after its tombstone", key)
		}
		if r.Value == nil {
			h.dead = true
			continue
		}
		n, ok := r.Value["n"].(int64)
		if !ok {
			fail("key %s: n is %T", key, r.Value["n"])
			continue
		}
		if n < h.n {
			fail("key %s: n went back from %d to %d (op %s)", key, h.n, n, r.Headers[cdc.HeaderOp])
		}
		h.n = n
	}
	if bad > 10 {
		t.Errorf("%s: %d problems in all", topic, bad)
	}
	return both
}

// TestSnapshotWithConcurrentWriters: while the initial snapshot reads a
// large table on two workers, several connections update, insert and
// delete rows. Nothing is missed (every topic converges to its table,
// deleted keys end in tombstones) and nothing is reordered relative to the
// snapshot (per key: the snapshot record first, counters never go back).
func TestSnapshotWithConcurrentWriters(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, fmt.Sprintf(counterDDL, counterRows))
	cfgPath, brokerAddr, registryURL := snapshotConfig(t, pg.DSN("postgres"))

	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, `msg="created replication slot"`)
	w := &counterWriters{dsn: pg.DSN("postgres"), deleted: map[int64]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	writeErr := make(chan error, 1)
	go func() { writeErr <- w.run(wctx, 3, 5000) }()

	waitOutputWithin(t, p, logSnapshotComplete, 2*time.Minute)
	during := w.commits.Load()
	// Keep writing a little after the snapshot: the stream carries on.
	deadline := time.Now().Add(time.Minute)
	for w.commits.Load() < during+100 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the writers' progress
	}
	stopWriters()
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if during == 0 {
		t.Fatalf("no writer transaction committed during the snapshot: the test proves nothing (make the table larger)")
	}
	waitCaughtUp(t, conn, "replicator", p)

	for _, tb := range []struct{ topic, query string }{
		{"counters", `SELECT id, n, pad FROM counters`},
		{"side", `SELECT id, n FROM side`},
	} {
		records := readTopic(t, brokerAddr, registryURL, tb.topic)
		state := tableState(t, conn, tb.query)
		convergedBy(t, tb.topic, records, state, func(k map[string]any) string { return pgText(k["id"]) })
		both := checkKeyHistories(t, tb.topic, records, 1)
		t.Logf("%s: %d records for %d live rows; %d keys have a snapshot record followed by streamed changes", tb.topic, len(records), len(state), both)
		if tb.topic == "counters" {
			if both == 0 {
				t.Errorf("counters: no key was both in the snapshot and changed after it")
			}
			latest := latestByKey(records)
			byID := map[string]topicRecord{}
			for _, r := range latest {
				byID[pgText(r.Key["id"])] = r
			}
			deleted := w.deletedKeys()
			if len(deleted) == 0 {
				t.Errorf("the writers deleted nothing")
			}
			for _, id := range deleted {
				if r, ok := byID[id]; !ok || r.Value != nil {
					t.Errorf("deleted key %s: want a tombstone as its latest record, got %+v (present %v)", id, r.Value, ok)
				}
			}
		}
	}
	t.Logf("%d writer transactions committed during the snapshot, %d in all", during, w.commits.Load())
	p.stop(t)
}

// TestSnapshotKilledMidway: replicator run is SIGKILLed in the middle of
// the initial snapshot while writers run. On restart it says it starts the
// snapshot again from a new consistent point, does so, and every topic
// converges. The progress log lines of the first run (stderr is not a
// terminal here) give rows, the estimate, the rate and the ETA.
func TestSnapshotKilledMidway(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	// Three times the rows: the kill must land between the first progress
	// line and the end of the snapshot, 2.4 s at 200,000 rows, which a
	// test process starved of CPU for that long once missed.
	mustExec(t, conn, fmt.Sprintf(counterDDL, 3*counterRows))
	cfgPath, brokerAddr, registryURL := snapshotConfig(t, pg.DSN("postgres"))

	w := &counterWriters{dsn: pg.DSN("postgres"), deleted: map[int64]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	writeErr := make(chan error, 1)
	go func() { writeErr <- w.run(wctx, 2, 20000) }()

	p := startReplicator(t, "run", "--config", cfgPath)
	progress := regexp.MustCompile(logSnapshotProgress + ` table=public.counters rows=([1-9][0-9]*) estimated_rows=[1-9][0-9]* percent=[0-9]+ rows_per_s=[0-9]+ eta=[0-9hms.]+`)
	deadline := time.Now().Add(2 * time.Minute)
	for !progress.MatchString(p.output.String()) {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) before a progress line; output:\n%s", err, p.output.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress line matching %s within 2m; output:\n%s", progress, p.output.String())
		}
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	first := p.output.String()
	if strings.Contains(first, logSnapshotComplete) {
		t.Fatalf("the snapshot completed before the kill: the test proves nothing; output:\n%s", first)
	}
	t.Logf("killed at: %s", progress.FindString(first))

	p2 := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p2, logSnapshotRestart)
	waitOutputWithin(t, p2, logSnapshotComplete, 2*time.Minute)
	second := p2.output.String()
	restart := second[strings.Index(second, logSnapshotRestart):]
	restart = restart[:strings.IndexByte(restart, '\n')]
	for _, want := range []string{`reason="the previous initial snapshot did not complete (stopped or crashed)"`, "previous_consistent_lsn=", "effect="} {
		if !strings.Contains(restart, want) {
			t.Errorf("restart line %q lacks %q", restart, want)
		}
	}
	// Rows the killed run published and the writers deleted before the new
	// consistent point are tombstoned from the abandoned slot's WAL.
	if !strings.Contains(second, `msg="tombstoned rows deleted while the snapshot was interrupted"`) {
		t.Errorf("no tombstone replay line in the restarted run's output:\n%s", second)
	}
	if i, j := strings.Index(second, logSnapshotRestart), strings.Index(second, `msg="created replication slot"`); j < i {
		t.Errorf("the slot was created before the restart was announced:\n%s", second)
	}
	stopWriters()
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, conn, "replicator", p2)
	for _, tb := range []struct{ topic, query string }{
		{"counters", `SELECT id, n, pad FROM counters`},
		{"side", `SELECT id, n FROM side`},
	} {
		records := readTopic(t, brokerAddr, registryURL, tb.topic)
		state := tableState(t, conn, tb.query)
		convergedBy(t, tb.topic, records, state, func(k map[string]any) string { return pgText(k["id"]) })
		t.Logf("%s: %d records for %d live rows, %d duplicate records", tb.topic, len(records), len(state), duplicates(records))
	}
	p2.stop(t)
}

// waitOutputWithin is waitOutput with a longer bound, for a whole snapshot.
func waitOutputWithin(t *testing.T, p *process, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.output.String(), want) {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) before printing %q; output:\n%s", err, want, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicator did not print %q within %s; output:\n%s", want, within, p.output.String())
		}
	}
}
