package pipeline

import (
	"bytes"
	"context"
	"slices"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicKeys reads the keys of a topic's records, with a short-lived
// consumer client of its own per call (broker.ReadToEnd). Safe for
// concurrent use.
type TopicKeys struct {
	opts []kgo.Opt
}

// NewTopicKeys returns a reader connecting with opts (seed brokers, TLS,
// SASL; no consumer or producer options).
func NewTopicKeys(opts ...kgo.Opt) *TopicKeys {
	return &TopicKeys{opts: slices.Clone(opts)}
}

// EachKey reads topic from the start of every partition to the end offset
// it had when the call began, and calls fn with each record's key, and
// whether the record has a value (a tombstone has none), in offset order
// within a partition. The key is fn's to keep. It holds nothing between
// records: memory does not grow with the topic. Records appended after the
// call began are not read; the caller makes sure there are none it needs
// (the pipeline flushes first and is the topic's only producer). An error
// of fn stops the read and is returned as is.
func (r *TopicKeys) EachKey(ctx context.Context, topic string, fn func(key []byte, live bool) error) error {
	_, err := broker.ReadToEnd(ctx, r.opts, topic, nil, func(rec *kgo.Record) error {
		// A copy: the record's key shares the fetched batch's memory,
		// which the caller would keep alive as long as it keeps the key.
		return fn(bytes.Clone(rec.Key), rec.Value != nil)
	})
	return err
}

// EachRecord is EachKey with each record's lsn header (nil when it has
// none).
func (r *TopicKeys) EachRecord(ctx context.Context, topic string, fn func(key []byte, live bool, lsn []byte) error) error {
	_, err := broker.ReadToEnd(ctx, r.opts, topic, nil, func(rec *kgo.Record) error {
		var lsn []byte
		for _, h := range rec.Headers {
			if h.Key == cdc.HeaderLSN {
				lsn = h.Value
			}
		}
		return fn(bytes.Clone(rec.Key), rec.Value != nil, lsn)
	})
	return err
}

// Records is an upper bound of the records EachRecord would read from
// topic now, without reading them (broker.OffsetSpan): what a reconcile
// sizes its spill by.
func (r *TopicKeys) Records(ctx context.Context, topic string) (int64, error) {
	return broker.OffsetSpan(ctx, r.opts, topic)
}
