package metrics

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/replicator/replicator/sink"
)

// SinkSource is what the sink metrics read of one read model's sink
// (a *sink.Sink).
type SinkSource interface {
	Name() string
	Stats() sink.Stats
	State() sink.State
	Partitions() []sink.PartitionProgress
}

// Sinks is the collector and health of `replicator sink`: counters, lag
// per partition and state per read model, and the histograms of batch
// latency and of freshness (commit to visible). Safe for concurrent use.
type Sinks struct {
	stall   time.Duration
	latency *prometheus.HistogramVec
	visible *prometheus.HistogramVec
	descs   sinkDescs

	mu    sync.Mutex // guards sinks
	sinks []SinkSource
}

type sinkDescs struct {
	applied, deadLettered, batches, fenced, split, retries, lag, running, failed *prometheus.Desc
}

// NewSinks returns the sink collector. stall bounds how long a read model
// may apply nothing while fetched records wait before /healthz fails
// (metrics.stall_timeout).
func NewSinks(stall time.Duration) *Sinks {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Sinks{
		stall: stall,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "replicator_sink_batch_apply_seconds",
			Help:    "Time to decode, write and commit one batch (one poll's records) in the read-model store.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1 ms … ~60 s
		}, []string{"read_model"}),
		visible: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "replicator_sink_commit_to_visible_seconds",
			Help: "Per record written in the read model: from its commit in the source (its commit_ts header) to the commit of its batch in the read-model store. " +
				"Snapshot and republish rows carry the time of their snapshot or chunk; records without the header, and dead-lettered ones, are not counted; a stalled sink observes nothing.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 23), // 1 ms … ~70 min: a catch-up shows how far behind
		}, []string{"read_model"}),
		descs: sinkDescs{
			applied:      d("replicator_sink_records_applied_total", "Records consumed and committed in the read-model store (dead-lettered ones included).", "read_model"),
			deadLettered: d("replicator_sink_records_dead_lettered_total", "Poison records sent to the read model's dead-letter topic.", "read_model"),
			batches:      d("replicator_sink_batches_total", "Batches (one per poll) committed in the read-model store, one transaction or, when split, several.", "read_model"),
			fenced:       d("replicator_sink_batches_fenced_total", "Batches rolled back because another sink process had moved the stored offsets.", "read_model"),
			split:        d("replicator_sink_batches_split_total", "Batches the store rejected, applied again record by record (one transaction each) to find the culprit.", "read_model"),
			retries:      d("replicator_sink_batch_retries_total", "Attempts at a batch that failed because the read model's store or the schema registry was unavailable (retried with backoff).", "read_model"),
			lag:          d("replicator_sink_lag_records", "Records of an assigned partition not yet applied: its end offset (at the last fetch, or listed every 2 s while a batch takes longer) minus the offset stored with the rows.", "read_model", "topic", "partition"),
			running:      d("replicator_sink_read_model_running", "1 while the read model consumes, 0 while it starts or after it stopped.", "read_model"),
			failed:       d("replicator_sink_read_model_failed", "1 once the read model stopped with an error (the others go on; see the log).", "read_model"),
		},
	}
}

// Observer is name's batch observer, its histograms' children resolved once.
func (m *Sinks) Observer(name string) sink.BatchObserver {
	return batchObserver{apply: m.latency.WithLabelValues(name), visible: m.visible.WithLabelValues(name)}
}

type batchObserver struct{ apply, visible prometheus.Observer }

func (b batchObserver) ObserveBatch(_ int, took time.Duration) { b.apply.Observe(took.Seconds()) }

func (b batchObserver) ObserveVisible(d time.Duration) { b.visible.Observe(d.Seconds()) }

// Attach adds the read models' sinks (before the server is started or
// after: a scrape sees those attached by then).
func (m *Sinks) Attach(sinks ...SinkSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sinks = append(m.sinks, sinks...)
}

func (m *Sinks) all() []SinkSource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]SinkSource(nil), m.sinks...)
}

// AddTo registers the collector and its health checks: ready while every
// read model consumes; alive unless a read model has fetched records
// pending and has applied nothing for longer than the stall bound.
func (m *Sinks) AddTo(reg prometheus.Registerer, h *Health) error {
	if err := reg.Register(m); err != nil {
		return fmt.Errorf("register sink metrics: %w", err)
	}
	for _, c := range []prometheus.Collector{m.latency, m.visible} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register sink metrics: %w", err)
		}
	}
	h.AddReady("sink", m.ready)
	for _, s := range m.all() {
		h.AddWatchdog("read model "+s.Name(), &Watchdog{
			Bound: m.stall,
			What:  "records fetched and none applied",
			Pending: func() bool {
				if s.State() != sink.StateRunning {
					return false
				}
				for _, p := range s.Partitions() {
					if p.Lag() > 0 {
						return true
					}
				}
				return false
			},
			Progress: func() uint64 { return uint64(s.Stats().Records) },
		})
	}
	return nil
}

func (m *Sinks) ready(time.Time) error {
	sinks := m.all()
	if len(sinks) == 0 {
		return fmt.Errorf("starting")
	}
	for _, s := range sinks {
		if st := s.State(); st != sink.StateRunning {
			return fmt.Errorf("read model %s is %s", s.Name(), st)
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *Sinks) Describe(ch chan<- *prometheus.Desc) {
	d := &m.descs
	for _, desc := range []*prometheus.Desc{d.applied, d.deadLettered, d.batches, d.fenced, d.split, d.retries, d.lag, d.running, d.failed} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector: it reads the counters now.
func (m *Sinks) Collect(ch chan<- prometheus.Metric) {
	d := &m.descs
	for _, s := range m.all() {
		name := s.Name()
		st := s.Stats()
		ch <- prometheus.MustNewConstMetric(d.applied, prometheus.CounterValue, float64(st.Records), name)
		ch <- prometheus.MustNewConstMetric(d.deadLettered, prometheus.CounterValue, float64(st.DeadLettered), name)
		ch <- prometheus.MustNewConstMetric(d.batches, prometheus.CounterValue, float64(st.Batches), name)
		ch <- prometheus.MustNewConstMetric(d.fenced, prometheus.CounterValue, float64(st.Fenced), name)
		ch <- prometheus.MustNewConstMetric(d.split, prometheus.CounterValue, float64(st.Split), name)
		ch <- prometheus.MustNewConstMetric(d.retries, prometheus.CounterValue, float64(st.Retries), name)
		state := s.State()
		ch <- prometheus.MustNewConstMetric(d.running, prometheus.GaugeValue, b2f(state == sink.StateRunning), name)
		ch <- prometheus.MustNewConstMetric(d.failed, prometheus.GaugeValue, b2f(state == sink.StateFailed), name)
		for _, p := range s.Partitions() {
			ch <- prometheus.MustNewConstMetric(d.lag, prometheus.GaugeValue, float64(p.Lag()), name, p.Topic, strconv.Itoa(int(p.Partition)))
		}
	}
}
