//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/cdc"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// republishRows is the table size of the republish tests: small enough to
// stay well under a minute on a loaded two-core machine. Issue 13's target
// for a dedicated run is 300,000.
const republishRows = 30_000

// underWritesRows is the table size of TestRepublishUnderWrites, issue
// 13's: the republish must last long enough for its writer to interleave
// many changes with the chunks (one every 2 ms) however fast it gets, and
// pipelined chunks make it take a fraction of a second.
const underWritesRows = 300_000

// Bounds of the writer that runs during a republish.
const (
	republishWriterPace   = 2 * time.Millisecond
	republishWriterMaxOps = 30_000
	republishWriterMaxFor = 45 * time.Second
)

// TestRepublishUnderWrites: `replicator republish` re-emits a table while a
// writer updates, deletes and re-inserts random keys. The latest record
// per key equals the table, no deleted key is live, and every key of the
// table was published after the request. Then a column added to the table
// and to columns: reaches every live entity through a republish, decoded
// by goavro.
func TestRepublishUnderWrites(t *testing.T) {
	ddl := fmt.Sprintf(`CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO items SELECT g, 0, 'n' || g FROM generate_series(1, %d) g;`, underWritesRows)
	env := newEvolveEnv(t, ddl, "  - table: items\n    columns: [id, v]\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitOutput(t, p, "initial snapshot complete")

	stopWriter := startRandomWriter(t, env.conn.Config().ConnString(), underWritesRows)
	started := currentLSN(t, env.conn)
	id := requestRepublish(t, env.cfgPath, "--entity", "items", "--chunk-rows", "1000")
	waitOutput(t, p, "republish complete\" id="+id)
	ops := stopWriter()
	if ops < 100 {
		t.Fatalf("the writer made only %d changes during the republish: the test proves nothing", ops)
	}
	waitCaughtUp(t, env.conn, "replicator", p)

	records := readTopic(t, env.broker, env.registryURL, "items")
	table := tableState(t, env.conn, `SELECT id, v FROM items`)
	assertConverged(t, records, table, nil)
	after := map[string]bool{}
	republished := 0
	for _, r := range records {
		lsn, err := pglogrepl.ParseLSN(r.Headers[cdc.HeaderLSN])
		if err != nil {
			t.Fatalf("record %v: lsn header: %v", r.Key, err)
		}
		if lsn > started {
			after[pgText(r.Key["id"])] = true
		}
		if r.Headers[cdc.HeaderRepublish] == id {
			republished++
			if r.Headers[cdc.HeaderOp] != "r" {
				t.Errorf("republished record %v has op %q, want r", r.Key, r.Headers[cdc.HeaderOp])
			}
		}
	}
	for k := range table {
		if !after[k] {
			t.Fatalf("key %s is in the table but was not published after the republish was requested", k)
		}
	}
	t.Logf("writer: %d changes; %d records republished of %d live rows", ops, republished, len(table))

	// A column added to the table and to columns:, then a republish.
	p.stop(t)
	mustExec(t, env.conn, `ALTER TABLE items ADD COLUMN extra text; UPDATE items SET extra = 'e' || id WHERE id % 100 = 0`)
	cfg, err := os.ReadFile(env.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env.cfgPath, []byte(strings.Replace(string(cfg), "columns: [id, v]", "columns: [id, v, extra]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	id = requestRepublish(t, env.cfgPath, "--all") // made while stopped: waits in the slot
	p = env.start(t)
	waitOutput(t, p, "republish complete\" id="+id)
	waitCaughtUp(t, env.conn, "replicator", p)
	records = readTopicGoavro(t, env.broker, env.registryURL, "items")
	for key, r := range latestByKey(records) {
		if r.Value == nil {
			continue
		}
		if _, ok := r.Value["extra"]; !ok {
			t.Fatalf("key %s: latest record has no field extra: %v", key, r.Value)
		}
	}
	if n := len(env.versions(t, "items-value")); n != 2 {
		t.Errorf("items-value: %d schema versions, want 2", n)
	}
	p.stop(t)
}

// requestRepublish runs `replicator republish` with args and returns the
// request's id from its output.
func requestRepublish(t *testing.T, cfgPath string, args ...string) string {
	t.Helper()
	c := startReplicator(t, append([]string{"republish", "--config", cfgPath}, args...)...)
	if err := c.waitExit(t, 30*time.Second); err != nil {
		t.Fatalf("replicator republish %v: %v\n%s", args, err, c.output.String())
	}
	out := c.output.String()
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "republish" {
		t.Fatalf("replicator republish printed %q, want \"republish ID requested ...\"", out)
	}
	return f[1]
}

// startRandomWriter updates, deletes and re-inserts random keys (1 to
// keys) of items at a steady pace, bounded in count and time, until the returned function
// stops it and returns how many changes it made.
func startRandomWriter(t *testing.T, dsn string, keys int) func() int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), republishWriterMaxFor)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	var ops int
	var werr error
	go func() {
		defer close(done)
		tick := time.NewTicker(republishWriterPace)
		defer tick.Stop()
		for ops < republishWriterMaxOps {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			k := rand.IntN(keys) + 1
			var sql string
			switch rand.IntN(3) {
			case 0:
				sql = `UPDATE items SET v = $2 WHERE id = $1`
			case 1:
				sql = `DELETE FROM items WHERE id = $1 AND $2::int IS NOT NULL`
			default:
				sql = `INSERT INTO items (id, v, note) VALUES ($1, $2, 'again') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v`
			}
			// Not ctx: a statement cancelled by stop could still commit
			// after the test reads the table. stop ends the loop between
			// statements.
			sctx, cancelStmt := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := conn.Exec(sctx, sql, k, ops+1)
			cancelStmt()
			if err != nil {
				werr = err
				return
			}
			ops++
		}
	}()
	stopped := false
	stop := func() int {
		if !stopped {
			stopped = true
			cancel()
			<-done
			conn.Close(context.Background())
		}
		if werr != nil {
			t.Fatalf("writer: %v", werr)
		}
		return ops
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestRepublishResumesAfterKill9: a daemon killed with SIGKILL in the
// middle of a republish, while a writer updates, deletes and re-inserts
// random keys, started again, completes it from the last acknowledged
// chunk: the keys of the chunks completed before the kill are not read
// again, every key in the table at the end was published after the
// request (republished, or changed since), no deleted key is live, and
// the topic converges.
func TestRepublishResumesAfterKill9(t *testing.T) {
	ddl := fmt.Sprintf(`CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO items SELECT g, g, 'n' || g FROM generate_series(1, %d) g;`, republishRows)
	env := newEvolveEnv(t, ddl, "  - table: items\n    columns: [id, v]\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitOutput(t, p, "initial snapshot complete")

	stopWriter := startRandomWriter(t, env.conn.Config().ConnString(), republishRows)
	requested := currentLSN(t, env.conn)
	// 1,000-row chunks at 5,000 rows/s: six seconds, long enough to kill
	// it midway.
	id := requestRepublish(t, env.cfgPath, "--entity", "items", "--chunk-rows", "1000", "--rate", "5000")
	statePath := filepath.Join(env.dataDir, "source", "slot-replicator.json")
	after := waitRepublishChunks(t, statePath, p, 2)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	// The state may have moved on between the read above and the kill.
	after = lastRepublishKey(t, statePath)
	restart := currentLSN(t, env.conn)
	t.Logf("killed after key %d", after)

	p = env.start(t)
	waitOutput(t, p, "republish complete\" id="+id)
	ops := stopWriter()
	if ops < 100 {
		t.Fatalf("the writer made only %d changes during the republish: the test proves nothing", ops)
	}
	waitCaughtUp(t, env.conn, "replicator", p)
	records := readTopic(t, env.broker, env.registryURL, "items")
	table := tableState(t, env.conn, `SELECT id, v FROM items`)
	// Every key the table had at the start and lacks now was deleted by
	// the writer: its latest record must be a tombstone.
	var deleted []string
	for k := 1; k <= republishRows; k++ {
		if _, ok := table[strconv.Itoa(k)]; !ok {
			deleted = append(deleted, strconv.Itoa(k))
		}
	}
	assertConverged(t, records, table, deleted)
	again, published := 0, map[string]bool{}
	for _, r := range records {
		lsn, err := pglogrepl.ParseLSN(r.Headers[cdc.HeaderLSN])
		if err != nil {
			t.Fatalf("record %v: lsn header: %v", r.Key, err)
		}
		key := pgText(r.Key["id"])
		if r.Headers[cdc.HeaderRepublish] == id || lsn > requested {
			published[key] = true
		}
		if r.Headers[cdc.HeaderRepublish] != id || lsn < restart {
			continue
		}
		k, _ := strconv.ParseInt(key, 10, 64)
		if k <= after {
			t.Fatalf("key %d was republished again after the restart: its chunk (up to key %d) completed before the kill", k, after)
		}
		again++
	}
	for k := range table {
		if !published[k] {
			t.Errorf("key %s is in the table but has no record of republish %s nor one after the request", k, id)
		}
	}
	// The keys after the last chunk completed are read again, but for
	// those the writer deleted or changed meanwhile (the stream publishes
	// those).
	if want := republishRows - int(after); again == 0 || again > want {
		t.Errorf("republished %d rows after the restart, want 1 to %d (the keys after %d)", again, want, after)
	}
	t.Logf("writer: %d changes; %d rows republished after the restart; %d keys deleted", ops, again, len(deleted))
	p.stop(t)
}

// waitRepublishChunks polls the state file until the only republish job
// has at least n chunks done, and returns its last key.
func waitRepublishChunks(t *testing.T, statePath string, p *process, n int) int64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if st, ok := readRepublishState(t, statePath); ok && st.Chunks >= n {
			k, _ := strconv.ParseInt(st.After[0], 10, 64)
			return k
		}
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) during the republish; output:\n%s", err, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the republish did not complete %d chunks within 60s; output:\n%s", n, p.output.String())
		}
	}
}

// lastRepublishKey is the last key of the last completed chunk in the
// state file.
func lastRepublishKey(t *testing.T, statePath string) int64 {
	t.Helper()
	st, ok := readRepublishState(t, statePath)
	if !ok || st.Done || len(st.After) != 1 {
		t.Fatalf("state after the kill: %+v (found %v), want an unfinished table with a last key", st, ok)
	}
	k, err := strconv.ParseInt(st.After[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// republishTableState is a table of a republish job in the state file.
type republishTableState struct {
	After  []string `json:"after"`
	Chunks int      `json:"chunks"`
	Done   bool     `json:"done"`
}

// readRepublishState reads the first table of the first republish job.
func readRepublishState(t *testing.T, statePath string) (republishTableState, bool) {
	t.Helper()
	b, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Republish []struct {
			Tables []republishTableState `json:"tables"`
		} `json:"republish"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("parse %s: %v", statePath, err)
	}
	if len(st.Republish) == 0 || len(st.Republish[0].Tables) == 0 {
		return republishTableState{}, false
	}
	return st.Republish[0].Tables[0], true
}

// TestRepublishReconcileAfterLostSlot: the slot is dropped while the
// replicator is stopped and rows are deleted in the gap; a new snapshot
// (state file deleted) publishes every live row but cannot know the
// deleted ones; `republish --reconcile` tombstones them, so the topic ends
// converged with no deleted row live.
func TestRepublishReconcileAfterLostSlot(t *testing.T) {
	ddl := `CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO items SELECT g, g FROM generate_series(1, 3000) g;`
	env := newEvolveEnv(t, ddl, "  - table: items\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitOutput(t, p, "initial snapshot complete")
	mustExec(t, env.conn, `INSERT INTO items VALUES (5000, 5000)`) // deleted later, in the gap
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)
	waitSlotReleased(t, env.conn, "replicator")

	mustExec(t, env.conn, `SELECT pg_drop_replication_slot('replicator')`)
	mustExec(t, env.conn, `DELETE FROM items WHERE id % 10 = 0 OR id = 5000`)
	if err := os.Remove(filepath.Join(env.dataDir, "source", "slot-replicator.json")); err != nil {
		t.Fatal(err)
	}
	p = env.start(t)
	waitOutput(t, p, "initial snapshot complete")
	waitCaughtUp(t, env.conn, "replicator", p)
	var deleted []string
	for k := 10; k <= 3000; k += 10 {
		deleted = append(deleted, strconv.Itoa(k))
	}
	deleted = append(deleted, "5000")
	live := 0
	latest := latestByKey(readTopic(t, env.broker, env.registryURL, "items"))
	for _, r := range latest {
		if r.Value != nil && slices.Contains(deleted, pgText(r.Key["id"])) {
			live++
		}
	}
	if live != len(deleted) {
		t.Fatalf("before the reconcile %d of the %d keys deleted in the gap are live on the topic, want all (the test's premise)", live, len(deleted))
	}

	id := requestRepublish(t, env.cfgPath, "--entity", "items", "--reconcile")
	waitOutput(t, p, "republish complete\" id="+id)
	waitCaughtUp(t, env.conn, "replicator", p)
	assertConverged(t, readTopic(t, env.broker, env.registryURL, "items"), tableState(t, env.conn, `SELECT id, v FROM items`), deleted)
	p.stop(t)
}

// TestRepublishReconcileOrphans: keys the table never had, produced
// straight to the entity topic (encoded with the entity's schemas, one
// with the headers of a record of the stream, two with none), are live on
// the topic until `republish --reconcile` tombstones them. A key deleted
// from the table keeps its delete's tombstone and gets no other, a key of
// the table also written by hand with a wrong value gets its row back
// from the republish, and the topic converges with the table.
func TestRepublishReconcileOrphans(t *testing.T) {
	ddl := `CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO items SELECT g, g FROM generate_series(1, 1000) g;`
	env := newEvolveEnv(t, ddl, "  - table: items\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitOutput(t, p, "initial snapshot complete")
	mustExec(t, env.conn, `DELETE FROM items WHERE id = 7`)
	waitCaughtUp(t, env.conn, "replicator", p)

	streamed := readTopic(t, env.broker, env.registryURL, "items")
	orphans := []string{"5001", "5002", "5003"}
	byHand := []struct {
		id, v   int64
		headers map[string]string
	}{
		{5001, 1, streamed[0].Headers}, // as if from a stream whose delete was lost
		{5002, 2, nil},
		{5003, 3, nil},
		{10, -1, nil}, // a key of the table, with a value it never had
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.broker), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range byHand {
		r := &kgo.Record{
			Topic: "items",
			Key:   encodeLatest(t, env.registryURL, "items-key", map[string]any{"id": h.id}),
			Value: encodeLatest(t, env.registryURL, "items-value", map[string]any{"id": h.id, "v": int32(h.v)}),
		}
		for k, v := range h.headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce key %d to items: %v", h.id, err)
		}
	}
	before := map[string]topicRecord{}
	for _, r := range latestByKey(readTopic(t, env.broker, env.registryURL, "items")) {
		before[pgText(r.Key["id"])] = r
	}
	for _, k := range append(slices.Clone(orphans), "10") {
		if r := before[k]; r.Value == nil || pgText(r.Value["id"]) != k {
			t.Fatalf("key %s before the reconcile: latest record %+v, want the one produced by hand (the test's premise)", k, r)
		}
	}
	if r, ok := before["7"]; !ok || r.Value != nil {
		t.Fatalf("key 7 before the reconcile: latest record %+v, want its delete's tombstone (the test's premise)", r)
	}

	id := requestRepublish(t, env.cfgPath, "--entity", "items", "--reconcile")
	waitOutput(t, p, "republish complete\" id="+id)
	waitCaughtUp(t, env.conn, "replicator", p)
	records := readTopic(t, env.broker, env.registryURL, "items")
	assertConverged(t, records, tableState(t, env.conn, `SELECT id, v FROM items`), append(slices.Clone(orphans), "7"))
	var tombstoned []string
	for _, r := range records {
		if r.Value == nil && r.Headers[cdc.HeaderRepublish] == id {
			tombstoned = append(tombstoned, pgText(r.Key["id"]))
		}
	}
	slices.Sort(tombstoned)
	if !slices.Equal(tombstoned, orphans) {
		t.Errorf("keys tombstoned by the reconcile: got %v, want %v (the keys live on the topic only)", tombstoned, orphans)
	}
	p.stop(t)
}

// encodeLatest encodes v with the latest schema of subject in the
// registry at registryURL, framed as the replicator frames its records
// (Confluent wire format).
func encodeLatest(t *testing.T, registryURL, subject string, v map[string]any) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := cl.SchemaByVersion(ctx, subject, -1)
	if err != nil {
		t.Fatalf("latest schema of %s: %v", subject, err)
	}
	s, err := avro.Parse(ss.Schema.Schema)
	if err != nil {
		t.Fatalf("parse the schema of %s: %v", subject, err)
	}
	b, err := avro.Marshal(s, v)
	if err != nil {
		t.Fatalf("encode %v with the schema of %s: %v", v, subject, err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(ss.ID)), b...)
}

// TestTableAddedToEntitiesSnapshottedOnline: a table added to entities:
// on a slot that already streams is snapshotted online at the next start
// (instead of refused), while its rows keep changing, and its topic
// converges.
func TestTableAddedToEntitiesSnapshottedOnline(t *testing.T) {
	ddl := fmt.Sprintf(`CREATE TABLE first (id bigint PRIMARY KEY, v int NOT NULL);
CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO first SELECT g, g FROM generate_series(1, 10) g;
INSERT INTO items SELECT g, 0, 'n' || g FROM generate_series(1, %d) g;`, republishRows)
	env := newEvolveEnv(t, ddl, "  - table: first\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitOutput(t, p, "initial snapshot complete")
	p.stop(t)

	cfg, err := os.ReadFile(env.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env.cfgPath, append(cfg, "  - table: items\n    columns: [id, v]\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	stopWriter := startRandomWriter(t, env.conn.Config().ConnString(), republishRows)
	p = env.start(t)
	waitOutput(t, p, "snapshotted online")
	waitOutput(t, p, "republish complete")
	if ops := stopWriter(); ops == 0 {
		t.Fatal("the writer made no change during the online snapshot")
	}
	waitCaughtUp(t, env.conn, "replicator", p)
	assertConverged(t, readTopic(t, env.broker, env.registryURL, "items"), tableState(t, env.conn, `SELECT id, v FROM items`), nil)
	p.stop(t)
}
