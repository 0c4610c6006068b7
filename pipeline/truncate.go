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

// liveKeyReader lists the keys whose latest record on a topic is not a
// tombstone (*TopicKeys).
type liveKeyReader interface {
	LiveKeys(ctx context.Context, topic string) (map[string]struct{}, error)
}

// Truncate publishes a TRUNCATE of c.Table (see source's truncater): the
// source cannot know which rows the table held, the topic can. So it waits
// until every record handed over before is acknowledged, reads the topic
// to its end, and produces a tombstone for every key whose latest record
// is not one, all acknowledged through c.Ack. Records of later changes are
// produced after the tombstones, so per key they follow them. Only the set
// of live keys is held in memory, never values. With TruncateFail it
// returns an error instead and produces nothing.
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
	live, err := p.keys.LiveKeys(ctx, topic)
	if err != nil {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: read the live keys of topic %s: %w", c.Table.QualifiedName(), c.LSN, topic, err)
	}
	if len(live) == 0 {
		ack.Done()
		return nil
	}
	headers := changeHeaders(c)
	all := &allAck{ack: ack}
	all.left.Store(int64(len(live)))
	for k := range live {
		p.produce(ctx, p.tombstone(e, []byte(k), headers), all)
	}
	p.count(c.TableIndex, source.OpDelete, uint64(len(live)))
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
