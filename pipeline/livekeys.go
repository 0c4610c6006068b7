package pipeline

import (
	"context"
	"slices"

	"github.com/replicator/replicator/broker"
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
	live := map[string]struct{}{}
	_, err := broker.ReadToEnd(ctx, r.opts, topic, nil, func(rec *kgo.Record) error {
		if rec.Value == nil {
			delete(live, string(rec.Key))
		} else {
			live[string(rec.Key)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return live, nil
}
