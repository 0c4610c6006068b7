//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kmsg"

	dto "github.com/prometheus/client_model/go"
)

// scrape is one /metrics response, parsed.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, addr string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape /metrics: status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the sample of name whose labels include want (name=value
// pairs); ok false when there is none.
func (s scrape) value(name string, want ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// probe returns the status code of GET path.
func probe(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond every 100 ms until it holds or within passes.
func eventually(t *testing.T, p *process, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, within, last)
		}
		select {
		case err := <-p.done:
			t.Fatalf("%s: replicator exited (%v); output:\n%s", what, err, p.output.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestMetricsHealthAndStats runs `replicator run` with metrics.listen and
// JSON logs under a small workload: /readyz turns ready once streaming,
// /metrics shows the snapshot rows, the records per entity and op, the
// confirmed LSN reaching the server's WAL and the lag coming back to zero;
// a stalled broker makes /healthz fail within metrics.stall_timeout and
// recover once the broker answers; every log line is JSON with LSNs as
// X/Y; the Grafana dashboard asks only for metrics the scrape serves.
func TestMetricsHealthAndStats(t *testing.T) {
	// The broker: kfake in this process, so produce requests can be held
	// (a stalled broker) while metadata keeps answering.
	kc, kafkaAddr := startKfake(t)
	var stalled atomic.Bool
	release := make(chan struct{})
	endStall := sync.OnceFunc(func() { close(release) })
	t.Cleanup(endStall) // before kc.Close: no held request outlives the test
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if stalled.Load() {
			kc.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})

	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `
		CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
		INSERT INTO items SELECT g, 0 FROM generate_series(1, 500) g;`)

	dir := t.TempDir()
	metricsAddr := freeAddr(t)
	const stallTimeout = 3 * time.Second
	cfgPath := filepath.Join(dir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
log: {format: json, stats_interval: 1s}
metrics: {listen: %q, stall_timeout: %s, slot_poll_interval: 1s}
source: {url: %q, status_interval: 200ms}
kafka: {brokers: [%q], partitions: 2}
registry: {listen: %q}
entities:
  - table: items
`, filepath.Join(dir, "data"), metricsAddr, stallTimeout, pg.DSN("postgres"), kafkaAddr, freeAddr(t))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startReplicator(t, "run", "--config", cfgPath)

	eventually(t, p, 90*time.Second, "/readyz ready", func() (bool, string) {
		code, body := probe(t, metricsAddr, "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if code, body := probe(t, metricsAddr, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while streaming: %d %s", code, body)
	}
	records := func(op string) float64 {
		v, _ := scrapeMetrics(t, metricsAddr).value("replicator_records_produced_total", "entity", "items", "op", op)
		return v
	}
	eventually(t, p, 30*time.Second, "500 snapshot records", func() (bool, string) {
		s := scrapeMetrics(t, metricsAddr)
		read, _ := s.value("replicator_snapshot_rows_read_total", "table", "public.items")
		r, _ := s.value("replicator_records_produced_total", "entity", "items", "op", "r")
		return read == 500 && r == 500, fmt.Sprintf("snapshot rows %v, records r %v", read, r)
	})

	// A small workload: the records per op, and the confirmed LSN reaching
	// the server's WAL end written by it.
	mustExec(t, conn, `
		BEGIN;
		INSERT INTO items SELECT g, 1 FROM generate_series(501, 600) g;
		UPDATE items SET v = 2 WHERE id <= 50;
		DELETE FROM items WHERE id BETWEEN 51 AND 60;
		COMMIT;`)
	target := queryLSN(t, conn, `SELECT pg_current_wal_lsn()::text`)
	eventually(t, p, 30*time.Second, "records and confirmed LSN after the workload", func() (bool, string) {
		s := scrapeMetrics(t, metricsAddr)
		c, _ := s.value("replicator_records_produced_total", "entity", "items", "op", "c")
		u, _ := s.value("replicator_records_produced_total", "entity", "items", "op", "u")
		d, _ := s.value("replicator_records_produced_total", "entity", "items", "op", "d")
		lsn, _ := s.value("replicator_confirmed_lsn")
		lagSec, _ := s.value("replicator_replication_lag_seconds")
		return c == 100 && u == 50 && d == 10 && pglogrepl.LSN(lsn) >= target && lagSec == 0,
			fmt.Sprintf("c=%v u=%v d=%v confirmed %s (want >= %s) lag %vs", c, u, d, pglogrepl.LSN(lsn), target, lagSec)
	})
	// The slot's metrics are the slot poller's (metrics.slot_poll_interval,
	// 1 s): its first poll ran before the slot existed, and the slot is
	// active only once streaming (not while the snapshot is read). Whether
	// a poll fell between streaming and here is a race of two tickers, so
	// it is waited for, a few poll intervals at most.
	eventually(t, p, 30*time.Second, "the slot poller seeing the slot active", func() (bool, string) {
		s := scrapeMetrics(t, metricsAddr)
		active, _ := s.value("replicator_slot_active")
		_, retained := s.value("replicator_slot_retained_wal_bytes")
		return active == 1 && retained, fmt.Sprintf("replicator_slot_active %v, replicator_slot_retained_wal_bytes served %v", active, retained)
	})
	s := scrapeMetrics(t, metricsAddr)
	for _, name := range []string{"replicator_slot_retained_wal_bytes", "replicator_replication_lag_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := s.value(name); !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v, _ := s.value("replicator_records_acknowledged_total"); v != 660 {
		t.Errorf("replicator_records_acknowledged_total = %v, want 660 (500 r + 100 c + 50 u + 10 d)", v)
	}
	checkDashboard(t, s)

	// A stalled broker: records stay in flight, /healthz fails within
	// its bound, the lag grows; once the broker answers, all recovers.
	stalled.Store(true)
	stallStart := time.Now() // before the records go in flight, which starts the watchdog's clock
	mustExec(t, conn, `INSERT INTO items SELECT g, 3 FROM generate_series(601, 610) g`)
	eventually(t, p, stallTimeout+30*time.Second, "/healthz failing under a stalled broker", func() (bool, string) {
		code, body := probe(t, metricsAddr, "/healthz")
		return code == http.StatusServiceUnavailable, fmt.Sprintf("%d %s", code, body)
	})
	if took := time.Since(stallStart); took < stallTimeout {
		t.Errorf("/healthz failed after %s, before stall_timeout %s", took, stallTimeout)
	}
	s = scrapeMetrics(t, metricsAddr)
	if v, _ := s.value("replicator_records_in_flight"); v < 1 {
		t.Errorf("replicator_records_in_flight = %v under a stalled broker, want > 0", v)
	}
	if v, _ := s.value("replicator_replication_lag_seconds"); v < 1 {
		t.Errorf("replicator_replication_lag_seconds = %v under a stalled broker, want >= 1", v)
	}
	stalled.Store(false)
	endStall()
	eventually(t, p, 90*time.Second, "/healthz recovering", func() (bool, string) {
		code, body := probe(t, metricsAddr, "/healthz")
		return code == http.StatusOK && records("c") == 110, fmt.Sprintf("%d %s, records c %v", code, body, records("c"))
	})

	p.stop(t)
	checkJSONLog(t, p.output.String())
}

var lsnText = regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+$`)

// checkJSONLog: with log.format json every line is JSON, LSNs are X/Y,
// and the streaming stats line came.
func checkJSONLog(t *testing.T, out string) {
	t.Helper()
	stats := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		for k, v := range rec {
			if strings.HasSuffix(k, "lsn") {
				if s, ok := v.(string); !ok || !lsnText.MatchString(s) {
					t.Errorf("log field %s = %v, want an LSN as X/Y: %q", k, v, line)
				}
			}
		}
		if rec["msg"] == "streaming stats" {
			stats++
			for _, k := range []string{"rows_per_second", "lag_bytes", "lag_seconds", "confirmed_lsn"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("stats line lacks %s: %q", k, line)
				}
			}
		}
	}
	if stats == 0 {
		t.Errorf("no streaming stats line in the log:\n%s", out)
	}
}

// dashboardMetric finds the metric names a PromQL expression uses.
var dashboardMetric = regexp.MustCompile(`\b(?:replicator|go|process)_[a-zA-Z0-9_]+`)

// checkDashboard fails for every metric docs/grafana-dashboard.json
// queries that none of the scrapes serves. With only run's scrape, the
// sink's metrics (replicator_sink_…) are left to TestSinkMetrics.
func checkDashboard(t *testing.T, scrapes ...scrape) {
	t.Helper()
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	served := func(name string) bool {
		if len(scrapes) == 1 && strings.HasPrefix(name, "replicator_sink_") {
			return true
		}
		for _, s := range scrapes {
			if s[name] != nil {
				return true
			}
			// A histogram's series: its family is served with them.
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if f := s[strings.TrimSuffix(name, suffix)]; strings.HasSuffix(name, suffix) && f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
					return true
				}
			}
		}
		return false
	}
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range dashboardMetric.FindAllString(tg.Expr, -1) {
				queries++
				if !served(name) {
					t.Errorf("dashboard panel %q queries %s, which /metrics does not serve", p.Title, name)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		q, _ := v.Query.(string)
		for _, name := range dashboardMetric.FindAllString(q, -1) {
			queries++
			if !served(name) {
				t.Errorf("dashboard variable query %q uses %s, which /metrics does not serve", q, name)
			}
		}
	}
	if queries == 0 {
		t.Error("docs/grafana-dashboard.json has no queries")
	}
}
