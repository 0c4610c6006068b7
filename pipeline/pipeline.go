// Package pipeline turns source changes into entity records and produces
// them to Kafka: one record per insert, update or snapshot row keyed by the
// entity key, a tombstone per delete, and for a key change a tombstone of
// the old key followed by the new record. It acknowledges a change to the
// source only when Kafka has acknowledged every record made from it.
package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record header names. Change metadata lives here, never in the value.
const (
	HeaderOp         = "op"        // c, u, d, r (see source.Op)
	HeaderLSN        = "lsn"       // commit LSN, PostgreSQL's X/X form
	HeaderCommitTime = "commit_ts" // RFC 3339 with microseconds, UTC
	HeaderXID        = "xid"       // transaction id (absent for snapshot rows)
)

// producer is the part of *kgo.Client the pipeline uses. Produce blocks when
// the client's buffer is full: that is the back-pressure on the stream.
type producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

// Entity is one configured entity with its registered schema ids, at the
// TableIndex the source reports for its table.
type Entity struct {
	Mapping       *mapping.Entity
	KeySchemaID   int
	ValueSchemaID int
}

// Pipeline is a source.Handler. Handle is called from one goroutine;
// promises run on the producer's goroutines.
type Pipeline struct {
	entities []Entity
	prod     producer

	// failure holds the first produce error; once set every Handle and
	// Flush fails with it and nothing after it is acknowledged.
	failure atomic.Pointer[error]

	// inFlight counts records handed to the producer whose promise has not
	// returned; settled gets a token each time it drops to zero. Flush
	// waits on these because kgo's Flush does not: a record that fails
	// before it is buffered (larger than the buffer, context canceled
	// while Produce blocked) has its promise run later on another
	// goroutine, after Flush may already have returned.
	inFlight atomic.Int64
	settled  chan struct{}

	pairs sync.Pool // *pairAck for key changes

	// Used by Handle only (one goroutine), to save per-record work.
	scratch []byte      // encoding buffer; each record gets an exact-size copy
	hdr     headerCache // the current transaction's header values
}

// New returns a pipeline producing with prod. entities is indexed by the
// source's TableIndex.
func New(entities []Entity, prod producer) *Pipeline {
	p := &Pipeline{entities: entities, prod: prod, settled: make(chan struct{}, 1)}
	p.pairs.New = func() any { return new(pairAck) }
	return p
}

// Err returns the first produce failure, if any.
func (p *Pipeline) Err() error {
	if e := p.failure.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *Pipeline) fail(err error) {
	p.failure.CompareAndSwap(nil, &err)
}

// Handle maps one change to its records and hands them to the producer.
func (p *Pipeline) Handle(ctx context.Context, c *source.Change) error {
	return p.handle(ctx, c, c.Ack)
}

// handle is Handle acknowledging through ack: c.Ack in production, a
// counting acker in tests (source.Ack values can only come from the source).
func (p *Pipeline) handle(ctx context.Context, c *source.Change, ack acker) error {
	if err := p.Err(); err != nil {
		return err
	}
	if c.TableIndex < 0 || c.TableIndex >= len(p.entities) {
		return fmt.Errorf("change for table index %d: no such entity", c.TableIndex)
	}
	e := &p.entities[c.TableIndex]
	headers := p.hdr.headers(c)
	switch c.Op {
	case source.OpInsert, source.OpSnapshot:
		r, err := p.upsert(e, c, c.New, headers)
		if err != nil {
			return err
		}
		p.produce(ctx, r, ack)
	case source.OpUpdate:
		r, err := p.upsert(e, c, c.New, headers)
		if err != nil {
			return err
		}
		if c.Old != nil {
			oldKey, err := p.key(e, c, c.Old)
			if err != nil {
				return err
			}
			if !bytes.Equal(oldKey, r.Key) {
				// Same partition only if the keys hash alike; order across the
				// two keys does not matter, each key's own order does.
				pair := p.pairs.Get().(*pairAck)
				pair.ack = ack
				pair.left.Store(2)
				pair.pool = &p.pairs
				p.produce(ctx, p.tombstone(e, oldKey, headers), pair)
				p.produce(ctx, r, pair)
				return nil
			}
		}
		p.produce(ctx, r, ack)
	case source.OpDelete:
		if c.Old == nil {
			return fmt.Errorf("delete from %s at LSN %s: PostgreSQL sent no old key (REPLICA IDENTITY NOTHING?): set REPLICA IDENTITY DEFAULT or FULL", c.Table.QualifiedName(), c.LSN)
		}
		key, err := p.key(e, c, c.Old)
		if err != nil {
			return err
		}
		p.produce(ctx, p.tombstone(e, key, headers), ack)
	default:
		return fmt.Errorf("change for %s: unknown op %d", c.Table.QualifiedName(), c.Op)
	}
	return nil
}

// Flush waits until every record handed to the producer is acknowledged
// or failed, and returns the first failure.
func (p *Pipeline) Flush(ctx context.Context) error {
	if err := p.prod.Flush(ctx); err != nil {
		return fmt.Errorf("flush producer: %w", err)
	}
	for p.inFlight.Load() > 0 {
		select {
		case <-p.settled: // may be stale: check again
		case <-ctx.Done():
			return fmt.Errorf("flush producer: %w", ctx.Err())
		}
	}
	return p.Err()
}

// acker is told once per record a change produced: source.Ack for a change
// with one record, pairAck for a key change.
type acker interface{ Done() }

func (p *Pipeline) produce(ctx context.Context, r *kgo.Record, a acker) {
	p.inFlight.Add(1)
	p.prod.Produce(ctx, r, func(r *kgo.Record, err error) {
		if err != nil {
			p.fail(fmt.Errorf("produce to %s: %w", r.Topic, err))
		} else {
			a.Done()
		}
		if p.inFlight.Add(-1) == 0 {
			select {
			case p.settled <- struct{}{}:
			default: // a token is already waiting
			}
		}
	})
}

func (p *Pipeline) upsert(e *Entity, c *source.Change, row []any, headers []kgo.RecordHeader) (*kgo.Record, error) {
	key, err := p.key(e, c, row)
	if err != nil {
		return nil, err
	}
	value := mapping.AppendConfluentHeader(p.scratch[:0], e.ValueSchemaID)
	value, err = e.Mapping.AppendValue(value, row)
	p.scratch = value
	if err != nil {
		return nil, fmt.Errorf("encode value of %s key %s at LSN %s: %w", c.Table.QualifiedName(), keyText(e, c, row), c.LSN, err)
	}
	return &kgo.Record{Topic: e.Mapping.Topic(), Key: key, Value: bytes.Clone(value), Headers: headers}, nil
}

// key encodes the record key. Like the value it is encoded into the
// scratch buffer and copied out at its exact size: growing a fresh buffer
// per record cost more (allocations and copies) and left slack capacity in
// every buffered record.
func (p *Pipeline) key(e *Entity, c *source.Change, row []any) ([]byte, error) {
	key := mapping.AppendConfluentHeader(p.scratch[:0], e.KeySchemaID)
	key, err := e.Mapping.AppendKey(key, row)
	p.scratch = key
	if err != nil {
		return nil, fmt.Errorf("encode key of %s at LSN %s: %w", c.Table.QualifiedName(), c.LSN, err)
	}
	return bytes.Clone(key), nil
}

func (p *Pipeline) tombstone(e *Entity, key []byte, headers []kgo.RecordHeader) *kgo.Record {
	h := make([]kgo.RecordHeader, len(headers))
	copy(h, headers)
	h[0].Value = opDelete
	return &kgo.Record{Topic: e.Mapping.Topic(), Key: key, Headers: h}
}

var (
	opBytes = map[source.Op][]byte{
		source.OpInsert: []byte("c"), source.OpUpdate: []byte("u"),
		source.OpDelete: []byte("d"), source.OpSnapshot: []byte("r"),
	}
	opDelete = []byte("d")
)

// headerCache formats a transaction's header values once for all of its
// changes: they share LSN, commit time and XID, and formatting them per
// record was about a tenth of the stream's CPU (docs/PERFORMANCE-NOTES.md).
// The values are shared by the records of the transaction, so nothing may
// modify a header value in place (tombstone replaces one instead).
type headerCache struct {
	valid      bool
	lsn        pglogrepl.LSN
	commitTime time.Time
	xid        uint32
	lsnText    []byte
	timeText   []byte
	xidText    []byte
}

func (hc *headerCache) headers(c *source.Change) []kgo.RecordHeader {
	if !hc.valid || c.LSN != hc.lsn || c.XID != hc.xid || !c.CommitTime.Equal(hc.commitTime) {
		*hc = headerCache{
			valid: true, lsn: c.LSN, commitTime: c.CommitTime, xid: c.XID,
			lsnText:  []byte(c.LSN.String()),
			timeText: c.CommitTime.UTC().AppendFormat(nil, "2006-01-02T15:04:05.000000Z07:00"),
		}
		if c.XID != 0 {
			hc.xidText = strconv.AppendUint(nil, uint64(c.XID), 10)
		}
	}
	h := make([]kgo.RecordHeader, 0, 4)
	h = append(h,
		kgo.RecordHeader{Key: HeaderOp, Value: opBytes[c.Op]},
		kgo.RecordHeader{Key: HeaderLSN, Value: hc.lsnText},
		kgo.RecordHeader{Key: HeaderCommitTime, Value: hc.timeText},
	)
	if c.XID != 0 {
		h = append(h, kgo.RecordHeader{Key: HeaderXID, Value: hc.xidText})
	}
	return h
}

// keyText renders the key columns for an error message. Keys are
// identifiers, not row contents, so they may appear in errors.
func keyText(e *Entity, c *source.Change, row []any) string {
	var b bytes.Buffer
	for i, name := range e.Mapping.KeyColumns() {
		if i > 0 {
			b.WriteString(", ")
		}
		if _, idx, ok := c.Table.Column(name); ok {
			fmt.Fprintf(&b, "%v", row[idx])
		}
	}
	return b.String()
}

// pairAck acknowledges a change after both of its records (old-key
// tombstone and new record) are durable.
type pairAck struct {
	ack  acker
	left atomic.Int32
	pool *sync.Pool
}

func (a *pairAck) Done() {
	if a.left.Add(-1) == 0 {
		ack := a.ack
		a.ack = nil
		a.pool.Put(a)
		ack.Done()
	}
}
