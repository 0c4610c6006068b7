package metrics

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/replicator/replicator/sink"
)

// fakeSink is a read model's sink as the metrics see it.
type fakeSink struct {
	name  string
	mu    sync.Mutex
	stats sink.Stats
	state sink.State
	parts []sink.PartitionProgress
}

func (f *fakeSink) Name() string { return f.name }
func (f *fakeSink) Stats() sink.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}
func (f *fakeSink) State() sink.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}
func (f *fakeSink) Partitions() []sink.PartitionProgress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sink.PartitionProgress(nil), f.parts...)
}
func (f *fakeSink) set(fn func(*fakeSink)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// /readyz holds while every read model consumes; /healthz fails for a
// read model with fetched records pending that applies nothing for longer
// than the bound, and recovers when it applies.
func TestSinksHealth(t *testing.T) {
	t.Parallel()
	a := &fakeSink{name: "a", state: sink.StateStarting}
	b := &fakeSink{name: "b", state: sink.StateRunning}
	m := NewSinks(10 * time.Second)
	m.Attach(a, b)
	h := &Health{}
	if err := m.AddTo(prometheus.NewRegistry(), h); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	if err := h.Ready(t0); err == nil || !strings.Contains(err.Error(), "read model a is starting") {
		t.Fatalf("ready with a starting: %v, want an error naming a", err)
	}
	a.set(func(f *fakeSink) { f.state = sink.StateRunning })
	if err := h.Ready(t0); err != nil {
		t.Fatalf("ready with both running: %v", err)
	}

	observe := func(s int) {
		h.mu.Lock()
		dogs := append([]*Watchdog(nil), h.dogs...)
		h.mu.Unlock()
		for _, w := range dogs {
			w.Observe(at(s))
		}
	}
	// b has caught up (lag 0): idle, healthy however long.
	b.set(func(f *fakeSink) {
		f.parts = []sink.PartitionProgress{{Topic: "t", Partition: 0, Next: 50, End: 50}}
	})
	observe(0)
	a.set(func(f *fakeSink) {
		f.parts = []sink.PartitionProgress{{Topic: "t", Partition: 0, Next: 10, End: 20}}
	})
	observe(1) // a: pending, nothing applied since: the stall starts
	observe(5)
	if err := h.Alive(at(11)); err != nil {
		t.Fatalf("stalled 10s, within the bound: %v", err)
	}
	if err := h.Alive(at(12)); err == nil || !strings.Contains(err.Error(), "read model a") || strings.Contains(err.Error(), "read model b") {
		t.Fatalf("a stalled 11s: got %v, want an error naming a only", err)
	}
	a.set(func(f *fakeSink) { f.stats.Records = 10; f.parts[0].Next = 20 })
	observe(13)
	if err := h.Alive(at(30)); err != nil {
		t.Fatalf("after a applied: %v", err)
	}
	b.set(func(f *fakeSink) { f.state = sink.StateFailed })
	if err := h.Ready(at(30)); err == nil || !strings.Contains(err.Error(), "read model b is failed") {
		t.Fatalf("ready with b failed: %v", err)
	}
}

// The sink metrics report each read model's counters, state and lag per
// partition, follow Prometheus conventions, and the batch observer fills
// the read model's histogram.
func TestSinksCollect(t *testing.T) {
	t.Parallel()
	a := &fakeSink{name: "a", state: sink.StateRunning,
		stats: sink.Stats{Batches: 3, Records: 42, DeadLettered: 1, Fenced: 2, Split: 1, Retries: 4},
		parts: []sink.PartitionProgress{{Topic: "t", Partition: 0, Next: 10, End: 25}, {Topic: "t", Partition: 1, Next: -1, End: 7}, {Topic: "t", Partition: 2, Next: -1, End: -1}}}
	m := NewSinks(time.Minute)
	m.Attach(a)
	m.Observer("a").ObserveBatch(42, 20*time.Millisecond)
	m.Observer("a").ObserveVisible(30 * time.Millisecond)
	m.Observer("a").ObserveVisible(2 * time.Second)
	want := `
# HELP replicator_sink_lag_records Records of an assigned partition not yet applied: its end offset (at the last fetch, or listed every 2 s while a batch takes longer) minus the offset stored with the rows.
# TYPE replicator_sink_lag_records gauge
replicator_sink_lag_records{partition="0",read_model="a",topic="t"} 15
replicator_sink_lag_records{partition="1",read_model="a",topic="t"} 7
replicator_sink_lag_records{partition="2",read_model="a",topic="t"} 0
# HELP replicator_sink_records_applied_total Records consumed and committed in the read-model store (dead-lettered ones included).
# TYPE replicator_sink_records_applied_total counter
replicator_sink_records_applied_total{read_model="a"} 42
# HELP replicator_sink_batches_total Batches (one per poll) committed in the read-model store, one transaction or, when split, several.
# TYPE replicator_sink_batches_total counter
replicator_sink_batches_total{read_model="a"} 3
# HELP replicator_sink_batches_split_total Batches the store rejected, applied again record by record (one transaction each) to find the culprit.
# TYPE replicator_sink_batches_split_total counter
replicator_sink_batches_split_total{read_model="a"} 1
# HELP replicator_sink_batches_fenced_total Batches rolled back because another sink process had moved the stored offsets.
# TYPE replicator_sink_batches_fenced_total counter
replicator_sink_batches_fenced_total{read_model="a"} 2
# HELP replicator_sink_batch_retries_total Attempts at a batch that failed because the read model's store or the schema registry was unavailable (retried with backoff).
# TYPE replicator_sink_batch_retries_total counter
replicator_sink_batch_retries_total{read_model="a"} 4
# HELP replicator_sink_read_model_failed 1 once the read model stopped with an error (the others go on; see the log).
# TYPE replicator_sink_read_model_failed gauge
replicator_sink_read_model_failed{read_model="a"} 0
# HELP replicator_sink_read_model_running 1 while the read model consumes, 0 while it starts or after it stopped.
# TYPE replicator_sink_read_model_running gauge
replicator_sink_read_model_running{read_model="a"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "replicator_sink_lag_records", "replicator_sink_records_applied_total",
		"replicator_sink_batches_total", "replicator_sink_batches_split_total", "replicator_sink_batches_fenced_total", "replicator_sink_batch_retries_total", "replicator_sink_read_model_failed", "replicator_sink_read_model_running"); err != nil {
		t.Error(err)
	}
	checkHistogram(t, "batch latency", m.latency, 1, 0.02)
	checkHistogram(t, "commit to visible", m.visible, 2, 2.03)
	for _, c := range []prometheus.Collector{m, m.latency, m.visible} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// checkHistogram checks that h has one series (read model a) of count
// observations summing to sum seconds.
func checkHistogram(t *testing.T, what string, h *prometheus.HistogramVec, count uint64, sum float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("%s: %v, want one histogram for read model a", what, mfs)
	}
	if got := mfs[0].GetMetric()[0].GetHistogram(); got.GetSampleCount() != count || got.GetSampleSum() != sum {
		t.Errorf("%s: %d samples summing to %v s, want %d of %v s", what, got.GetSampleCount(), got.GetSampleSum(), count, sum)
	}
}
