package broker

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
)

// topicConfig returns a topic's config value as the broker describes it.
func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(t.Context(), topic)
	if err != nil {
		t.Fatalf("DescribeTopicConfigs %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("DescribeTopicConfigs %s: %v", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	t.Fatalf("topic %s: config %s not described", topic, key)
	return ""
}

// partitionCount asks the broker itself (kadm's ListTopics may answer from
// a cache up to 5s old).
func partitionCount(e *Embedded, topic string) int {
	return len(e.Cluster().PartitionInfos(topic))
}

func TestEnsureTopicsCreatesCompacted(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	adm := newAdmin(t, e.Addr())
	specs := []TopicSpec{
		{Name: "orders", Partitions: 6, Configs: map[string]string{"delete.retention.ms": "3600000"}},
		{Name: "customers", Partitions: 2, ReplicationFactor: -1},
		{Name: "defaults"}, // broker default partitions
	}

	res := ensure(t, adm, specs...)
	slices.Sort(res.Created)
	if want := []string{"customers", "defaults", "orders"}; !slices.Equal(res.Created, want) {
		t.Fatalf("created: got %v, want %v", res.Created, want)
	}
	for _, s := range specs {
		if got := topicConfig(t, adm, s.Name, "cleanup.policy"); got != "compact" {
			t.Errorf("%s cleanup.policy: got %q, want compact", s.Name, got)
		}
		if s.Partitions > 0 {
			if got := partitionCount(e, s.Name); got != int(s.Partitions) {
				t.Errorf("%s partitions: got %d, want %d", s.Name, got, s.Partitions)
			}
		}
	}
	if got := topicConfig(t, adm, "orders", "delete.retention.ms"); got != "3600000" {
		t.Errorf("orders delete.retention.ms: got %q, want 3600000", got)
	}

	// Idempotent: a second run creates nothing and warns about nothing.
	res = ensure(t, adm, specs...)
	if len(res.Created) != 0 || len(res.Existing) != len(specs) || len(res.PartitionMismatches) != 0 {
		t.Fatalf("second run: got %+v, want every topic existing and no warnings", res)
	}
}

func TestEnsureTopicsExisting(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	adm := newAdmin(t, e.Addr())
	c := e.Cluster()
	// Look the topics up first, so that the client caches "unknown topic"
	// for them: EnsureTopics must not trust that cache.
	if _, err := adm.ListTopics(t.Context(), "plain", "both", "fewer", "new"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		partitions int32
		configs    map[string]string
	}{
		{"plain", 2, nil}, // Kafka's default policy: delete
		{"both", 2, map[string]string{"cleanup.policy": "compact,delete"}},
		{"fewer", 2, map[string]string{"cleanup.policy": "compact"}},
	} {
		if err := c.CreateTopic(tc.name, tc.partitions, tc.configs); err != nil {
			t.Fatalf("create %s: %v", tc.name, err)
		}
	}

	res, err := EnsureTopics(t.Context(), adm, []TopicSpec{
		{Name: "plain", Partitions: 2},
		{Name: "both", Partitions: 2},
		{Name: "fewer", Partitions: 4},
		{Name: "new", Partitions: 1},
	})

	var bad []string
	for _, e := range unjoin(err) {
		var nc *NotCompactError
		if !errors.As(e, &nc) {
			t.Fatalf("got error %v, want only *NotCompactError", e)
		}
		if !strings.Contains(e.Error(), nc.Topic) || !strings.Contains(e.Error(), "cleanup.policy=compact") {
			t.Errorf("error %q should name the topic and the fix", e)
		}
		bad = append(bad, nc.Topic+":"+nc.Policy)
	}
	slices.Sort(bad)
	if want := []string{"both:compact,delete", "plain:delete"}; !slices.Equal(bad, want) {
		t.Fatalf("non-compact topics: got %v, want %v", bad, want)
	}
	if !slices.Equal(res.Created, []string{"new"}) {
		t.Fatalf("created: got %v, want [new] (one bad topic must not stop the others)", res.Created)
	}
	want := []PartitionMismatch{{Topic: "fewer", Want: 4, Got: 2}}
	if !slices.Equal(res.PartitionMismatches, want) {
		t.Fatalf("partition mismatches: got %v, want %v", res.PartitionMismatches, want)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], `"fewer" has 2 partitions, config wants 4`) {
		t.Fatalf("warnings: got %q, want one about fewer", res.Warnings)
	}
	if got := partitionCount(e, "fewer"); got != 2 {
		t.Fatalf("existing topic altered: got %d partitions, want 2", got)
	}
}

// unjoin flattens an errors.Join tree one level.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestEnsureTopicsInvalidSpecs(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	adm := newAdmin(t, e.Addr())
	for _, tc := range []struct {
		name  string
		specs []TopicSpec
		want  string
	}{
		{"empty name", []TopicSpec{{Partitions: 1}}, "empty name"},
		{"duplicate", []TopicSpec{{Name: "a"}, {Name: "a"}}, `"a" is listed twice`},
		{"policy override", []TopicSpec{{Name: "a", Configs: map[string]string{"cleanup.policy": "delete"}}}, "always compact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := EnsureTopics(t.Context(), adm, tc.specs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestEnsureTopicsMaxMessageBytes: a created topic gets the producer's
// limit as max.message.bytes; an existing topic with a lower one is refused
// with both values and the fix, one with a higher or equal one is kept.
func TestEnsureTopicsMaxMessageBytes(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	adm := newAdmin(t, e.Addr())
	c := e.Cluster()
	for name, limit := range map[string]string{"small": "500000", "large": "4000000"} {
		if err := c.CreateTopic(name, 1, map[string]string{"cleanup.policy": "compact", "max.message.bytes": limit}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	const want = 2_000_000
	res, err := EnsureTopics(t.Context(), adm, []TopicSpec{
		{Name: "small", Partitions: 1, MaxMessageBytes: want},
		{Name: "large", Partitions: 1, MaxMessageBytes: want},
		{Name: "fresh", Partitions: 1, MaxMessageBytes: want},
	})
	errs := unjoin(err)
	if len(errs) != 1 {
		t.Fatalf("got errors %v, want one for topic small", errs)
	}
	var ml *MessageLimitError
	if !errors.As(errs[0], &ml) || ml.Topic != "small" || ml.TopicLimit != 500000 || ml.ProducerLimit != want {
		t.Fatalf("got %#v (%v), want *MessageLimitError{small, 500000, %d}", ml, errs[0], want)
	}
	for _, s := range []string{`"small"`, "max.message.bytes=500000", "kafka.max_message_bytes=2000000", "--add-config max.message.bytes=2000000", "kafka.max_message_bytes: 500000"} {
		if !strings.Contains(ml.Error(), s) {
			t.Errorf("error %q does not contain %q", ml.Error(), s)
		}
	}
	if !slices.Equal(res.Created, []string{"fresh"}) {
		t.Fatalf("created: got %v, want [fresh]", res.Created)
	}
	if got := topicConfig(t, adm, "fresh", "max.message.bytes"); got != "2000000" {
		t.Errorf("fresh max.message.bytes: got %q, want 2000000", got)
	}
	if got := topicConfig(t, adm, "small", "max.message.bytes"); got != "500000" {
		t.Errorf("existing topic altered: max.message.bytes %q, want 500000", got)
	}
}

// CheckTopics (what `check` runs) reports an existing topic's low
// max.message.bytes and a non-compacted one, and creates nothing.
func TestCheckTopics(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	adm := newAdmin(t, e.Addr())
	if err := e.Cluster().CreateTopic("small", 1, map[string]string{"cleanup.policy": "compact", "max.message.bytes": "500000"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Cluster().CreateTopic("plain", 1, nil); err != nil {
		t.Fatal(err)
	}
	err := CheckTopics(t.Context(), adm, []TopicSpec{
		{Name: "small", MaxMessageBytes: 1_048_588}, {Name: "plain", MaxMessageBytes: 100}, {Name: "missing", MaxMessageBytes: 1_048_588},
	})
	var ml *MessageLimitError
	var nc *NotCompactError
	if errs := unjoin(err); len(errs) != 2 || !errors.As(err, &ml) || ml.Topic != "small" || !errors.As(err, &nc) || nc.Topic != "plain" {
		t.Fatalf("got %v, want a MessageLimitError for small and a NotCompactError for plain", err)
	}
	if n := len(e.Cluster().PartitionInfos("missing")); n != 0 {
		t.Fatalf("check created topic missing (%d partitions)", n)
	}
}
