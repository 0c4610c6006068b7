//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestSinkMetrics runs `replicator sink` with metrics.listen under a small
// workload: /readyz turns ready, the records applied count exactly the
// records of the topic, lag is reported per partition and falls to 0, the
// batch latency histogram fills, the read model shows as running; a
// locked store shows as lag and fails /healthz until it is released; the
// Grafana dashboard's queries are served by run's and sink's scrapes.
// run and sink share one config file, the sink's address given by
// --metrics-listen.
func TestSinkMetrics(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
		INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g;`)
	dir := t.TempDir()
	runMetrics, sinkMetrics := freeAddr(t), freeAddr(t)
	body := fmt.Sprintf(`data_dir: %q
source: {url: %q, status_interval: 100ms}
kafka: {listen: %q, partitions: 3}
registry: {listen: %q}
entities:
  - table: items
read_models:
  - name: items_rm
    store: %q
    key: id
    sources:
      - entity: items
        key: id
        columns: {v: v}
`, filepath.Join(dir, "data"), pg.DSN("postgres"), freeAddr(t), freeAddr(t), "sqlite://"+filepath.Join(dir, "read.db"))
	// One file for both: the sink takes its own address by flag.
	cfgPath := filepath.Join(dir, "replicator.yaml")
	body += fmt.Sprintf("metrics: {listen: %q, stall_timeout: 3s, slot_poll_interval: 1s}\n", runMetrics)
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	run := startReplicator(t, "run", "--config", cfgPath)
	waitSlot(t, conn, "replicator", run)
	sink := startReplicator(t, "sink", "--config", cfgPath, "--metrics-listen", sinkMetrics)

	// applied reads the sink's counters: records applied, and the lag
	// summed over the partitions with their count.
	applied := func() (float64, float64, int, scrape) {
		s := scrapeMetrics(t, sinkMetrics)
		n, _ := s.value("replicator_sink_records_applied_total", "read_model", "items_rm")
		lag, parts := 0.0, 0
		if f := s["replicator_sink_lag_records"]; f != nil {
			for _, m := range f.GetMetric() {
				lag += m.GetGauge().GetValue()
				parts++
			}
		}
		return n, lag, parts, s
	}
	eventually(t, sink, time.Minute, "sink ready and the snapshot applied", func() (bool, string) {
		code, _ := probe(t, sinkMetrics, "/readyz")
		if code == 0 {
			return false, "not listening yet"
		}
		n, lag, parts, _ := applied()
		return code == http.StatusOK && n == 100 && lag == 0 && parts == 3,
			fmt.Sprintf("/readyz %d, applied %v, lag %v over %d partitions", code, n, lag, parts)
	})
	mustExec(t, conn, `INSERT INTO items SELECT g, 1 FROM generate_series(101, 250) g`)
	mustExec(t, conn, `UPDATE items SET v = 2 WHERE id <= 50`)
	eventually(t, sink, time.Minute, "the workload applied", func() (bool, string) {
		n, lag, parts, _ := applied()
		return n == 300 && lag == 0 && parts == 3, fmt.Sprintf("applied %v (want 300), lag %v over %d partitions", n, lag, parts)
	})
	// A writer holding the read model's SQLite file: records wait (lag),
	// none is applied, and /healthz fails after metrics.stall_timeout;
	// once it lets go, the sink catches up and is healthy again.
	db, err := sql.Open("sqlite", filepath.Join(dir, "read.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("lock the read model's file: %v", err)
	}
	mustExec(t, conn, `UPDATE items SET v = 3 WHERE id <= 20`)
	eventually(t, sink, 30*time.Second, "lag while the store is locked, then /healthz failing", func() (bool, string) {
		n, lag, _, _ := applied()
		code, body := probe(t, sinkMetrics, "/healthz")
		return lag == 20 && n == 300 && code == http.StatusServiceUnavailable && strings.Contains(body, "read model items_rm"),
			fmt.Sprintf("lag %v, applied %v, /healthz %d %q", lag, n, code, body)
	})
	if _, err := lock.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	eventually(t, sink, time.Minute, "caught up and healthy after the lock", func() (bool, string) {
		n, lag, _, _ := applied()
		code, body := probe(t, sinkMetrics, "/healthz")
		return n == 320 && lag == 0 && code == http.StatusOK, fmt.Sprintf("applied %v (want 320), lag %v, /healthz %d %q", n, lag, code, body)
	})
	// A batch's records count as applied at its commit, the batch itself
	// and its apply time a moment later, once the poll's work returns:
	// the applied count above can be seen between the two.
	var s scrape
	eventually(t, sink, 30*time.Second, "one batch latency observation per batch", func() (bool, string) {
		s = scrapeMetrics(t, sinkMetrics)
		batches, _ := s.value("replicator_sink_batches_total", "read_model", "items_rm")
		observed := s.samples("replicator_sink_batch_apply_seconds")
		return batches >= 2 && observed == uint64(batches),
			fmt.Sprintf("batches %v, batch latency observations %d: want one observation per batch (at least 2)", batches, observed)
	})
	if v, ok := s.value("replicator_sink_read_model_running", "read_model", "items_rm"); v != 1 || !ok {
		t.Errorf("replicator_sink_read_model_running = %v (present %v), want 1", v, ok)
	}
	if v, ok := s.value("replicator_sink_read_model_failed", "read_model", "items_rm"); v != 0 || !ok {
		t.Errorf("replicator_sink_read_model_failed = %v (present %v), want 0", v, ok)
	}
	// Every record run produced carries its commit time: one freshness
	// observation per applied record.
	if fresh := s.samples("replicator_sink_commit_to_visible_seconds"); fresh != 320 {
		t.Errorf("commit to visible observations %d, want 320 (one per applied record)", fresh)
	}
	if code, body := probe(t, sinkMetrics, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d: %s", code, body)
	}
	eventually(t, run, 30*time.Second, "run's slot polled", func() (bool, string) {
		_, ok := scrapeMetrics(t, runMetrics).value("replicator_slot_active")
		return ok, "no replicator_slot_active yet"
	})
	checkDashboard(t, scrapeMetrics(t, runMetrics), s)
	sink.stop(t)
	run.stop(t)
}

// samples is the number of observations of histogram name, over all its
// series (0 when it is not served).
func (s scrape) samples(name string) uint64 {
	var n uint64
	if f := s[name]; f != nil {
		for _, m := range f.GetMetric() {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}
