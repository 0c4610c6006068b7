package pipeline

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicKeys reads which keys are live on a topic, with a short-lived
// consumer client of its own per call. Safe for concurrent use.
type TopicKeys struct {
	opts []kgo.Opt
}

// NewTopicKeys returns a reader connecting with opts (seed brokers, TLS,
// SASL; no consumer or producer options).
func NewTopicKeys(opts ...kgo.Opt) *TopicKeys {
	return &TopicKeys{opts: slices.Clone(opts)}
}

// LiveKeys reads topic from the start of every partition to the end offset
// it had when the call began, and returns the keys whose latest record in
// that range has a value: the keys a compacted topic still holds a row
// for. Memory is one entry per live key. Records appended after the call
// began are not read; the caller makes sure there are none it needs (the
// pipeline flushes first and is the topic's only producer).
func (r *TopicKeys) LiveKeys(ctx context.Context, topic string) (map[string]struct{}, error) {
	cl, err := kgo.NewClient(append(slices.Clone(r.opts),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("consumer client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	end := map[int32]int64{} // partitions with records: their end offset
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); !ok || o.Offset > s.Offset {
			end[o.Partition] = o.Offset
		}
	})
	live := map[string]struct{}{}
	for len(end) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read topic to its end (%d partitions left): %w", len(end), err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			ferr = fmt.Errorf("fetch partition %d: %w", p, err)
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(rec *kgo.Record) {
			stop, ok := end[rec.Partition]
			if !ok || rec.Offset >= stop {
				return // after the end this call reads to
			}
			if rec.Value == nil {
				delete(live, string(rec.Key))
			} else {
				live[string(rec.Key)] = struct{}{}
			}
			if rec.Offset+1 >= stop {
				delete(end, rec.Partition)
			}
		})
	}
	return live, nil
}
