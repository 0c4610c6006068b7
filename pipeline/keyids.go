package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/replicator/replicator/broker"
)

// KeyIDError is returned by [TopicKeys.CheckSchemaIDs] when the newest
// record of a partition carries a key framed with another schema id than
// the one the registry gives the entity's key schema now. The key schema
// is the same (it never changes), so the registry is not the one that
// registered the topic's schemas: it moved, or lost its data and numbered
// them again. Producing on would give every key other bytes, and
// compaction would keep both records of every row.
type KeyIDError struct {
	Topic     string
	Partition int32
	Offset    int64
	// TopicID is the id in the record's key, RegistryID the registry's.
	TopicID, RegistryID int
}

func (e *KeyIDError) Error() string {
	return fmt.Sprintf("topic %q holds keys framed with schema id %d (partition %d, offset %d), but the schema registry gives the same key schema id %d: "+
		"it is not the registry that registered this topic's schemas (moved, or it lost its data and numbered schemas again). Producing on would give every key "+
		"other bytes, and compaction would keep both the old and the new record of every row. Point registry.url at the registry that issued id %d "+
		"(or restore its data: for the embedded registry, data_dir/registry), or start the entity over on a new topic (docs/OPERATIONS.md, Incompatible schema changes)",
		e.Topic, e.TopicID, e.Partition, e.Offset, e.RegistryID, e.TopicID)
}

// ValueIDError is returned by [TopicKeys.CheckSchemaIDs] when the newest
// record of a partition carries a value framed with a schema id the
// registry does not know under the topic's value subject: the registry
// moved or lost its data, and consumers would decode the topic's records
// with no schema or another topic's.
type ValueIDError struct {
	Topic, Subject string
	Partition      int32
	Offset         int64
	ID             int
}

func (e *ValueIDError) Error() string {
	return fmt.Sprintf("topic %q holds values framed with schema id %d (partition %d, offset %d), which the schema registry does not have under subject %q: "+
		"it is not the registry that registered this topic's schemas (moved, or it lost its data and numbered schemas again), and consumers would decode "+
		"these records with no schema or another's. Point registry.url at the registry that issued them (or restore its data: for the embedded registry, "+
		"data_dir/registry), or start the entity over on a new topic (docs/OPERATIONS.md, Incompatible schema changes)",
		e.Topic, e.ID, e.Partition, e.Offset, e.Subject)
}

// subjectIDs tells whether a schema id is registered under a subject
// (*registry.Schemas).
type subjectIDs interface {
	InSubject(ctx context.Context, id int, subject string) (bool, error)
}

// CheckSchemaIDs reads the newest record of every non-empty partition of
// topic and checks the schema ids its key and value are framed with
// (Confluent wire format: magic 0, 4-byte big-endian id) against the
// registry the pipeline will use: a key must carry keyID, or a
// [*KeyIDError] is returned; a value's id must be registered under
// valueSubject (any version: older records keep older ids), or a
// [*ValueIDError] is returned. reg nil skips the values. Bytes not in that
// format are not replicator's and are ignored. An empty topic passes.
func (r *TopicKeys) CheckSchemaIDs(ctx context.Context, topic string, keyID int, valueSubject string, reg subjectIDs) error {
	recs, err := broker.ReadNewest(ctx, r.opts, topic)
	if err != nil {
		return fmt.Errorf("read the newest records of %s: %w", topic, err)
	}
	for _, rec := range recs {
		if id, ok := framedID(rec.Key); ok && id != keyID {
			return &KeyIDError{Topic: topic, Partition: rec.Partition, Offset: rec.Offset, TopicID: id, RegistryID: keyID}
		}
	}
	if reg == nil {
		return nil
	}
	checked := map[int]bool{}
	for _, rec := range recs {
		id, ok := framedID(rec.Value)
		if !ok || checked[id] {
			continue
		}
		checked[id] = true
		in, err := reg.InSubject(ctx, id, valueSubject)
		if err != nil {
			return fmt.Errorf("topic %q: look up schema id %d: %w", topic, id, err)
		}
		if !in {
			return &ValueIDError{Topic: topic, Subject: valueSubject, Partition: rec.Partition, Offset: rec.Offset, ID: id}
		}
	}
	return nil
}

// framedID is the schema id of Confluent-framed bytes.
func framedID(b []byte) (int, bool) {
	if len(b) < 5 || b[0] != 0 {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(b[1:5])), true
}
