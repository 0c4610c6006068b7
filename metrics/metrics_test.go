package metrics

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/replicator/replicator/pipeline"
	"github.com/replicator/replicator/source"
)

func TestWatchdog(t *testing.T) {
	t.Parallel()
	var pending atomic.Bool
	var acked atomic.Uint64
	w := &Watchdog{Bound: 10 * time.Second, What: "stuck", Pending: pending.Load, Progress: acked.Load}
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	w.Observe(at(0)) // idle
	if err := w.Check(at(60)); err != nil {
		t.Fatalf("idle loop reported unhealthy: %v", err)
	}
	pending.Store(true)
	w.Observe(at(60)) // work pending, no progress: the stall starts
	w.Observe(at(65))
	if err := w.Check(at(70)); err != nil {
		t.Fatalf("stalled 10s, within the bound: %v", err)
	}
	if err := w.Check(at(71)); err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("stalled 11s, bound 10s: got %v, want an error naming the stall", err)
	}
	acked.Add(1)
	w.Observe(at(72)) // progress
	if err := w.Check(at(80)); err != nil {
		t.Fatalf("after progress: %v", err)
	}
	pending.Store(false)
	w.Observe(at(90))
	if err := w.Check(at(200)); err != nil {
		t.Fatalf("nothing pending: %v", err)
	}
}

func TestLagOf(t *testing.T) {
	t.Parallel()
	now := time.Unix(2000, 0)
	for _, tt := range []struct {
		name string
		rep  source.Report
		slot *source.SlotStatus
		want Lag
	}{
		{name: "caught up", rep: source.Report{ConfirmedLSN: 100, ServerWALEnd: 100}, want: Lag{}},
		{name: "keepalive ahead", rep: source.Report{ConfirmedLSN: 100, ServerWALEnd: 150, PendingSince: now.Add(-3 * time.Second)}, want: Lag{Bytes: 50, Seconds: 3}},
		{name: "slot poll ahead of the keepalive", rep: source.Report{ConfirmedLSN: 100, ServerWALEnd: 150}, slot: &source.SlotStatus{CurrentLSN: 400}, want: Lag{Bytes: 300}},
		{name: "confirmed ahead of a stale poll", rep: source.Report{ConfirmedLSN: 500, ServerWALEnd: 150}, slot: &source.SlotStatus{CurrentLSN: 400}, want: Lag{}},
		{name: "not streaming yet", rep: source.Report{}, slot: &source.SlotStatus{CurrentLSN: 400}, want: Lag{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := LagOf(now, tt.rep, tt.slot); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeParts is what a running source and pipeline would report.
type fakeParts struct {
	mu   sync.Mutex // guards rep and ps
	rep  source.Report
	ps   pipeline.Stats
	busy time.Time
}

func (f *fakeParts) report() source.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rep
}

func (f *fakeParts) stats() pipeline.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ps
}

func (f *fakeParts) set(fn func(*fakeParts)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The server answers from the start: not ready until attached and
// streaming, unhealthy while the stream loop is stuck in a hand-over, and
// /metrics reads the counters at scrape time.
func TestServer(t *testing.T) {
	t.Parallel()
	reg := NewRegistry("v1.2.3", "abc", "go1.26")
	health := &Health{}
	schemas := &SchemaCounter{}
	r := NewReplication(5*time.Second, nil, schemas)
	if err := r.AddTo(reg, health); err != nil {
		t.Fatal(err)
	}
	srv, err := Listen("127.0.0.1:0", reg, health, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	base := "http://" + srv.Addr()

	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before attach: %d %q, want 503 starting", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before attach: %d, want 200", code)
	}

	f := &fakeParts{rep: source.Report{Phase: source.PhaseSnapshot}}
	r.Attach(f.report, f.stats, []string{"orders"})
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "snapshot") {
		t.Errorf("/readyz during the snapshot: %d %q, want 503 snapshot", code, body)
	}
	f.set(func(f *fakeParts) {
		f.rep = source.Report{Phase: source.PhaseStreaming, ConfirmedLSN: pglogrepl.LSN(0x1000), ServerWALEnd: pglogrepl.LSN(0x1800), Rows: 7}
		f.ps = pipeline.Stats{Records: []pipeline.OpCounts{{Insert: 3, Update: 2, Delete: 1, Snapshot: 40}}, InFlight: 2, Acknowledged: 44, BackPressure: 1500 * time.Millisecond}
	})
	schemas.Add(2)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while streaming: %d, want 200", code)
	}
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`replicator_records_produced_total{entity="orders",op="c"} 3`,
		`replicator_records_produced_total{entity="orders",op="r"} 40`,
		`replicator_records_produced_total{entity="orders",op="d"} 1`,
		`replicator_records_in_flight 2`,
		`replicator_records_acknowledged_total 44`,
		`replicator_backpressure_seconds_total 1.5`,
		`replicator_confirmed_lsn 4096`,
		`replicator_replication_lag_bytes 2048`,
		`replicator_ready 1`,
		`replicator_source_phase{phase="streaming"} 1`,
		`replicator_schema_registrations_total 2`,
		`replicator_build_info{commit="abc",go_version="go1.26",version="v1.2.3"} 1`,
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A hand-over that has lasted beyond the bound: the loop is stuck.
	f.set(func(f *fakeParts) { f.rep.HandoverSince = time.Now().Add(-time.Minute) })
	if code, body := get(t, base+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "blocked") {
		t.Errorf("/healthz with the stream loop stuck: %d %q, want 503 naming it", code, body)
	}
	f.set(func(f *fakeParts) { f.rep.HandoverSince, f.rep.LoopAt = time.Time{}, time.Now() })
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after the hand-over: %d, want 200", code)
	}
	// A loop that stopped coming round to receive, wherever it is stuck.
	f.set(func(f *fakeParts) { f.rep.LoopAt = time.Now().Add(-time.Minute) })
	if code, body := get(t, base+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "come round to receive") {
		t.Errorf("/healthz with the stream loop gone: %d %q, want 503 naming it", code, body)
	}

	stop()
	if err := <-done; err != nil {
		t.Errorf("Run after stop: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the listener still answers after Run returned")
	}
}

// The metric names follow Prometheus conventions (promlint).
func TestMetricNamesLint(t *testing.T) {
	t.Parallel()
	r := NewReplication(time.Minute, nil, &SchemaCounter{})
	f := &fakeParts{rep: source.Report{Phase: source.PhaseStreaming, Snapshot: []source.TableProgress{{Table: "public.orders", Done: 5, Estimate: 10}}},
		ps: pipeline.Stats{Records: []pipeline.OpCounts{{}}}}
	r.Attach(f.report, f.stats, []string{"orders"})
	problems, err := testutil.CollectAndLint(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The stats line comes while streaming, with rows per second, lag and the
// confirmed LSN as X/Y.
func TestStatsLog(t *testing.T) {
	t.Parallel()
	r := NewReplication(time.Minute, nil, &SchemaCounter{})
	f := &fakeParts{rep: source.Report{Phase: source.PhaseSnapshot}}
	r.Attach(f.report, f.stats, []string{"orders"})
	var mu sync.Mutex // guards buf
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if lsn, ok := a.Value.Any().(pglogrepl.LSN); ok {
			a.Value = slog.StringValue(lsn.String())
		}
		return a
	}}))
	sl := NewStatsLog(0, r, log) // raised to MinStatsInterval
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	defer func() {
		stop()
		<-done
	}()
	text := func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
	// Rows grow with time, as in a busy stream.
	start := time.Now()
	f.set(func(f *fakeParts) {
		f.rep = source.Report{Phase: source.PhaseStreaming, ConfirmedLSN: 0x16B3748, ServerWALEnd: 0x16B3848}
	})
	r.Attach(func() source.Report {
		rep := f.report()
		rep.Rows = uint64(time.Since(start).Milliseconds())
		return rep
	}, f.stats, []string{"orders"})
	deadline := time.Now().Add(30 * time.Second)
	var n int
	for n < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than two stats lines within 30s:\n%s", text())
		}
		time.Sleep(100 * time.Millisecond) // poll interval
		n = strings.Count(text(), LogStatsLine)
	}
	out := text()
	for _, want := range []string{`"confirmed_lsn":"0/16B3748"`, `"lag_bytes":256`, `"rows_per_second":`, `"lag_seconds":0`} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lines lack %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"rows_per_second":0,`) && strings.Count(out, `"rows_per_second":0,`) == n {
		t.Errorf("every stats line says 0 rows/s although rows grew:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stuckGatherer's Gather waits until release is closed, after saying on
// entered that a scrape is in it.
type stuckGatherer struct{ entered, release chan struct{} }

func (g stuckGatherer) Gather() ([]*dto.MetricFamily, error) {
	close(g.entered)
	<-g.release
	return nil, nil
}

// TestServerStopsCleanlyDuringAStuckScrape: a stop while a scrape hangs
// closes it after the shutdown timeout and Run returns nil: a monitoring
// request never makes a clean stop exit non-zero.
func TestServerStopsCleanlyDuringAStuckScrape(t *testing.T) {
	t.Parallel()
	g := stuckGatherer{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(g.release)
	srv, err := Listen("127.0.0.1:0", g, &Health{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.shutdown = 100 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		if resp, err := http.Get("http://" + srv.Addr() + "/metrics"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the scrape never reached the gatherer")
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a stop during a stuck scrape: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the stop")
	}
	select {
	case <-scraped:
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck scrape's connection was not closed")
	}
}
