package metrics

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/replicator/replicator/pipeline"
	"github.com/replicator/replicator/source"
)

// Replication is the collector and health of `run`. Its sources are
// attached once built (Attach); until then it reports only that the
// process is starting, so the listener can serve from the first moment.
// Safe for concurrent use.
type Replication struct {
	stall   time.Duration
	slot    *SlotPoller // nil: no slot metrics
	schemas *SchemaCounter
	parts   atomic.Pointer[replicationParts]
	descs   replicationDescs
}

type replicationParts struct {
	source   func() source.Report
	pipeline func() pipeline.Stats
	entities []string // by the source's TableIndex
}

// NewReplication returns the collector of `run`. stall bounds how long the
// stream may make no progress while it has work pending before /healthz
// fails (metrics.stall_timeout). slot may be nil.
func NewReplication(stall time.Duration, slot *SlotPoller, schemas *SchemaCounter) *Replication {
	return &Replication{stall: stall, slot: slot, schemas: schemas, descs: newReplicationDescs()}
}

// Attach sets where the statistics come from: the source's and the
// pipeline's, and the entity names by the source's TableIndex.
func (r *Replication) Attach(src func() source.Report, pipe func() pipeline.Stats, entities []string) {
	r.parts.Store(&replicationParts{source: src, pipeline: pipe, entities: entities})
}

// AddTo registers the collector and its health checks.
func (r *Replication) AddTo(reg prometheus.Registerer, h *Health) error {
	if err := reg.Register(r); err != nil {
		return fmt.Errorf("register replication metrics: %w", err)
	}
	h.AddReady("stream", r.ready)
	h.AddCheck("stream", r.loop)
	h.AddWatchdog("producer", &Watchdog{
		Bound: r.stall,
		What:  "records in flight and none acknowledged by Kafka",
		Pending: func() bool {
			p := r.parts.Load()
			return p != nil && p.pipeline().InFlight > 0
		},
		Progress: func() uint64 {
			if p := r.parts.Load(); p != nil {
				return p.pipeline().Acknowledged
			}
			return 0
		},
	})
	return nil
}

func (r *Replication) ready(time.Time) error {
	p := r.parts.Load()
	if p == nil {
		return errors.New("starting")
	}
	if ph := p.source().Phase; ph != source.PhaseStreaming {
		return errors.New(ph.String())
	}
	return nil
}

// loop fails while the stream loop has not come round to receive for
// longer than the bound: blocked handing one change over (back-pressure
// from a stalled broker, a registry that does not answer) or anywhere
// else. It is not reading the stream.
func (r *Replication) loop(now time.Time) error {
	p := r.parts.Load()
	if p == nil {
		return nil
	}
	rep := p.source()
	if since := rep.HandoverSince; !since.IsZero() && now.Sub(since) > r.stall {
		return fmt.Errorf("the stream loop has been blocked handing one change to the pipeline for %s (bound %s): Kafka is not taking records (see replicator_records_in_flight, replicator_backpressure_seconds_total)",
			now.Sub(since).Round(time.Second), r.stall)
	}
	if rep.Phase == source.PhaseStreaming && !rep.LoopAt.IsZero() && now.Sub(rep.LoopAt) > r.stall {
		return fmt.Errorf("the stream loop has not come round to receive for %s (bound %s)", now.Sub(rep.LoopAt).Round(time.Second), r.stall)
	}
	return nil
}

// Lag is how far behind the stream is.
type Lag struct {
	// Bytes is the server's WAL end (the newer of the last keepalive's
	// and the slot poll's pg_current_wal_lsn) minus the confirmed LSN.
	Bytes uint64
	// Seconds is the time since the commit of the oldest transaction not
	// yet acknowledged, 0 when every received one is: in a steady stream,
	// now minus the commit time of the last acknowledged transaction.
	Seconds float64
}

// LagOf computes the lag from a source report and, when known, the slot's
// last poll.
func LagOf(now time.Time, rep source.Report, slot *source.SlotStatus) Lag {
	end := rep.ServerWALEnd
	if slot != nil && slot.CurrentLSN > end {
		end = slot.CurrentLSN
	}
	var l Lag
	if rep.ConfirmedLSN != 0 && end > rep.ConfirmedLSN {
		l.Bytes = uint64(end - rep.ConfirmedLSN)
	}
	if !rep.PendingSince.IsZero() {
		l.Seconds = max(0, now.Sub(rep.PendingSince).Seconds())
	}
	return l
}

type replicationDescs struct {
	ready, phase, lagBytes, lagSeconds, confirmed, rows, reconnects *prometheus.Desc
	snapDone, snapTotal                                             *prometheus.Desc
	records, acked, errors, inFlight, backPressure                  *prometheus.Desc
	schemas                                                         *prometheus.Desc
	slotActive, slotRetained, slotPollErrors                        *prometheus.Desc
}

func newReplicationDescs() replicationDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return replicationDescs{
		ready:      d("replicator_ready", "1 while the replicator streams changes (what /readyz says), 0 while it starts, snapshots or reconnects."),
		phase:      d("replicator_source_phase", "1 for the phase the source is in (starting, snapshot, streaming), 0 for the others.", "phase"),
		lagBytes:   d("replicator_replication_lag_bytes", "Server WAL end minus the confirmed LSN."),
		lagSeconds: d("replicator_replication_lag_seconds", "Seconds since the commit of the oldest transaction not yet acknowledged by Kafka; 0 when caught up."),
		confirmed:  d("replicator_confirmed_lsn", "LSN up to which every change is acknowledged by Kafka (as a number; confirmed to PostgreSQL every source.status_interval)."),
		rows:       d("replicator_source_rows_total", "Row changes read from the replication stream and handed to the pipeline."),
		reconnects: d("replicator_source_reconnects_total", "Reconnections to PostgreSQL after a lost connection or a held slot."),
		snapDone:   d("replicator_snapshot_rows_read_total", "Rows of the initial snapshot, or of the latest republish once one has started, handed to the pipeline, per table.", "table"),
		snapTotal:  d("replicator_snapshot_rows_estimated", "PostgreSQL's estimate of the rows of each table of that snapshot or republish (pg_class.reltuples; -1 unknown).", "table"),
		records:    d("replicator_records_produced_total", "Records handed to the Kafka producer, per entity and op header (c, u, d, r; every tombstone is d).", "entity", "op"),
		acked:      d("replicator_records_acknowledged_total", "Records Kafka acknowledged."),
		errors:     d("replicator_produce_errors_total", "Records Kafka refused; the first stops the replicator."),
		inFlight:   d("replicator_records_in_flight", "Records handed to the producer and not yet acknowledged."),
		backPressure: d("replicator_backpressure_seconds_total",
			"Time the stream spent waiting for room in the producer's buffer (kafka.max_buffered_records)."),
		schemas:        d("replicator_schema_registrations_total", "Schema registrations (key and value at start-up, new versions when a table's shape changes)."),
		slotActive:     d("replicator_slot_active", "1 when the replication slot is held by a walsender (pg_replication_slots.active)."),
		slotRetained:   d("replicator_slot_retained_wal_bytes", "WAL the replication slot keeps on the server: pg_current_wal_lsn() minus restart_lsn."),
		slotPollErrors: d("replicator_slot_poll_errors_total", "Failed reads of pg_replication_slots by the slot poller."),
	}
}

// Describe implements prometheus.Collector.
func (r *Replication) Describe(ch chan<- *prometheus.Desc) {
	d := &r.descs
	for _, desc := range []*prometheus.Desc{
		d.ready, d.phase, d.lagBytes, d.lagSeconds, d.confirmed, d.rows, d.reconnects,
		d.snapDone, d.snapTotal, d.records, d.acked, d.errors, d.inFlight, d.backPressure,
		d.schemas, d.slotActive, d.slotRetained, d.slotPollErrors,
	} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector: it reads the counters now.
func (r *Replication) Collect(ch chan<- prometheus.Metric) {
	d := &r.descs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	if r.schemas != nil {
		counter(d.schemas, float64(r.schemas.Count()))
	}
	var slot *source.SlotStatus
	if r.slot != nil {
		st, ok, errs := r.slot.Last()
		counter(d.slotPollErrors, float64(errs))
		if ok && st.Exists {
			slot = &st
			gauge(d.slotActive, b2f(st.Active))
			gauge(d.slotRetained, float64(st.RetainedBytes()))
		}
	}
	p := r.parts.Load()
	if p == nil {
		gauge(d.ready, 0)
		for _, ph := range []source.Phase{source.PhaseStarting, source.PhaseSnapshot, source.PhaseStreaming} {
			gauge(d.phase, b2f(ph == source.PhaseStarting), ph.String())
		}
		return
	}
	rep := p.source()
	gauge(d.ready, b2f(rep.Phase == source.PhaseStreaming))
	for _, ph := range []source.Phase{source.PhaseStarting, source.PhaseSnapshot, source.PhaseStreaming} {
		gauge(d.phase, b2f(ph == rep.Phase), ph.String())
	}
	lag := LagOf(time.Now(), rep, slot)
	gauge(d.lagBytes, float64(lag.Bytes))
	gauge(d.lagSeconds, lag.Seconds)
	gauge(d.confirmed, float64(rep.ConfirmedLSN))
	counter(d.rows, float64(rep.Rows))
	counter(d.reconnects, float64(rep.Reconnects))
	for _, t := range rep.Snapshot {
		counter(d.snapDone, float64(t.Done), t.Table)
		gauge(d.snapTotal, float64(t.Estimate), t.Table)
	}
	ps := p.pipeline()
	for i, c := range ps.Records {
		name := fmt.Sprint(i)
		if i < len(p.entities) {
			name = p.entities[i]
		}
		counter(d.records, float64(c.Insert), name, source.OpInsert.String())
		counter(d.records, float64(c.Update), name, source.OpUpdate.String())
		counter(d.records, float64(c.Delete), name, source.OpDelete.String())
		counter(d.records, float64(c.Snapshot), name, source.OpSnapshot.String())
	}
	counter(d.acked, float64(ps.Acknowledged))
	counter(d.errors, float64(ps.ProduceErrors))
	gauge(d.inFlight, float64(ps.InFlight))
	counter(d.backPressure, ps.BackPressure.Seconds())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
