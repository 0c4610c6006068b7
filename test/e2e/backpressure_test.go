//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read RSS: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// queryLSN runs a query returning one pg_lsn (as text).
func queryLSN(t *testing.T, conn *pgx.Conn, sql string, args ...any) pglogrepl.LSN {
	t.Helper()
	var s *string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// bulkWriter writes transactions of 160 changes of about 1 KB rows (inserts, updates,
// deletes) to items until ctx ends.
func bulkWriter(ctx context.Context, dsn string, writer int, written *atomic.Int64) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	next := int64(writer+1) * 1_000_000_000 // writers never share a key
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var n int64
		for _, s := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO items SELECT g, 1, repeat(md5(g::text), 30) FROM generate_series($1::bigint, $1::bigint + 99) g`, []any{next}},
			{`UPDATE items SET v = v + 1, note = repeat(md5(random()::text), 30) WHERE id BETWEEN $1 AND $1 + 49`, []any{next - 500}},
			{`DELETE FROM items WHERE id BETWEEN $1 AND $1 + 9`, []any{next - 300}},
		} {
			tag, err := tx.Exec(ctx, s.sql, s.args...)
			if err != nil {
				_ = tx.Rollback(context.Background())
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("writer %d: %w", writer, err)
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
}

// TestBrokerOutageBackPressure takes the broker away from the producer for
// a while as writers keep going, in two ways: unreachable (every produce
// connection is closed) and stalled (produce requests are held without an
// answer until the producer's request timeout gives up on them and retries).
// Either way the stream pauses (the walsender falls behind instead of the
// replicator buffering), the replicator's memory stays bounded, the slot
// confirms nothing the broker has not acknowledged, the process survives,
// and once the broker answers again the topic converges.
func TestBrokerOutageBackPressure(t *testing.T) {
	for _, tc := range []struct {
		name string
		// outage covers the walsender's default wal_sender_timeout (60s)
		// for the unreachable broker, and two of the producer's request
		// timeouts (about 20s each) for the stalled one.
		outage time.Duration
		stall  bool
	}{
		{"unreachable", time.Minute, false},
		{"stalled", 45 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) { brokerOutage(t, tc.outage, tc.stall) })
	}
}

func brokerOutage(t *testing.T, outageFor time.Duration, stall bool) {
	// The broker: kfake in this process, on a port of its own. Metadata
	// keeps answering during the outage, so topics stay known.
	kc, addr := startKfake(t)
	var outage atomic.Bool
	var rejected atomic.Int64
	back := make(chan struct{}) // closed when the outage ends
	endOutage := sync.OnceFunc(func() { close(back) })
	t.Cleanup(endOutage) // before kc.Close: no held request outlives the test
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if !outage.Load() {
			return nil, nil, false
		}
		rejected.Add(1)
		if stall {
			// Hold the request until the outage ends, then let the broker
			// handle it as usual (the producer has long given up on it and
			// retried: idempotence drops the repeat).
			kc.SleepControl(func() { <-back })
			return nil, nil, false
		}
		return nil, errors.New("broker outage (test)"), true
	})

	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `
		CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
		INSERT INTO items SELECT g, 0, 'seed' FROM generate_series(1, 2000) g;`)

	dataDir := t.TempDir()
	registryAddr := freeAddr(t)
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
kafka:
  brokers: [%q]
  partitions: 4
  max_buffered_records: 5000
registry:
  listen: %q
entities:
  - table: items
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), addr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var written atomic.Int64
	var g errgroup.Group
	for w := range 2 {
		g.Go(func() error { return bulkWriter(wctx, pg.DSN("postgres"), w, &written) })
	}
	waitWritten(t, &written, 20_000, p)
	rss0 := rssBytes(t, p.cmd.Process.Pid)

	// The outage. L0 is read once a produce request has been refused: a
	// record is then in flight that cannot be acknowledged, so the slot's
	// confirmed position must stay at or before L0 for as long as the
	// broker is away, however much is written meanwhile.
	outage.Store(true)
	began := time.Now()
	deadline := began.Add(30 * time.Second)
	for rejected.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no produce request reached the broker within 30s of the outage")
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
	l0 := queryLSN(t, conn, `SELECT pg_current_wal_lsn()::text`)
	writtenAtL0 := written.Load()
	var maxRSS, maxLag int64
	var maxConfirmed pglogrepl.LSN
	// At least outageFor, and until 96 MB of WAL are written during it
	// (the memory bound means something only then): the writers' pace is
	// the machine's, slower on a loaded one. Bounded: 2 minutes more.
	const walWanted = 96 << 20
	walSinceL0 := func() int64 { return int64(queryLSN(t, conn, `SELECT pg_current_wal_lsn()::text`) - l0) }
	for time.Since(began) < outageFor || walSinceL0() < walWanted && time.Since(began) < outageFor+2*time.Minute {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited during the broker outage (%v); output:\n%s", err, p.output.String())
		case <-time.After(200 * time.Millisecond): // sampling interval
		}
		maxRSS = max(maxRSS, rssBytes(t, p.cmd.Process.Pid))
		maxConfirmed = max(maxConfirmed, queryLSN(t, conn, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'replicator'`))
		// How far the walsender is behind the WAL: it grows only if the
		// replicator stopped reading, i.e. the stream paused.
		var lag *int64
		if err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - sent_lsn)::bigint FROM pg_stat_replication WHERE application_name = 'replicator'`).Scan(&lag); err == nil && lag != nil {
			maxLag = max(maxLag, *lag)
		}
	}
	duringOutage := written.Load() - writtenAtL0
	walDuring := int64(queryLSN(t, conn, `SELECT pg_current_wal_lsn()::text`) - l0)
	t.Logf("outage of %v: %d changes (%d MB of WAL) written; %d produce requests refused or held; RSS %d MB before, at most %d MB during; walsender at most %d MB behind; confirmed at most %s (L0 %s)",
		time.Since(began).Round(time.Second), duringOutage, walDuring>>20, rejected.Load(), rss0>>20, maxRSS>>20, maxLag>>20, maxConfirmed, l0)
	if maxConfirmed > l0 {
		t.Errorf("slot confirmed %s during the outage, past %s: a position the broker never acknowledged", maxConfirmed, l0)
	}
	if walDuring < walWanted {
		t.Errorf("only %d MB of WAL written during the outage, want at least 96 MB for the memory bound to mean something", walDuring>>20)
	}
	if maxRSS > rss0+96<<20 {
		t.Errorf("replicator RSS grew from %d MB to %d MB during the outage, want at most 96 MB more (records buffered instead of back-pressure?)", rss0>>20, maxRSS>>20)
	}
	if maxLag < 32<<20 {
		t.Errorf("walsender at most %d MB behind during the outage, want at least 32 MB (the stream should pause)", maxLag>>20)
	}

	// The broker comes back: writes go on a little, then everything
	// written reaches the topic.
	outage.Store(false)
	endOutage()
	waitWritten(t, &written, written.Load()+10_000, p)
	stopWriters()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, conn, "replicator", p)
	records := readTopic(t, addr, "http://"+registryAddr, "items")
	state := tableState(t, conn, `SELECT id, v, note FROM items`)
	convergedBy(t, "items", records, state, func(k map[string]any) string { return pgText(k["id"]) })
	t.Logf("items: %d records for %d live rows, %d duplicates; reconnects to PostgreSQL: %d",
		len(records), len(state), duplicates(records), strings.Count(p.output.String(), "source connection failed; reconnecting"))
	p.stop(t)
}
