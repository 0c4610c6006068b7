package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/source"
)

// CheckSchemaIDs passes an empty topic and one whose newest keys carry
// the entity's key schema id, and refuses, naming both ids, a topic whose
// keys carry another one (the registry moved or lost its data).
func TestCheckKeySchemaID(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 4, nil)
	opts, err := broker.Config{Brokers: []string{b.Addr()}}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	keys := NewTopicKeys(opts...)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := keys.CheckSchemaIDs(ctx, topic, keySchemaID, "", nil); err != nil {
		t.Fatalf("empty topic: %v", err)
	}

	table := accountsTable()
	p := New(newEntities(t, table, topic), newClient(t, b.Addr(), &broker.ProducerConfig{}))
	for id := range int64(3) { // three keys: at least one partition stays empty
		if err := p.Handle(ctx, change(table, source.OpInsert, accountRow(id, 1), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Handle(ctx, change(table, source.OpDelete, nil, keyOnly(1))); err != nil { // a tombstone is framed too
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := keys.CheckSchemaIDs(ctx, topic, keySchemaID, "", nil); err != nil {
		t.Fatalf("keys framed with the entity's id: %v", err)
	}
	err = keys.CheckSchemaIDs(ctx, topic, 99, "", nil)
	var ke *KeyIDError
	if !errors.As(err, &ke) || ke.TopicID != keySchemaID || ke.RegistryID != 99 || ke.Topic != topic {
		t.Fatalf("got %v, want a *KeyIDError with topic id %d and registry id 99", err, keySchemaID)
	}
	for _, w := range []string{"schema id 7", "key schema id 99", "registry.url", "data_dir/registry", "new topic"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}

	// Values: their id must be registered under the value subject.
	if err := keys.CheckSchemaIDs(ctx, topic, keySchemaID, "accounts-value", fakeSubjects{valueSchemaID: "accounts-value"}); err != nil {
		t.Fatalf("values framed with an id of their subject: %v", err)
	}
	err = keys.CheckSchemaIDs(ctx, topic, keySchemaID, "accounts-value", fakeSubjects{valueSchemaID: "other-value"})
	var ve *ValueIDError
	if !errors.As(err, &ve) || ve.ID != valueSchemaID || ve.Subject != "accounts-value" {
		t.Fatalf("values framed with another subject's id: got %v, want a *ValueIDError for id %d", err, valueSchemaID)
	}
	if !strings.Contains(err.Error(), `does not have under subject "accounts-value"`) {
		t.Errorf("error %q does not name the subject", err)
	}
}

// fakeSubjects maps schema ids to the one subject each is registered under.
type fakeSubjects map[int]string

func (f fakeSubjects) InSubject(_ context.Context, id int, subject string) (bool, error) {
	return f[id] == subject, nil
}
