package pipeline

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Every record of a key lands on one partition, in the order the changes
// were handled (guarantee 2), while the keys spread over the partitions.
func TestPartitionByKey(t *testing.T) {
	t.Parallel()
	const (
		partitions = 6
		keys       = 200
		versions   = 5
	)
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, partitions, nil)
	table := accountsTable()
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	// Versions interleave across keys, as commits of many rows do.
	for v := int32(1); v <= versions; v++ {
		for k := range int64(keys) {
			op := source.OpUpdate
			if v == 1 {
				op = source.OpInsert
			}
			if err := p.Handle(ctx, change(table, op, accountRow(k, v), nil)); err != nil {
				t.Fatalf("Handle key %d version %d: %v", k, v, err)
			}
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	type placed struct {
		partition int32
		offset    int64
		version   int32
	}
	e := p.entities[0].Mapping
	byKey := make(map[int64][]placed)
	used := make(map[int32]bool)
	for _, r := range consume(t, b.Addr(), topic, keys*versions) {
		key := decodeFramed(t, "key", r.Key, keySchemaID, e.KeySchema())
		value := decodeFramed(t, "value", r.Value, valueSchemaID, e.ValueSchema())
		id := key["id"].(int64)
		byKey[id] = append(byKey[id], placed{r.Partition, r.Offset, value["version"].(int32)})
		used[r.Partition] = true
	}
	if len(byKey) != keys {
		t.Fatalf("keys: got %d, want %d", len(byKey), keys)
	}
	for id, recs := range byKey {
		slices.SortFunc(recs, func(a, b placed) int { return int(a.offset - b.offset) })
		for i, r := range recs {
			if r.partition != recs[0].partition {
				t.Fatalf("key %d: version %d on partition %d, version %d on partition %d: want one partition",
					id, recs[0].version, recs[0].partition, r.version, r.partition)
			}
			if want := int32(i + 1); r.version != want {
				t.Fatalf("key %d: record at offset %d has version %d, want %d (commit order)", id, r.offset, r.version, want)
			}
		}
	}
	if len(used) < 2 {
		t.Errorf("partitions used: got %d of %d, want the keys spread over several", len(used), partitions)
	}
}

// holdProduce makes the broker hold every Produce request until release is
// called (also at test cleanup); held receives a token once the first one
// is held.
func holdProduce(t *testing.T, c *kfake.Cluster) (held <-chan struct{}, release func()) {
	t.Helper()
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	h := make(chan struct{}, 1)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-gate:
			c.DropControl()
			return nil, nil, false
		default:
		}
		select {
		case h <- struct{}{}:
		default:
		}
		c.SleepControl(func() { <-gate })
		return nil, nil, false // then handled as usual
	})
	return h, release
}

// blockLogger reports when kgo blocks a Produce call because its buffer is
// full (kgo logs it at debug level; there is no other signal).
type blockLogger struct{ blocked chan struct{} }

func (blockLogger) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (l blockLogger) Log(_ kgo.LogLevel, msg string, _ ...any) {
	if strings.HasPrefix(msg, "blocking Produce") {
		select {
		case l.blocked <- struct{}{}:
		default:
		}
	}
}

// A slow broker blocks Handle once MaxBufferedRecords records are
// unacknowledged, instead of buffering more (guarantee 5); Handle carries on
// once the broker answers.
func TestBackPressure(t *testing.T) {
	t.Parallel()
	const (
		maxBuffered = 10
		total       = 3 * maxBuffered
	)
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	log := blockLogger{blocked: make(chan struct{}, 1)}
	cl := newClient(t, b.Addr(), &broker.ProducerConfig{MaxBufferedRecords: maxBuffered}, kgo.WithLogger(log))
	p := New(newEntities(t, table, topic), cl)
	held, release := holdProduce(t, b.Cluster())
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	acks := make([]countAck, total)
	var handled atomic.Int32
	done := make(chan error, 1)
	go func() {
		for i := range total {
			if err := p.handle(ctx, change(table, source.OpInsert, accountRow(int64(i), 1), nil), &acks[i]); err != nil {
				done <- err
				return
			}
			handled.Add(1)
		}
		done <- nil
	}()

	select {
	case <-log.blocked:
	case err := <-done:
		t.Fatalf("Handle returned for all %d changes (err %v) while the broker held every produce: want it to block after %d",
			handled.Load(), err, maxBuffered)
	case <-ctx.Done():
		t.Fatalf("Produce never blocked: %d changes handled", handled.Load())
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the broker never received a produce request")
	}
	if n := handled.Load(); n != maxBuffered {
		t.Errorf("changes handled while the broker is held: got %d, want %d", n, maxBuffered)
	}
	// kgo counts the record whose Produce is blocked too.
	if n := cl.BufferedProduceRecords(); n != maxBuffered+1 {
		t.Errorf("records held by the client while the broker is held: got %d, want %d (buffered) + 1 (blocked)", n, maxBuffered)
	}
	for i := range acks {
		if n := acks[i].count(); n != 0 {
			t.Fatalf("change %d acknowledged while the broker holds every produce: got %d acks, want 0", i, n)
		}
	}

	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("handle: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("Handle still blocked after the broker was released: %d of %d changes handled", handled.Load(), total)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for i := range acks {
		if n := acks[i].count(); n != 1 {
			t.Errorf("change %d: got %d acks, want 1", i, n)
		}
	}
	consume(t, b.Addr(), topic, total)
}

// A Handle blocked on a full buffer returns once its context has ended
// (the source is stopping) and the stop grace has passed; the change it
// was handling is never acknowledged, the pipeline produces nothing more,
// and Flush delivers what was buffered without reporting the stop as a
// failure.
func TestBackPressureCanceled(t *testing.T) {
	t.Parallel()
	const maxBuffered = 10
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	log := blockLogger{blocked: make(chan struct{}, 1)}
	cl := newClient(t, b.Addr(), &broker.ProducerConfig{MaxBufferedRecords: maxBuffered}, kgo.WithLogger(log))
	p := New(newEntities(t, table, topic), cl, WithStopGrace(10*time.Millisecond))
	_, release := holdProduce(t, b.Cluster())
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	acks := make([]countAck, maxBuffered+1)
	for i := range maxBuffered {
		if err := p.handle(ctx, change(table, source.OpInsert, accountRow(int64(i), 1), nil), &acks[i]); err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
	}
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	done := make(chan error, 1)
	go func() {
		done <- p.handle(hctx, change(table, source.OpInsert, accountRow(maxBuffered, 1), nil), &acks[maxBuffered])
	}()
	select {
	case <-log.blocked:
	case err := <-done:
		t.Fatalf("handle %d returned %v with the buffer full: want it to block", maxBuffered, err)
	case <-ctx.Done():
		t.Fatal("Produce never blocked")
	}
	hcancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked handle after cancel: got %v, want nil (the failure comes through the promise)", err)
		}
	case <-ctx.Done():
		t.Fatal("Handle still blocked after its context was canceled")
	}

	release()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush after the stop: got %v, want nil", err)
	}
	if err := p.handle(ctx, change(table, source.OpInsert, accountRow(maxBuffered+1, 1), nil), &countAck{}); !errors.Is(err, errAbandoned) {
		t.Errorf("handle after a change was abandoned: got %v, want %v", err, errAbandoned)
	}
	if n := acks[maxBuffered].count(); n != 0 {
		t.Errorf("acks of the canceled change: got %d, want 0", n)
	}
	for i := range maxBuffered {
		if n := acks[i].count(); n != 1 {
			t.Errorf("change %d (buffered before the cancel): got %d acks, want 1", i, n)
		}
	}
}

// A stop (the context Handle was given ends) does not drop the records
// already handed to the producer: shutdown's Flush delivers and
// acknowledges them, and reports no failure.
func TestStopDeliversBufferedRecords(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 3, nil)
	table := accountsTable()
	// A long linger keeps the records buffered when the stop comes; Flush
	// sends them regardless.
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{Linger: time.Minute}))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	run, stop := context.WithCancel(ctx)

	const n = 20
	acks := make([]countAck, n)
	for i := range n {
		if err := p.handle(run, change(table, source.OpInsert, accountRow(int64(i), 1), nil), &acks[i]); err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
	}
	stop()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush after the stop: %v", err)
	}
	for i := range acks {
		if got := acks[i].count(); got != 1 {
			t.Errorf("change %d: got %d acks, want 1", i, got)
		}
	}
	consume(t, b.Addr(), topic, n)
}
