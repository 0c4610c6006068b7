package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// SchemasTopic is the compacted topic the embedded registry keeps its
// registrations in, on the broker it serves, as Confluent's registry keeps
// them in _schemas (a name of our own: the record format differs, and a
// Confluent registry may share the broker).
const SchemasTopic = "_replicator_schemas"

// topicAppendTimeout bounds one registration's wait for the broker's
// acknowledgement; a broker down longer fails the registration (and makes
// the registry read-only until restart, as a failed fsync does).
const topicAppendTimeout = 30 * time.Second

// topicOpenTimeout bounds creating and reading the topic at start: a
// broker that does not answer fails the start instead of hanging it.
const topicOpenTimeout = 60 * time.Second

// TopicLog is the embedded registry's schema log on a Kafka topic
// ([SchemasTopic]): one record per registered version, keyed by subject
// and version, its value the same JSON as a line of schemas.jsonl. With it
// the data directory is only a cache: a registry whose data_dir was lost
// replays the topic and hands out the same ids for the same schemas, so an
// id never means two schemas for as long as the topics that carry it.
//
// Open it with [OpenTopicLog]; [StartEmbedded] replays it and appends to
// it. Its methods are called with the registry's lock held (one at a time).
type TopicLog struct {
	cl      *kgo.Client
	topic   string
	records []logRecord            // read at open, in topic order
	stored  map[subjectVersion]int // id of every version on the topic

	closeOnce sync.Once
}

// OpenTopicLog connects with opts (seed brokers, TLS, SASL, dialer),
// creates the topic if it is missing (one partition, so its order is the
// order of registration; compacted, every key being a distinct version;
// replicationFactor -1 for the broker's default) and reads it to its end.
// Close it with [TopicLog.Close] ([Embedded.Close] does).
func OpenTopicLog(ctx context.Context, replicationFactor int16, opts ...kgo.Opt) (*TopicLog, error) {
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("schemas topic client: %w", err)
	}
	l := &TopicLog{cl: cl, topic: SchemasTopic, stored: make(map[subjectVersion]int)}
	octx, cancel := context.WithTimeout(ctx, topicOpenTimeout)
	defer cancel()
	if err := l.open(octx, replicationFactor, opts); err != nil {
		cl.Close()
		return nil, fmt.Errorf("schemas topic %s: %w", SchemasTopic, err)
	}
	return l, nil
}

// open creates or checks the topic and reads it to its end, with a reader
// of its own connecting with opts (broker.ReadToEnd).
func (l *TopicLog) open(ctx context.Context, rf int16, opts []kgo.Opt) error {
	adm := kadm.NewClient(l.cl)
	if rf == 0 {
		rf = -1
	}
	resp, err := adm.CreateTopic(ctx, 1, rf, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, l.topic)
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Retention must never delete a registration: refuse a topic
		// someone else created without compaction.
		if err := checkCompacted(ctx, adm, l.topic); err != nil {
			return err
		}
	case err != nil:
		if resp.ErrMessage != "" {
			err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
		}
		return fmt.Errorf("create it (or have it created: one partition, cleanup.policy=compact): %w", err)
	}
	_, err = broker.ReadToEnd(ctx, opts, l.topic, nil, l.replay)
	return err
}

// replay takes one record read at open into records and stored.
func (l *TopicLog) replay(r *kgo.Record) error {
	if r.Value == nil {
		return nil // not ours: the registry never deletes
	}
	var rec logRecord
	if err := decodeRecord(r.Value, &rec); err != nil {
		return fmt.Errorf("record at offset %d: %w", r.Offset, err)
	}
	sv := subjectVersion{rec.Subject, rec.Version}
	if id, ok := l.stored[sv]; ok {
		if id != rec.ID {
			return fmt.Errorf("record at offset %d gives subject %q version %d id %d, an earlier one id %d: two registries wrote this topic; "+
				"give each broker one embedded registry, or use one external registry (registry.url)", r.Offset, rec.Subject, rec.Version, rec.ID, id)
		}
		return nil
	}
	l.stored[sv] = rec.ID
	l.records = append(l.records, rec)
	return nil
}

// checkCompacted refuses topic unless its cleanup.policy is exactly
// compact.
func checkCompacted(ctx context.Context, adm *kadm.Client, topic string) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe configs: %w", err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return fmt.Errorf("describe configs: %w", err)
	}
	policy := "delete" // Kafka's default when not reported
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		return fmt.Errorf("cleanup.policy=%s, want compact: retention would delete registrations, and the ids of their schemas would be handed out again; "+
			"fix it with `kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact`", policy, topic)
	}
	return nil
}

// has reports whether the topic holds this version.
func (l *TopicLog) has(sv subjectVersion) bool {
	_, ok := l.stored[sv]
	return ok
}

// append stores one registration and returns once the broker acknowledged
// it (acks=all).
func (l *TopicLog) append(ctx context.Context, rec logRecord) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key, err := json.Marshal(struct {
		Subject string `json:"subject"`
		Version int    `json:"version"`
	}{rec.Subject, rec.Version})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, topicAppendTimeout)
	defer cancel()
	if err := l.cl.ProduceSync(ctx, &kgo.Record{Topic: l.topic, Key: key, Value: value}).FirstErr(); err != nil {
		return fmt.Errorf("append to %s: %w", l.topic, err)
	}
	l.stored[subjectVersion{rec.Subject, rec.Version}] = rec.ID
	return nil
}

// Close closes the client. It may be called more than once.
func (l *TopicLog) Close() { l.closeOnce.Do(l.cl.Close) }

// syncTopic makes the registry, the schema log in data_dir and the topic
// agree, before the registry serves: every version on the topic is put
// into the registry (it may already be there from data_dir, with the same
// id, or the start is refused) and into data_dir's log; then every version
// only data_dir had (a log written before the topic existed, or a topic
// that was deleted) is appended to the topic. Callers own e.
func (e *Embedded) syncTopic(ctx context.Context, l *TopicLog) error {
	ids := make(map[int]bool)
	for _, rec := range e.local {
		ids[rec.ID] = true
	}
	for _, rec := range l.records {
		if have, ok := e.reg.GetSchema(rec.Subject, rec.Version); ok && (have.ID != rec.ID || have.Schema.Schema != rec.Schema.Schema) {
			return fmt.Errorf("schemas topic %s and the registry's data_dir disagree on subject %q version %d (id %d there, id %d here): "+
				"they come from different registries; remove data_dir/registry to use the topic's (it is a cache), or point kafka.brokers at the broker this data_dir belongs to",
				l.topic, rec.Subject, rec.Version, rec.ID, have.ID)
		}
		dup, err := applyRecord(e.reg, rec, ids)
		if err != nil {
			return fmt.Errorf("schemas topic %s (subject %q version %d id %d): %w; remove data_dir/registry if it belongs to another broker",
				l.topic, rec.Subject, rec.Version, rec.ID, err)
		}
		if !dup && e.log != nil && !e.persisted[subjectVersion{rec.Subject, rec.Version}] {
			if err := e.appendRecord(rec); err != nil {
				return err
			}
		}
	}
	for _, rec := range e.local {
		if l.has(subjectVersion{rec.Subject, rec.Version}) {
			continue
		}
		if err := l.append(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}
