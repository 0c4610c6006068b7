package pipeline

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Stats is what the pipeline has done so far, for metrics and the periodic
// log line (see [Pipeline.Stats]). Counters only grow.
type Stats struct {
	// Records are the records handed to the producer, by entity (the
	// source's TableIndex).
	Records []OpCounts
	// InFlight are records handed to the producer whose promise has not
	// run yet.
	InFlight int64
	// Acknowledged are records Kafka acknowledged; ProduceErrors those it
	// refused (the first one stops the pipeline).
	Acknowledged, ProduceErrors uint64
	// BackPressure is the time Handle spent waiting for room in the
	// producer's buffer (see [WithBufferLimit]).
	BackPressure time.Duration
}

// OpCounts counts an entity's records by the op header they carry: a
// tombstone (delete, the old key of a key change, a TRUNCATE) is a Delete.
type OpCounts struct {
	Insert, Update, Delete, Snapshot uint64
}

// counters are the pipeline's share of Stats, one atomic add per record:
// cheap enough for the hot path, read only when Stats is called.
type counters struct {
	records      [][4]atomic.Uint64 // by entity, by opSlot
	acked        atomic.Uint64
	failed       atomic.Uint64
	backPressure atomic.Int64 // nanoseconds
}

func newCounters(entities int) counters {
	return counters{records: make([][4]atomic.Uint64, entities)}
}

// opSlot maps the op a record carries to its slot in counters.records.
func opSlot(op source.Op) int {
	switch op {
	case source.OpInsert:
		return 0
	case source.OpUpdate:
		return 1
	case source.OpSnapshot:
		return 3
	default: // delete, and the tombstones of a TRUNCATE
		return 2
	}
}

// count records n records of entity i with op.
func (p *Pipeline) count(i int, op source.Op, n uint64) {
	p.counters.records[i][opSlot(op)].Add(n)
}

// Stats returns the counters now. Safe for concurrent use.
func (p *Pipeline) Stats() Stats {
	c := &p.counters
	s := Stats{
		Records:       make([]OpCounts, len(c.records)),
		InFlight:      p.inFlight.Load(),
		Acknowledged:  c.acked.Load(),
		ProduceErrors: c.failed.Load(),
		BackPressure:  time.Duration(c.backPressure.Load()),
	}
	for i := range c.records {
		r := &c.records[i]
		s.Records[i] = OpCounts{Insert: r[0].Load(), Update: r[1].Load(), Delete: r[2].Load(), Snapshot: r[3].Load()}
	}
	return s
}

// WithBufferLimit tells the pipeline the producer's buffer size
// (kafka.max_buffered_records): a Produce while that many records are in
// flight blocks, and only then is the wait timed (Stats.BackPressure), so
// the clock is not read per record. Without it BackPressure stays 0.
func WithBufferLimit(n int) Option { return func(p *Pipeline) { p.bufferLimit = int64(n) } }

// produceTimed is Produce when the buffer is full: the wait is
// back-pressure.
func (p *Pipeline) produceTimed(ctx context.Context, r *kgo.Record) {
	start := time.Now()
	p.prod.Produce(ctx, r, p.promise)
	p.counters.backPressure.Add(int64(time.Since(start)))
}
