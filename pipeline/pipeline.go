// Package pipeline turns source changes into entity records and produces
// them to Kafka: one record per insert, update or snapshot row keyed by the
// entity key, a tombstone per delete, and for a key change a tombstone of
// the old key followed by the new record. It acknowledges a change to the
// source only when Kafka has acknowledged every record made from it.
package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kgo"
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
	// Spec and Options are what Mapping was built from: [Pipeline.FollowShape]
	// rebuilds it with them when the table's shape changes.
	Spec    mapping.Spec
	Options mapping.Options
	// Compatibility is what a new schema version must meet, checked
	// locally before the registry is asked; empty means registry.LevelFull.
	Compatibility registry.Level
	// OnTruncate is what a TRUNCATE of the table does; default
	// TruncateTombstone.
	OnTruncate OnTruncate
}

// Pipeline is a source.Handler. Handle is called from one goroutine;
// promises run on the producer's goroutines.
type Pipeline struct {
	entities []Entity // written only by FollowShape, on Handle's goroutine
	prod     producer
	schemas  schemaRegistry // nil: a changed schema cannot be registered
	keys     keyReader      // nil: a TRUNCATE cannot be published
	spillDir string         // where a reconcile spills keys; "": the system's temp dir
	// spillBytes is the largest bucket file whose keys a reconcile holds
	// in memory; 0: defaultSpillBucketBytes (tests set a small one).
	spillBytes int64

	// truncateDedupe bounds the keys a TRUNCATE remembers having
	// tombstoned; truncatePeak is the most it held at once (tests read
	// it). Handle's goroutine only.
	truncateDedupe, truncatePeak int

	// failure holds the first produce error; once set every Handle and
	// Flush fails with it and nothing after it is acknowledged.
	failure atomic.Pointer[error]
	// abandoned is set when a record was given up because its produce
	// context ended (stopGrace after a stop) before it was delivered: that
	// is not a failure, but nothing may be produced after it, or a later
	// record of its key could land before its replay.
	abandoned atomic.Bool

	// Records are produced with a context that outlives Handle's by
	// stopGrace: kgo fails a buffered record once its Produce context
	// ends, and a stop must leave what was handed over to the final Flush
	// to deliver, not drop it; a Produce still waiting for room gives up
	// stopGrace after the stop. run caches that context for Handle's
	// context (Handle's goroutine only).
	stopGrace time.Duration
	run       struct {
		ctx, produce context.Context
		release      func() bool // stops the timer that ends produce
	}

	// inFlight counts records handed to the producer whose promise has not
	// returned; settled gets a token each time it drops to zero. Flush
	// waits on these because kgo's Flush does not: a record that fails
	// before it is buffered (larger than the buffer, context canceled
	// while Produce blocked) has its promise run later on another
	// goroutine, after Flush may already have returned.
	inFlight atomic.Int64
	settled  chan struct{}

	counters    counters // for Stats
	bufferLimit int64    // the producer's buffer size; 0: unknown (WithBufferLimit)

	pairs   sync.Pool                // *pairAck for key changes
	promise func(*kgo.Record, error) // p.produced, made once

	// last holds the headers of the previous change: every change of a
	// transaction, and every row of the snapshot, has the same op, LSN,
	// commit time and XID, so their records share one read-only slice
	// instead of formatting it per row. Only Handle's goroutine uses it.
	last struct {
		op        source.Op
		lsn       uint64
		time      time.Time
		xid       uint32
		republish string
		headers   []kgo.RecordHeader
	}

	// maxMessageBytes, when positive, is the producer's record batch
	// limit: Handle refuses a record larger than that with a
	// *TooLargeError instead of handing it to a producer that would fail it.
	maxMessageBytes int
	// onFailure, if set, is told the first produce failure, at once, from
	// the producer's goroutine.
	onFailure func(error)

	// Used by Handle only (one goroutine), to save per-record work.
	scratch []byte // encoding buffer; each record gets an exact-size copy
	arena   arena  // where records and their copies are carved from
}

// Option configures a [Pipeline].
type Option func(*Pipeline)

// WithSchemas lets the pipeline register new schema versions when a table's
// shape changes (*registry.Schemas); without it a changed schema stops the
// stream.
func WithSchemas(s schemaRegistry) Option { return func(p *Pipeline) { p.schemas = s } }

// WithLiveKeys lets the pipeline read which keys a topic holds, to
// tombstone them on TRUNCATE (*TopicKeys); without it a TRUNCATE stops the
// stream.
func WithLiveKeys(r keyReader) Option { return func(p *Pipeline) { p.keys = r } }

// WithMaxMessageBytes makes Handle refuse, with a [*TooLargeError] naming
// the table, key and column sizes, a record that does not fit in a record
// batch of n bytes (the producer's kgo.ProducerBatchMaxBytes,
// kafka.max_message_bytes). Without it such a record reaches the producer,
// which fails it with only its topic.
func WithMaxMessageBytes(n int) Option { return func(p *Pipeline) { p.maxMessageBytes = n } }

// OnFailure has f called once with the first produce failure, as soon as
// the producer reports it (from the producer's goroutine: f must not
// block). Otherwise a failure surfaces only at the next Handle or Flush,
// which a quiet table may not call for a long time while the confirmed
// position stays frozen; the caller typically cancels the source's context
// with it.
func OnFailure(f func(error)) Option { return func(p *Pipeline) { p.onFailure = f } }

// DefaultStopGrace is how long records handed to the producer outlive a
// stop. A healthy broker takes milliseconds; against one that is down, a
// stop waits this long for room in a full buffer before the source's own
// shutdown timeout starts.
const DefaultStopGrace = 10 * time.Second

// WithStopGrace sets how long, once Handle's context ends, a Produce
// waiting for room keeps waiting and buffered records stay deliverable
// (default DefaultStopGrace).
func WithStopGrace(d time.Duration) Option { return func(p *Pipeline) { p.stopGrace = d } }

// New returns a pipeline producing with prod. entities is indexed by the
// source's TableIndex; the pipeline owns the slice from now on (a shape
// change replaces its elements).
func New(entities []Entity, prod producer, opts ...Option) *Pipeline {
	p := &Pipeline{entities: entities, prod: prod, settled: make(chan struct{}, 1), stopGrace: DefaultStopGrace,
		counters: newCounters(len(entities)), truncateDedupe: DefaultTruncateDedupeKeys}
	p.pairs.New = func() any { return new(pairAck) }
	p.promise = p.produced
	for _, o := range opts {
		o(p)
	}
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
	if p.failure.CompareAndSwap(nil, &err) && p.onFailure != nil {
		p.onFailure(err)
	}
}

// Handle maps one change to its records and hands them to the producer.
func (p *Pipeline) Handle(ctx context.Context, c *source.Change) error {
	return p.handle(ctx, c, c.Ack)
}

// handle is Handle acknowledging through ack: c.Ack in production, a
// counting acker in tests (source.Ack values can only come from the source).
func (p *Pipeline) handle(ctx context.Context, c *source.Change, ack acker) error {
	if err := p.accepting(ctx); err != nil {
		return err
	}
	if c.TableIndex < 0 || c.TableIndex >= len(p.entities) {
		return fmt.Errorf("change for table index %d: no such entity", c.TableIndex)
	}
	e := &p.entities[c.TableIndex]
	headers := p.headers(c)
	switch c.Op {
	case source.OpInsert, source.OpSnapshot:
		r, err := p.upsert(e, c, headers)
		if err != nil {
			return err
		}
		if err := p.tooLarge(e, c, &r.Record); err != nil {
			return err
		}
		p.produce(ctx, r, ack)
		p.count(c.TableIndex, c.Op, 1)
	case source.OpUpdate:
		r, err := p.upsert(e, c, headers)
		if err != nil {
			return err
		}
		if err := p.tooLarge(e, c, &r.Record); err != nil {
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
				p.count(c.TableIndex, source.OpDelete, 1)
				p.count(c.TableIndex, source.OpUpdate, 1)
				return nil
			}
		}
		p.produce(ctx, r, ack)
		p.count(c.TableIndex, source.OpUpdate, 1)
	case source.OpDelete:
		if c.Old == nil {
			return fmt.Errorf("delete from %s at LSN %s: PostgreSQL sent no old key (REPLICA IDENTITY NOTHING?): set REPLICA IDENTITY DEFAULT or FULL", c.Table.QualifiedName(), c.LSN)
		}
		key, err := p.key(e, c, c.Old)
		if err != nil {
			return err
		}
		p.produce(ctx, p.tombstone(e, key, headers), ack)
		p.count(c.TableIndex, source.OpDelete, 1)
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

// outRecord is a record with the receipt its promise acknowledges, in one
// allocation; with one promise function for every record, producing costs
// no closure per record.
type outRecord struct {
	kgo.Record
	receipt receipt
}

// receipt rides in the record's Context, kgo's field for enriching
// records. It wraps the produce context, which kgo would have put there,
// so that canceling works as it would without it.
type receipt struct {
	context.Context
	ack acker
}

// produceContext is the context records handed over under ctx are
// produced with: ctx's values, ended stopGrace after ctx ends.
func (p *Pipeline) produceContext(ctx context.Context) context.Context {
	if ctx == p.run.ctx {
		return p.run.produce
	}
	if p.run.release != nil {
		p.run.release()
	}
	produce, cancel := context.WithCancel(context.WithoutCancel(ctx))
	grace := p.stopGrace
	p.run.release = context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	p.run.ctx, p.run.produce = ctx, produce
	return produce
}

// accepting is why a change handed over under ctx must not be produced,
// or nil: a failure, an abandoned record, or a stop.
func (p *Pipeline) accepting(ctx context.Context) error {
	if err := p.Err(); err != nil {
		return err
	}
	if p.abandoned.Load() {
		return errAbandoned
	}
	// Stopping: an abandoned record's promise may not have run yet, so the
	// flag above may still be unset; produce nothing after it.
	return ctx.Err()
}

// errAbandoned is what Handle returns after a record was abandoned.
var errAbandoned = errors.New("pipeline: a change was abandoned when its Handle's context ended; nothing more is produced")

func (p *Pipeline) produce(ctx context.Context, r *outRecord, a acker) {
	pctx := p.produceContext(ctx)
	r.receipt = receipt{Context: pctx, ack: a}
	r.Record.Context = &r.receipt
	if n := p.inFlight.Add(1); p.bufferLimit > 0 && n > p.bufferLimit {
		p.produceTimed(pctx, &r.Record)
		return
	}
	p.prod.Produce(pctx, &r.Record, p.promise)
}

// produced is every record's promise.
func (p *Pipeline) produced(r *kgo.Record, err error) {
	switch {
	case errors.Is(err, context.Canceled) && r.Context.(*receipt).Err() != nil:
		// Its produce context ended (stopGrace after a stop): given up,
		// never acknowledged, so its transaction is not confirmed and is
		// replayed on restart. Any other error, a timeout included, is a
		// failure.
		p.abandoned.Store(true)
	case err != nil:
		p.counters.failed.Add(1)
		p.fail(p.produceError(r, err))
	default:
		p.counters.acked.Add(1)
		r.Context.(*receipt).ack.Done()
	}
	if p.inFlight.Add(-1) == 0 {
		select {
		case p.settled <- struct{}{}:
		default: // a token is already waiting
		}
	}
}

// upsert makes the record of the row after the change, from c.Text when
// the source gave it as text, else from c.New. Key and value are encoded
// into the scratch buffer and copied out together, at their exact size, in
// one allocation.
func (p *Pipeline) upsert(e *Entity, c *source.Change, headers []kgo.RecordHeader) (*outRecord, error) {
	buf := mapping.AppendConfluentHeader(p.scratch[:0], e.KeySchemaID)
	var err error
	if c.Text != nil {
		buf, err = e.Mapping.AppendKeyText(buf, c.Text)
	} else {
		buf, err = e.Mapping.AppendKey(buf, c.New)
	}
	if err != nil {
		p.scratch = buf
		return nil, encodeError(c, fmt.Errorf("encode key of %s at LSN %s: %w", c.Table.QualifiedName(), c.LSN, err))
	}
	keyLen := len(buf)
	buf = mapping.AppendConfluentHeader(buf, e.ValueSchemaID)
	if c.Text != nil {
		buf, err = e.Mapping.AppendValueText(buf, c.Text)
	} else {
		buf, err = e.Mapping.AppendValue(buf, c.New)
	}
	p.scratch = buf
	if err != nil {
		return nil, encodeError(c, fmt.Errorf("encode value of %s key %s at LSN %s: %w", c.Table.QualifiedName(), keyText(e, c), c.LSN, err))
	}
	out := p.arena.clone(buf)
	r := p.arena.record()
	r.Record = kgo.Record{Topic: e.Mapping.Topic(), Key: out[:keyLen:keyLen], Value: out[keyLen:], Headers: headers}
	return r, nil
}

// arena hands out records and the bytes of their keys and values carved
// from larger blocks: a snapshot or republish produces one record per row,
// and two allocations per record (the record, its bytes) were most of the
// pipeline's allocations and a share of its GC. A block is freed once
// every record carved from it is acknowledged and dropped, so what it
// holds is bounded by the producer's buffer plus one block of each kind.
// Handle's goroutine only.
type arena struct {
	records []outRecord // not handed out yet
	bytes   []byte      // the current block; its free part is after len
}

const (
	arenaRecords = 64       // records per block (about 16 KB)
	arenaBytes   = 64 << 10 // bytes per block
	// arenaMaxCopy is the largest copy taken from a block: a larger one is
	// allocated alone, so that it neither wastes most of a block nor pins
	// one.
	arenaMaxCopy = arenaBytes / 8
)

// record returns a zero record that no one else holds.
func (a *arena) record() *outRecord {
	if len(a.records) == 0 {
		a.records = make([]outRecord, arenaRecords)
	}
	r := &a.records[0]
	a.records = a.records[1:]
	return r
}

// clone returns a copy of b, capped at its length so that no append
// reaches the next copy.
func (a *arena) clone(b []byte) []byte {
	if len(b) > arenaMaxCopy {
		return bytes.Clone(b)
	}
	if cap(a.bytes)-len(a.bytes) < len(b) {
		a.bytes = make([]byte, 0, arenaBytes)
	}
	from := len(a.bytes)
	a.bytes = append(a.bytes, b...)
	return a.bytes[from:len(a.bytes):len(a.bytes)]
}

// encodeError is err, or for a row given as text whose column could not
// be decoded or encoded, the source's account of it: the table, the row's
// key as PostgreSQL prints it, the column and its type, and the way out
// (the text path decodes what the source would otherwise have decoded).
func encodeError(c *source.Change, err error) error {
	var ce *mapping.ColumnError
	if c.Text == nil || !errors.As(err, &ce) {
		return err
	}
	return c.ValueError(ce.Index, ce.Err)
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

func (p *Pipeline) tombstone(e *Entity, key []byte, headers []kgo.RecordHeader) *outRecord {
	h := make([]kgo.RecordHeader, len(headers))
	copy(h, headers)
	h[0].Value = opDelete
	return &outRecord{Record: kgo.Record{Topic: e.Mapping.Topic(), Key: key, Headers: h}}
}

// opDelete is the op header of every tombstone; read-only, shared by all.
var opDelete = []byte(cdc.OpDelete.String())

// topicOp is the op a change's records say on the topic (package cdc).
// A TRUNCATE's records are tombstones, which say d (see tombstone).
func topicOp(op source.Op) cdc.Op {
	switch op {
	case source.OpInsert:
		return cdc.OpCreate
	case source.OpUpdate:
		return cdc.OpUpdate
	case source.OpSnapshot:
		return cdc.OpRead
	case source.OpDelete, source.OpTruncate:
		return cdc.OpDelete
	default:
		return 0 // Handle refuses the change
	}
}

// headers returns the change's headers, reusing the previous change's when
// they would be equal: the records of a transaction (and the snapshot's rows)
// share one read-only slice, and formatting it per record was about a tenth
// of the stream's CPU (docs/BENCHMARKS.md). Nothing may modify a header in
// place (tombstone copies the slice).
func (p *Pipeline) headers(c *source.Change) []kgo.RecordHeader {
	l := &p.last
	if l.headers != nil && l.op == c.Op && l.lsn == uint64(c.LSN) && l.xid == c.XID && l.time.Equal(c.CommitTime) && l.republish == c.Republish {
		return l.headers
	}
	l.op, l.lsn, l.time, l.xid, l.republish = c.Op, uint64(c.LSN), c.CommitTime, c.XID, c.Republish
	l.headers = changeHeaders(c)
	return l.headers
}

// changeHeaders formats a change's header values into one buffer. A
// transaction of one row pays for its headers on its one record, so at
// thousands of commits a second they are two allocations (the slice and
// the buffer), not one or two per value.
func changeHeaders(c *source.Change) []kgo.RecordHeader {
	n := 3
	if c.XID != 0 {
		n++
	}
	if c.Republish != "" {
		n++
	}
	h := make([]kgo.RecordHeader, 0, n)
	// op, LSN (at most 17), commit time (27 in UTC), XID (at most 10).
	b := make([]byte, 0, 64+len(c.Republish))
	// value returns what was appended from from, capped so that no later
	// append writes into it.
	value := func(from int) []byte { return b[from:len(b):len(b)] }

	from := len(b)
	b = append(b, topicOp(c.Op).String()...)
	h = append(h, kgo.RecordHeader{Key: cdc.HeaderOp, Value: value(from)})
	from = len(b)
	b = appendLSN(b, c.LSN)
	h = append(h, kgo.RecordHeader{Key: cdc.HeaderLSN, Value: value(from)})
	from = len(b)
	b = c.CommitTime.UTC().AppendFormat(b, cdc.CommitTimeLayout)
	h = append(h, kgo.RecordHeader{Key: cdc.HeaderCommitTime, Value: value(from)})
	if c.XID != 0 {
		from = len(b)
		b = strconv.AppendUint(b, uint64(c.XID), 10)
		h = append(h, kgo.RecordHeader{Key: cdc.HeaderXID, Value: value(from)})
	}
	if c.Republish != "" {
		from = len(b)
		b = append(b, c.Republish...)
		h = append(h, kgo.RecordHeader{Key: cdc.HeaderRepublish, Value: value(from)})
	}
	return h
}

// appendLSN appends lsn as [pglogrepl.LSN.String] formats it (%X/%X),
// without its fmt.Sprintf.
func appendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	b = appendUpperHex(b, uint64(lsn>>32))
	b = append(b, '/')
	return appendUpperHex(b, uint64(uint32(lsn)))
}

func appendUpperHex(b []byte, v uint64) []byte {
	from := len(b)
	b = strconv.AppendUint(b, v, 16)
	for i := from; i < len(b); i++ {
		if b[i] >= 'a' {
			b[i] -= 'a' - 'A'
		}
	}
	return b
}

// keyText renders the key columns of the row after the change for an
// error message. Keys are identifiers, not row contents, so they may
// appear in errors.
func keyText(e *Entity, c *source.Change) string {
	var b bytes.Buffer
	for i, name := range e.Mapping.KeyColumns() {
		if i > 0 {
			b.WriteString(", ")
		}
		_, idx, ok := c.Table.Column(name)
		switch {
		case !ok:
		case c.Text != nil:
			b.Write(c.Text[idx])
		default:
			fmt.Fprintf(&b, "%v", c.New[idx])
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
