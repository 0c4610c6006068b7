//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"golang.org/x/sync/errgroup"
)

// resilientWriter is one writer connection of a mixed workload (inserts,
// updates, deletes, key changes) over killDDL's tables that keeps going
// through server restarts: a transaction that fails is abandoned and the
// connection opened again. The table, not the writer's count, is what the
// topics are compared with, so a commit whose outcome the writer never
// learned is harmless. It writes until ctx ends.
func resilientWriter(ctx context.Context, dsn string, writer int, written, failed *atomic.Int64, pace time.Duration) {
	rng := rand.New(rand.NewPCG(uint64(writer), 99))
	next := int64(1_000_000 * (writer + 1))
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				failed.Add(1)
				continue
			}
			conn = c
		}
		// Always move on: a failed commit may still have happened.
		first := next
		next += 1000
		n, err := mixedTxn(ctx, conn, rng, writer, first)
		if err != nil {
			failed.Add(1)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		written.Add(n)
	}
}

// mixedTxn writes one transaction of about 150 changes over items, lines
// and tags, with new keys from first on.
func mixedTxn(ctx context.Context, conn *pgx.Conn, rng *rand.Rand, writer int, first int64) (int64, error) {
	base := rng.Int64N(30000) + 1
	stmts := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO items SELECT g, 1, 'new' FROM generate_series($1::bigint, $1::bigint + 39) g`, []any{first}},
		{`UPDATE items SET v = v + 1, note = md5(random()::text) WHERE id BETWEEN $1 AND $1 + 40`, []any{base}},
		{`DELETE FROM items WHERE id BETWEEN $1 AND $1 + 5`, []any{first + 10}},
		{`DELETE FROM items WHERE id BETWEEN $1 AND $1 + 2`, []any{base + 100}},
		{`UPDATE items SET id = id + 500000000 WHERE id BETWEEN $1 AND $1 + 3`, []any{first + 20}},
		{`INSERT INTO lines SELECT $1::int, g, 2 FROM generate_series($2::int, $2::int + 14) g ON CONFLICT (tenant, id) DO UPDATE SET qty = lines.qty + 1`, []any{100 + writer, int(base % 200)}},
		{`DELETE FROM lines WHERE tenant = $1 AND id BETWEEN $2 AND $2 + 3`, []any{int(base % 7), int((base * 7) % 20000)}},
		{`INSERT INTO tags SELECT 'w' || $1::text || '-' || g, 1 FROM generate_series($2::bigint, $2::bigint + 14) g`, []any{fmt.Sprint(writer), first}},
		{`UPDATE tags SET n = n + 1 WHERE id BETWEEN 'tag-' || $1::text AND 'tag-' || $1::text || '5'`, []any{fmt.Sprint(base % 1000)}},
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range stmts {
		tag, err := tx.Exec(ctx, s.sql, s.args...)
		if err != nil {
			_ = tx.Rollback(context.Background())
			return 0, err
		}
		n += tag.RowsAffected()
	}
	return n, tx.Commit(ctx)
}

// waitCount polls until the process output holds want at least n times.
func waitCount(t *testing.T, p *process, want string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(p.output.String(), want) < n {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) while waiting for %d× %q; output:\n%s", err, n, want, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicator printed %q %d times within %s, want %d; output:\n%s", want, strings.Count(p.output.String(), want), within, n, p.output.String())
		}
	}
}

// waitWritten polls until the writers have written at least n changes.
func waitWritten(t *testing.T, written *atomic.Int64, n int64, p *process) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for written.Load() < n {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v); output:\n%s", err, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers wrote %d changes within 2m, want %d", written.Load(), n)
		}
	}
}

// TestReconnectAfterPostgresRestart stops PostgreSQL (fast shutdown) three
// times under a sustained mixed workload and starts it again: the one
// replicator process reconnects by itself each time, with backoff, and the
// topics converge to the tables.
func TestReconnectAfterPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, killDDL)

	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
  reconnect:
    initial_backoff: 100ms
    max_backoff: 1s
kafka:
  listen: %q
  partitions: 4
registry:
  listen: %q
entities:
  - table: items
  - table: lines
  - table: tags
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var written, failed atomic.Int64
	var g errgroup.Group
	for w := range 3 {
		g.Go(func() error {
			resilientWriter(wctx, pg.DSN("postgres"), w, &written, &failed, 20*time.Millisecond)
			return nil
		})
	}

	const outages = 3
	const attempt = "source connection failed; reconnecting"
	for i := 1; i <= outages; i++ {
		// Writes flow and are being streamed when the server goes away.
		waitWritten(t, &written, written.Load()+5000, p)
		tried := strings.Count(p.output.String(), attempt)
		streams := strings.Count(p.output.String(), "msg=streaming")
		if err := pg.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		// Keep it down until the replicator has failed to connect twice
		// more: the backoff, not the restart, is what it rides on.
		waitCount(t, p, attempt, tried+3, time.Minute)
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitCount(t, p, "msg=streaming", streams+1, time.Minute)
		t.Logf("outage %d survived: %d changes written, %d writer transactions failed", i, written.Load(), failed.Load())
	}
	waitWritten(t, &written, written.Load()+5000, p)
	stopWriters()
	_ = g.Wait()

	conn = connect(t, pg) // the first connection died with the server
	waitCaughtUp(t, conn, "replicator", p)
	select {
	case err := <-p.done:
		t.Fatalf("replicator exited (%v); output:\n%s", err, p.output.String())
	default:
	}
	assertMixedWorkloadConverged(t, conn, brokerAddr, "http://"+registryAddr)
	if n := strings.Count(p.output.String(), attempt); n < 3*outages {
		t.Errorf("reconnect attempts logged: got %d, want at least %d", n, 3*outages)
	}
	p.stop(t)
}
