package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// startKafka is an in-process broker standing for the external broker the
// embedded registry keeps its schemas on.
func startKafka(t *testing.T) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

// startWithTopic starts the embedded registry on dataDir, its schemas
// kept on the broker reached with opts.
func startWithTopic(t *testing.T, dataDir string, opts []kgo.Opt) (*Embedded, error) {
	t.Helper()
	topic, err := OpenTopicLog(t.Context(), -1, opts...)
	if err != nil {
		t.Fatalf("OpenTopicLog: %v", err)
	}
	return StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dataDir, Topic: topic})
}

// The scenario: an external broker, the embedded registry's
// data_dir lost, the entities registered again in another order. The
// registry replays its topic, so every schema gets its old id back and no
// id ever means two schemas; a new schema gets a new id.
func TestTopicLogSurvivesLostDataDir(t *testing.T) {
	t.Parallel()
	opts := startKafka(t)
	subjects := []string{"a-key", "a-value", "b-key", "b-value", "c-key", "c-value"}
	schema := func(subject string) string { return avroRecord(strings.ReplaceAll(subject, "-", "_"), "f") }

	first, err := startWithTopic(t, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, s := range subjects {
		ids[s] = mustRegister(t, client(t, first.URL()), s, schema(s))
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	for round, dir := range []string{t.TempDir(), ""} { // a new, empty data_dir; then memory only
		e, err := startWithTopic(t, dir, opts)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cl := client(t, e.URL())
		seen := map[int]string{}
		for i := len(subjects) - 1; i >= 0; i-- { // the other order
			s := subjects[i]
			id := mustRegister(t, cl, s, schema(s))
			if id != ids[s] {
				t.Errorf("round %d: %s registered again got id %d, want %d as before the data_dir was lost", round, s, id, ids[s])
			}
			if other, ok := seen[id]; ok {
				t.Errorf("round %d: id %d means both %s and %s", round, id, other, s)
			}
			seen[id] = s
		}
		// A new schema gets an id no earlier schema has; the next round
		// must give it back too.
		s := fmt.Sprintf("new%d-value", round)
		id := mustRegister(t, cl, s, schema(s))
		if other, ok := seen[id]; ok {
			t.Errorf("round %d: a new schema got id %d, already %s's", round, id, other)
		}
		ids[s] = id
		subjects = append(subjects, s)
		if err := e.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// A data_dir written before the topic existed (or a topic deleted) is
// copied to the topic at start, so that it survives the data_dir; a
// data_dir from another registry than the topic's refuses the start.
func TestTopicLogFromDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	id := mustRegister(t, client(t, old.URL()), "a-value", avroRecord("a", "f"))
	if err := old.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	opts := startKafka(t)
	e, err := startWithTopic(t, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, err = startWithTopic(t, t.TempDir(), opts) // the data_dir lost now
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRegister(t, client(t, e.URL()), "a-value", avroRecord("a", "f")); got != id {
		t.Fatalf("after the data_dir was copied to the topic and lost: got id %d, want %d", got, id)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Another registry's data_dir: a-value version 1 is another schema there.
	other := t.TempDir()
	o := startEmbedded(t, EmbeddedConfig{DataDir: other})
	mustRegister(t, client(t, o.URL()), "a-value", avroRecord("a", "g"))
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = startWithTopic(t, other, opts)
	if err == nil || !strings.Contains(err.Error(), `disagree on subject "a-value" version 1`) || !strings.Contains(err.Error(), "remove data_dir/registry") {
		t.Fatalf("start with another registry's data_dir: got %v, want a refusal naming the subject and the fix", err)
	}
	if _, err := os.Stat(filepath.Join(other, logFile)); err != nil {
		t.Fatalf("the refused data_dir was touched: %v", err)
	}
}

// A schemas topic created by someone else without compaction is refused:
// retention would delete registrations and their ids would come back.
func TestTopicLogRefusesDeletePolicy(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.CreateTopic(SchemasTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	_, err = OpenTopicLog(t.Context(), -1, kgo.SeedBrokers(c.ListenAddrs()...))
	if err == nil || !strings.Contains(err.Error(), "cleanup.policy=delete, want compact") || !strings.Contains(err.Error(), "--add-config cleanup.policy=compact") {
		t.Fatalf("OpenTopicLog on a topic with the delete policy: got %v, want a refusal with the fix", err)
	}
}

// Replaying the topic skips a record without a value (not the
// registry's), and refuses a topic on which one version has two ids: two
// registries wrote it.
func TestTopicLogReplayRefusesTwoIDs(t *testing.T) {
	t.Parallel()
	opts := startKafka(t)
	l, err := OpenTopicLog(t.Context(), -1, opts...)
	if err != nil {
		t.Fatalf("OpenTopicLog: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), topicAppendTimeout)
	defer cancel()
	if err := l.cl.ProduceSync(ctx, &kgo.Record{Topic: SchemasTopic, Key: []byte("someone else's")}).FirstErr(); err != nil {
		t.Fatalf("produce a tombstone: %v", err)
	}
	if err := l.append(ctx, logRecord{Subject: "a-value", Version: 1, ID: 1, Schema: sr.Schema{Schema: `"string"`}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = OpenTopicLog(t.Context(), -1, opts...)
	if err != nil {
		t.Fatalf("OpenTopicLog over a tombstone and one version: %v", err)
	}
	if len(l.records) != 1 || l.records[0].ID != 1 {
		t.Errorf("replayed %+v, want the one version with id 1", l.records)
	}
	if err := l.append(ctx, logRecord{Subject: "a-value", Version: 1, ID: 2, Schema: sr.Schema{Schema: `"string"`}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, err = OpenTopicLog(t.Context(), -1, opts...)
	for _, want := range []string{"record at offset 2", `subject "a-value" version 1 id 2, an earlier one id 1`, "two registries wrote this topic", "registry.url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenTopicLog over two ids for one version: got %v, want it to mention %q", err, want)
		}
	}
}
