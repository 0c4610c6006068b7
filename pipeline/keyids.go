package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KeyIDError is returned by [TopicKeys.CheckKeySchemaID] when the newest
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

// CheckKeySchemaID reads the newest record of every non-empty partition
// of topic and returns a [*KeyIDError] if its key is framed (Confluent
// wire format: magic 0, 4-byte big-endian id) with another schema id than
// keyID. A key not in that format is not replicator's and is ignored. An
// empty topic passes.
func (r *TopicKeys) CheckKeySchemaID(ctx context.Context, topic string, keyID int) error {
	cl, err := kgo.NewClient(r.opts...)
	if err != nil {
		return fmt.Errorf("consumer client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	last := map[int32]kgo.Offset{}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); !ok || o.Offset > s.Offset {
			last[o.Partition] = kgo.NewOffset().At(o.Offset - 1)
			want[o.Partition] = o.Offset - 1
		}
	})
	if len(last) == 0 {
		return nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: last})
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read the newest record of %s (%d partitions left): %w", topic, len(want), err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			ferr = fmt.Errorf("fetch %s partition %d: %w", topic, p, err)
		})
		if ferr != nil {
			return ferr
		}
		var found *KeyIDError
		fs.EachRecord(func(rec *kgo.Record) {
			if _, ok := want[rec.Partition]; !ok {
				return
			}
			// The first record fetched is the one at end-1: compaction
			// never removes a partition's newest record.
			delete(want, rec.Partition)
			if len(rec.Key) < 5 || rec.Key[0] != 0 {
				return
			}
			if id := int(binary.BigEndian.Uint32(rec.Key[1:5])); id != keyID && found == nil {
				found = &KeyIDError{Topic: topic, Partition: rec.Partition, Offset: rec.Offset, TopicID: id, RegistryID: keyID}
			}
		})
		if found != nil {
			return found
		}
	}
	return nil
}
