package registry

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/sr"
)

// KeyChangeError is returned when an entity's key schema would change: by
// [RegisterKey] when a subject's latest key schema differs from the one
// asked for, and by the pipeline when a table's new shape changes its key
// schema. A record key's bytes are its schema id and its Avro encoding;
// Kafka partitions and compacts by those bytes, so a new key schema (a new
// id, even for the same fields) gives every key other bytes and often
// another partition, and compaction keeps the old and the new record of
// every row (a row deleted later stays live under its old key). No
// compatibility level makes that safe, so key schemas never change.
type KeyChangeError struct {
	Subject string
	// ID is the id the topic's keys are framed with (the subject's latest
	// version, Version, when known; 0 if not).
	ID, Version int
}

func (e *KeyChangeError) Error() string {
	at := fmt.Sprintf("id %d", e.ID)
	if e.Version > 0 {
		at = fmt.Sprintf("version %d, id %d", e.Version, e.ID)
	}
	return fmt.Sprintf("the key schema of subject %q would change (the topic's keys carry %s): a key's bytes are its schema id and encoding, "+
		"and Kafka partitions and compacts by them, so every key would get new bytes (and often another partition) and compaction would keep "+
		"both the old and the new record of every row, a deleted row staying live under its old key. Key schemas never change, whatever "+
		"entities[].compatibility says: keep the key columns' names and types (entities[].key) as they were, or start the entity over on a "+
		"new topic (docs/OPERATIONS.md, Incompatible schema changes)", e.Subject, at)
}

// RegisterKey returns the id of an entity's key schema. A subject without
// a version yet gets it registered; otherwise the schema must be the
// subject's latest version (the one the topic's keys carry), or a
// [*KeyChangeError] is returned and nothing is registered.
func RegisterKey(ctx context.Context, cl *sr.Client, subject, avroSchema string) (int, error) {
	latest, err := cl.SchemaByVersion(ctx, subject, -1)
	switch {
	case hasCode(err, sr.ErrSubjectNotFound), hasCode(err, sr.ErrVersionNotFound):
		return Register(ctx, cl, subject, avroSchema)
	case err != nil:
		return 0, fmt.Errorf("read latest schema of subject %q: %w", subject, err)
	}
	if latest.Schema.Schema == avroSchema {
		return latest.ID, nil
	}
	// A registry may store a schema in another textual form: ask it.
	have, err := cl.LookupSchema(ctx, subject, sr.Schema{Schema: avroSchema, Type: sr.TypeAvro})
	switch {
	case err == nil && have.ID == latest.ID:
		return latest.ID, nil
	case err == nil, hasCode(err, sr.ErrSchemaNotFound):
		return 0, &KeyChangeError{Subject: subject, ID: latest.ID, Version: latest.Version}
	default:
		return 0, fmt.Errorf("look up schema in subject %q: %w", subject, err)
	}
}
