package pipeline

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/replicator/replicator/source"
)

// OnTruncate is what a TRUNCATE of an entity's table does.
type OnTruncate uint8

const (
	// TruncateTombstone gives every key still live on the topic a
	// tombstone. The default.
	TruncateTombstone OnTruncate = iota
	// TruncateFail stops the replicator at the TRUNCATE, unconfirmed.
	TruncateFail
)

// keyReader reads the keys of a topic's records, to its end at the call
// (*TopicKeys).
type keyReader interface {
	EachKey(ctx context.Context, topic string, fn func(key []byte, live bool) error) error
}

// DefaultTruncateDedupeKeys is how many keys a TRUNCATE remembers having
// tombstoned (see [WithTruncateDedupeKeys]): about 10 MB of short keys.
const DefaultTruncateDedupeKeys = 100_000

// WithTruncateDedupeKeys bounds the memory a TRUNCATE takes: it remembers
// at most n keys it has already given a tombstone, to skip a key's older
// records (default [DefaultTruncateDedupeKeys]; less than 1 means 1). A key
// met again after the set was cleared gets a second tombstone, which is
// harmless; memory is this set plus the producer's buffer
// (kafka.max_buffered_records), whatever the number of keys.
func WithTruncateDedupeKeys(n int) Option {
	return func(p *Pipeline) { p.truncateDedupe = max(n, 1) }
}

// Truncate publishes a TRUNCATE of c.Table (see source's truncater): the
// source cannot know which rows the table held, the topic can. So it waits
// until every record handed over before is acknowledged, then reads the
// topic to its end and, as it reads, produces a tombstone for the key of
// every record with a value: every key live before the TRUNCATE has one
// such record, so every one gets a tombstone (a key whose latest record
// was already a tombstone may get another, which changes nothing). All are
// acknowledged through c.Ack, once the read has ended and every tombstone
// is durable. Records of later changes are produced after the tombstones,
// so per key they follow them. Memory is bounded: a set of at most
// WithTruncateDedupeKeys keys skips a key's repeated records, never values.
// With TruncateFail it returns an error instead and produces nothing.
func (p *Pipeline) Truncate(ctx context.Context, c *source.Change) error {
	return p.truncate(ctx, c, c.Ack)
}

func (p *Pipeline) truncate(ctx context.Context, c *source.Change, ack acker) error {
	if err := p.accepting(ctx); err != nil {
		return err
	}
	if c.TableIndex < 0 || c.TableIndex >= len(p.entities) {
		return fmt.Errorf("truncate of table index %d: no such entity", c.TableIndex)
	}
	e := &p.entities[c.TableIndex]
	topic := e.Mapping.Topic()
	if e.OnTruncate == TruncateFail {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: entity %q is configured with on_truncate: fail, so the replicator stops here; the TRUNCATE is not confirmed and every restart stops at it again. To publish it, set entities[%d].on_truncate: tombstone (every key live on topic %s gets a tombstone) and restart; see docs/OPERATIONS.md, TRUNCATE",
			c.Table.QualifiedName(), c.LSN, e.Spec.Name, c.TableIndex, topic)
	}
	if p.keys == nil {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: the pipeline cannot read topic %s to find its live keys", c.Table.QualifiedName(), c.LSN, topic)
	}
	if err := p.Flush(ctx); err != nil {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: wait for the records before it: %w", c.Table.QualifiedName(), c.LSN, err)
	}
	headers := changeHeaders(c)
	// The read holds one share of the ack, released when it has ended:
	// until then the count of tombstones is not known. A failed read
	// never releases it, so the TRUNCATE is not confirmed.
	all := &allAck{ack: ack}
	all.left.Store(1)
	seen := make(map[string]struct{})
	err := p.keys.EachKey(ctx, topic, func(key []byte, live bool) error {
		if !live {
			return nil
		}
		if _, dup := seen[string(key)]; dup {
			return nil
		}
		if len(seen) >= p.truncateDedupe {
			clear(seen)
		}
		seen[string(key)] = struct{}{}
		p.truncatePeak = max(p.truncatePeak, len(seen))
		all.left.Add(1)
		p.produce(ctx, p.tombstone(e, key, headers), all)
		p.count(c.TableIndex, source.OpDelete, 1)
		return p.accepting(ctx)
	})
	if err != nil {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: tombstone the keys live on topic %s: %w", c.Table.QualifiedName(), c.LSN, topic, err)
	}
	all.Done()
	return p.Err()
}

// allAck acknowledges a change once all of its records are durable.
type allAck struct {
	ack  acker
	left atomic.Int64
}

func (a *allAck) Done() {
	if a.left.Add(-1) == 0 {
		a.ack.Done()
	}
}
