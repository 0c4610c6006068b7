//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"golang.org/x/sync/errgroup"
)

const killDDL = `
CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
CREATE TABLE lines (tenant int, id int, qty int NOT NULL, PRIMARY KEY (tenant, id));
CREATE TABLE tags (id text PRIMARY KEY, n int);
INSERT INTO items SELECT g, 0, 'seed' FROM generate_series(1, 30000) g;
INSERT INTO lines SELECT g % 7, g, 1 FROM generate_series(1, 20000) g;
INSERT INTO tags SELECT 'tag-' || g, 0 FROM generate_series(1, 10000) g;`

// writeLoad runs one writer connection: set-based transactions of inserts,
// updates, deletes and primary-key changes over the three tables, until
// target changes are written in total by all writers or ctx ends.
func writeLoad(ctx context.Context, dsn string, writer int, written *atomic.Int64, target int64, pace time.Duration) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rng := rand.New(rand.NewPCG(uint64(writer), 42))
	next := int64(1_000_000 * (writer + 1))
	// Pace the transactions so the load is sustained over the kills rather
	// than over before the first one.
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for written.Load() < target && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		base := rng.Int64N(30000) + 1
		// About 300 changes per transaction.
		stmts := []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO items SELECT g, 1, 'new' FROM generate_series($1::bigint, $1::bigint + 79) g`, []any{next}},
			{`UPDATE items SET v = v + 1, note = md5(random()::text) WHERE id BETWEEN $1 AND $1 + 80`, []any{base}},
			{`DELETE FROM items WHERE id BETWEEN $1 AND $1 + 10`, []any{next + 20}},
			{`UPDATE items SET id = id + 500000000 WHERE id BETWEEN $1 AND $1 + 5`, []any{next + 40}},
			{`INSERT INTO lines SELECT $1::int, g, 2 FROM generate_series($2::int, $2::int + 29) g ON CONFLICT (tenant, id) DO UPDATE SET qty = lines.qty + 1`, []any{100 + writer, int(base % 200)}},
			{`UPDATE lines SET qty = qty + 1 WHERE tenant = $1 AND id BETWEEN $2 AND $2 + 40`, []any{int(base % 7), int(base % 20000)}},
			{`DELETE FROM lines WHERE tenant = $1 AND id BETWEEN $2 AND $2 + 5`, []any{int(base % 7), int((base * 7) % 20000)}},
			{`INSERT INTO tags SELECT 'w' || $1::text || '-' || g, 1 FROM generate_series($2::bigint, $2::bigint + 29) g`, []any{fmt.Sprint(writer), next}},
			{`UPDATE tags SET n = n + 1 WHERE id BETWEEN 'tag-' || $1::text AND 'tag-' || $1::text || '5'`, []any{fmt.Sprint(base % 1000)}},
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		var n int64
		for _, s := range stmts {
			tag, err := tx.Exec(ctx, s.sql, s.args...)
			if err != nil {
				_ = tx.Rollback(context.Background())
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("writer %d: %s: %w", writer, s.sql, err)
			}
			n += tag.RowsAffected()
		}
		if err := tx.Commit(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		written.Add(n)
		next += 1000
	}
	return nil
}

// TestNoLossUnderKill9 is guarantee 1: a sustained mixed workload over three
// tables from several writers while replicator run is SIGKILLed at random
// moments and restarted; at the end every topic converges to its table.
func TestNoLossUnderKill9(t *testing.T) {
	mw := startMixedWorkload(t, "")

	const target = 200_000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, gctx, written := mw.write(ctx, 3, target, 60*time.Millisecond)

	rng := rand.New(rand.NewPCG(7, 7))
	kills := 0
	// Keep killing while the writers run, and at least six times.
	for kills < 6 || written.Load() < target && gctx.Err() == nil {
		p := startReplicator(t, "run", "--config", mw.cfgPath)
		// Let it run between 0.2 s and 2.5 s: some kills land in the
		// snapshot, some mid-stream, some right after a start.
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited by itself (%v); output:\n%s", err, p.output.String())
		case <-time.After(time.Duration(200+rng.IntN(2300)) * time.Millisecond):
		}
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		kills++
		t.Logf("kill %d after %d changes written", kills, written.Load())
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if written.Load() < target {
		t.Fatalf("writers wrote %d changes, want at least %d", written.Load(), target)
	}

	mw.assertConverged(t)
}

// mixedWorkload is a cluster holding the mixed workload's three tables
// (killDDL) and a replicator config that streams them.
type mixedWorkload struct {
	pg                                *pgcluster.Cluster
	conn                              *pgx.Conn
	cfgPath, brokerAddr, registryAddr string
}

// startMixedWorkload starts the cluster and writes the config; kafkaExtra
// holds more lines for its kafka: section (indented by two spaces).
func startMixedWorkload(t *testing.T, kafkaExtra string) *mixedWorkload {
	t.Helper()
	mw := &mixedWorkload{pg: pgtest.Start(t), brokerAddr: freeAddr(t), registryAddr: freeAddr(t)}
	mw.conn = connect(t, mw.pg)
	mustExec(t, mw.conn, killDDL)
	dataDir := t.TempDir()
	mw.cfgPath = filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
kafka:
  listen: %q
  partitions: 4
%sregistry:
  listen: %q
entities:
  - table: items
  - table: lines
  - table: tags
`, filepath.Join(dataDir, "data"), mw.pg.DSN("postgres"), mw.brokerAddr, kafkaExtra, mw.registryAddr)
	if err := os.WriteFile(mw.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return mw
}

// write starts n writers (writeLoad) that stop once target changes are
// written in total or ctx ends; the caller waits on the group.
func (mw *mixedWorkload) write(ctx context.Context, n int, target int64, pace time.Duration) (*errgroup.Group, context.Context, *atomic.Int64) {
	var written atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range n {
		g.Go(func() error { return writeLoad(gctx, mw.pg.DSN("postgres"), w, &written, target, pace) })
	}
	return g, gctx, &written
}

// assertConverged runs replicator until it has caught up and checks every
// topic against its table.
func (mw *mixedWorkload) assertConverged(t *testing.T) {
	t.Helper()
	p := startReplicator(t, "run", "--config", mw.cfgPath)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, mw.conn, "replicator", p)
	assertMixedWorkloadConverged(t, mw.conn, mw.brokerAddr, "http://"+mw.registryAddr)
	p.stop(t)
}

// assertMixedWorkloadConverged checks the three tables of the mixed
// workload (items, lines, tags) against their topics and reports the
// duplicates (at-least-once repeats) each topic holds.
func assertMixedWorkloadConverged(t *testing.T, conn *pgx.Conn, brokerAddr, registryURL string) {
	t.Helper()
	tables := []struct {
		topic, query string
		key          func(map[string]any) string
	}{
		{"items", `SELECT id, v, note FROM items`, func(k map[string]any) string { return pgText(k["id"]) }},
		{"lines", `SELECT tenant || '/' || id AS key, tenant, id, qty FROM lines`, func(k map[string]any) string { return pgText(k["tenant"]) + "/" + pgText(k["id"]) }},
		{"tags", `SELECT id, n FROM tags`, func(k map[string]any) string { return pgText(k["id"]) }},
	}
	for _, tb := range tables {
		records := readTopic(t, brokerAddr, registryURL, tb.topic)
		state := tableState(t, conn, tb.query)
		convergedBy(t, tb.topic, records, state, tb.key)
		t.Logf("%s: %d records for %d live rows, %d duplicate records (at-least-once repeats)", tb.topic, len(records), len(state), duplicates(records))
	}
}

// convergedBy checks the latest record per key against the table.
func convergedBy(t *testing.T, topic string, records []topicRecord, table map[string]map[string]string, keyOf func(map[string]any) string) {
	t.Helper()
	latest := map[string]topicRecord{}
	for _, r := range records {
		latest[keyOf(r.Key)] = r
	}
	bad := 0
	for key, row := range table {
		r, ok := latest[key]
		switch {
		case !ok:
			bad++
			if bad <= 10 {
				t.Errorf("%s key %s: in the table, missing from the topic", topic, key)
			}
		case r.Value == nil:
			bad++
			if bad <= 10 {
				t.Errorf("%s key %s: in the table, but the topic ends in a tombstone", topic, key)
			}
		default:
			for col, want := range row {
				if got := pgText(r.Value[col]); got != want {
					bad++
					if bad <= 10 {
						t.Errorf("%s key %s column %s: got %q, want %q", topic, key, col, got, want)
					}
				}
			}
		}
	}
	for key, r := range latest {
		if _, live := table[key]; !live && r.Value != nil {
			bad++
			if bad <= 10 {
				t.Errorf("%s key %s: deleted from the table, but its latest record is not a tombstone", topic, key)
			}
		}
	}
	if bad > 10 {
		t.Errorf("%s: %d mismatches in all", topic, bad)
	}
}

// duplicates counts records that repeat an earlier record of the same key,
// LSN and op: what at-least-once delivery replays after a crash.
func duplicates(records []topicRecord) int {
	seen := map[string]bool{}
	n := 0
	for _, r := range records {
		id := r.KeyRaw + "|" + r.Headers[cdc.HeaderLSN] + "|" + r.Headers[cdc.HeaderOp]
		if seen[id] {
			n++
		}
		seen[id] = true
	}
	return n
}
