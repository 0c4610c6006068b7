package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Topic configs entity topics depend on.
const (
	cleanupPolicy   = "cleanup.policy"
	maxMessageBytes = "max.message.bytes"
)

// TopicSpec is an entity topic as replicator wants it.
type TopicSpec struct {
	// Name is the topic name. Required.
	Name string
	// Partitions is the partition count for a new topic; zero or negative
	// means the broker default (num.partitions). Partitions are the unit of
	// per-key order and of sink parallelism, and Kafka can only add them
	// (which moves keys), so choose generously up front.
	Partitions int32
	// ReplicationFactor for a new topic; -1 or 0 means the broker default
	// (default.replication.factor).
	ReplicationFactor int16
	// Configs are extra topic configs for a new topic. cleanup.policy is
	// always compact and cannot be overridden here.
	Configs map[string]string
	// MaxMessageBytes, when positive, is the largest record batch the
	// producer sends: a new topic gets it as max.message.bytes, and an
	// existing topic whose max.message.bytes is lower is refused with a
	// [*MessageLimitError] (the broker would refuse what the producer
	// accepts, and the stream would stop at the first large row).
	MaxMessageBytes int32
}

// MessageLimitError is returned (wrapped, possibly joined with others) by
// [EnsureTopics] when an existing topic's max.message.bytes is below the
// producer's batch limit (kafka.max_message_bytes).
type MessageLimitError struct {
	Topic string
	// Topic's max.message.bytes, and the producer's limit.
	TopicLimit, ProducerLimit int64
}

func (e *MessageLimitError) Error() string {
	return fmt.Sprintf("topic %q has max.message.bytes=%d, below kafka.max_message_bytes=%d: the broker would refuse a batch the producer sends; "+
		"raise the topic's limit with `kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name %s --add-config max.message.bytes=%d` "+
		"(or `rpk topic alter-config %s --set max.message.bytes=%d`), or set kafka.max_message_bytes: %d",
		e.Topic, e.TopicLimit, e.ProducerLimit, e.Topic, e.ProducerLimit, e.Topic, e.ProducerLimit, e.TopicLimit)
}

// EnsureResult is what [EnsureTopics] did. Its warnings are values for the
// caller to log once, at the top.
type EnsureResult struct {
	// Created are the topics that did not exist and were created.
	Created []string
	// Existing are the topics that already existed and were left alone.
	Existing []string
	// PartitionMismatches are existing topics whose partition count differs
	// from their spec. They keep working (per-key order holds within the
	// existing partitioning), so this is a warning, not an error.
	PartitionMismatches []PartitionMismatch
	// Warnings are the same findings as sentences, ready to log.
	Warnings []string
}

// PartitionMismatch is an existing topic whose partition count is not the
// one its [TopicSpec] asks for.
type PartitionMismatch struct {
	Topic     string
	Want, Got int32
}

func (m PartitionMismatch) String() string {
	return fmt.Sprintf("topic %q has %d partitions, config wants %d: the existing count is kept (changing it moves keys between partitions)",
		m.Topic, m.Got, m.Want)
}

// NotCompactError is returned (wrapped, possibly joined with others) by
// [EnsureTopics] when an existing topic's cleanup.policy is not exactly
// "compact". An entity topic is the source of truth: with "delete" (Kafka's
// default) or "compact,delete", retention eventually deletes the only
// record of keys that have not changed recently, and consumers rebuilding
// from offset zero silently miss them.
type NotCompactError struct {
	Topic string
	// Policy is the topic's current cleanup.policy.
	Policy string
}

func (e *NotCompactError) Error() string {
	return fmt.Sprintf("topic %q has cleanup.policy=%s, want compact (retention would delete entity state); "+
		"fix it with `kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact` "+
		"or `rpk topic alter-config %s --set cleanup.policy=compact`, or delete the topic and republish",
		e.Topic, e.Policy, e.Topic, e.Topic)
}

// EnsureTopics makes every spec'd topic exist as a compacted topic.
//
// A missing topic is created with its partitions, replication factor and
// configs, plus cleanup.policy=compact. An existing topic is never altered:
// if its cleanup.policy (read with DescribeConfigs) is not compact, a
// [*NotCompactError] is returned, since changing a live topic's retention is
// an operator's decision; a different partition count is only reported in
// [EnsureResult.PartitionMismatches]. A topic created concurrently by
// someone else counts as existing and is checked the same way.
//
// Every spec is processed; all problems come back together as one joined
// error whose parts each name their topic. It is safe to call repeatedly.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec) (EnsureResult, error) {
	var res EnsureResult
	names := make([]string, 0, len(specs))
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		if s.Name == "" {
			return res, errors.New("ensure topics: a topic spec has an empty name")
		}
		if seen[s.Name] {
			return res, fmt.Errorf("ensure topics: topic %q is listed twice", s.Name)
		}
		if v, ok := s.Configs[cleanupPolicy]; ok && v != "compact" {
			return res, fmt.Errorf("topic %q: configs set %s=%s, but entity topics are always compact", s.Name, cleanupPolicy, v)
		}
		if _, ok := s.Configs[maxMessageBytes]; ok && s.MaxMessageBytes > 0 {
			return res, fmt.Errorf("topic %q: both configs and MaxMessageBytes set %s", s.Name, maxMessageBytes)
		}
		seen[s.Name] = true
		names = append(names, s.Name)
	}
	if len(specs) == 0 {
		return res, nil
	}

	// kadm answers metadata from kgo's cache, which keeps answers
	// (including "unknown topic") for up to MetadataMinAge, 5s by default.
	// Asking for authorized operations bypasses that cache (kadm v1.20
	// metadata.go), so existence and partition counts are current.
	ctx = kadm.WithAuthorizedOps(ctx)
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return res, fmt.Errorf("list topics: %w", err)
	}

	var (
		errs     []error
		existing []TopicSpec
		raced    []string
	)
	for _, s := range specs {
		d, ok := details[s.Name]
		if ok && d.Err == nil {
			existing = append(existing, s)
			continue
		}
		if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("topic %q: metadata: %w", s.Name, d.Err))
			continue
		}
		created, err := createTopic(ctx, adm, s)
		switch {
		case err == nil:
			res.Created = append(res.Created, s.Name)
			if s.Partitions > 0 && created.NumPartitions > 0 && created.NumPartitions != s.Partitions {
				// Only a broker that ignores the request would do this.
				res.PartitionMismatches = append(res.PartitionMismatches,
					PartitionMismatch{Topic: s.Name, Want: s.Partitions, Got: created.NumPartitions})
			}
		case errors.Is(err, kerr.TopicAlreadyExists):
			existing = append(existing, s)
			raced = append(raced, s.Name)
		default:
			errs = append(errs, fmt.Errorf("topic %q: create: %w", s.Name, err))
		}
	}

	if len(raced) > 0 {
		more, err := adm.ListTopics(ctx, raced...)
		if err != nil {
			errs = append(errs, fmt.Errorf("list topics: %w", err))
			return res, errors.Join(errs...)
		}
		maps.Copy(details, more)
	}
	if len(existing) > 0 {
		errs = append(errs, checkExisting(ctx, adm, existing, details, &res)...)
	}
	for _, m := range res.PartitionMismatches {
		res.Warnings = append(res.Warnings, m.String())
	}
	return res, errors.Join(errs...)
}

// CheckTopics checks the spec'd topics that exist as [EnsureTopics] would
// (cleanup.policy, max.message.bytes), without creating or altering any:
// what `replicator check` reports. Missing topics are fine (EnsureTopics
// creates them); partition mismatches are left to EnsureTopics' warnings.
func CheckTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	if len(names) == 0 {
		return nil
	}
	details, err := adm.ListTopics(kadm.WithAuthorizedOps(ctx), names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var existing []TopicSpec
	for _, s := range specs {
		if d, ok := details[s.Name]; ok && d.Err == nil {
			existing = append(existing, s)
		}
	}
	if len(existing) == 0 {
		return nil
	}
	var res EnsureResult
	return errors.Join(checkExisting(ctx, adm, existing, details, &res)...)
}

// createTopic creates one topic with cleanup.policy=compact and its extra
// configs. A broker error message, when present, is appended to the error.
func createTopic(ctx context.Context, adm *kadm.Client, s TopicSpec) (kadm.CreateTopicResponse, error) {
	configs := make(map[string]*string, len(s.Configs)+1)
	for k, v := range s.Configs {
		configs[k] = kadm.StringPtr(v)
	}
	configs[cleanupPolicy] = kadm.StringPtr("compact")
	if s.MaxMessageBytes > 0 {
		configs[maxMessageBytes] = kadm.StringPtr(strconv.Itoa(int(s.MaxMessageBytes)))
	}
	partitions := s.Partitions
	if partitions <= 0 {
		partitions = -1
	}
	rf := s.ReplicationFactor
	if rf <= 0 {
		rf = -1
	}
	resp, err := adm.CreateTopic(ctx, partitions, rf, configs, s.Name)
	if err != nil && resp.ErrMessage != "" {
		return resp, fmt.Errorf("%w: %s", err, resp.ErrMessage)
	}
	return resp, err
}

// checkExisting verifies cleanup.policy and partition counts of existing
// topics, recording warnings in res and returning one error per bad topic.
func checkExisting(ctx context.Context, adm *kadm.Client, existing []TopicSpec, details kadm.TopicDetails, res *EnsureResult) []error {
	names := make([]string, len(existing))
	for i, s := range existing {
		names[i] = s.Name
	}
	configs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return []error{fmt.Errorf("describe topic configs: %w", err)}
	}
	var errs []error
	for _, s := range existing {
		res.Existing = append(res.Existing, s.Name)
		rc, err := configs.On(s.Name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("topic %q: describe configs: %w", s.Name, err))
			continue
		}
		policy := "delete" // Kafka's default when the broker does not report it
		limit := int64(-1) // not reported: the broker's message.max.bytes applies, unknown here
		for _, c := range rc.Configs {
			switch {
			case c.Value == nil:
			case c.Key == cleanupPolicy:
				policy = *c.Value
			case c.Key == maxMessageBytes:
				if n, err := strconv.ParseInt(*c.Value, 10, 64); err == nil {
					limit = n
				}
			}
		}
		if !isCompactOnly(policy) {
			errs = append(errs, &NotCompactError{Topic: s.Name, Policy: policy})
		}
		if s.MaxMessageBytes > 0 && limit >= 0 && limit < int64(s.MaxMessageBytes) {
			errs = append(errs, &MessageLimitError{Topic: s.Name, TopicLimit: limit, ProducerLimit: int64(s.MaxMessageBytes)})
		}
		if d, ok := details[s.Name]; ok && s.Partitions > 0 && int32(len(d.Partitions)) != s.Partitions {
			res.PartitionMismatches = append(res.PartitionMismatches,
				PartitionMismatch{Topic: s.Name, Want: s.Partitions, Got: int32(len(d.Partitions))})
		}
	}
	return errs
}

// isCompactOnly reports whether a cleanup.policy list is exactly compact.
func isCompactOnly(policy string) bool {
	var parts []string
	for p := range strings.SplitSeq(policy, ",") {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" && !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	return len(parts) == 1 && parts[0] == "compact"
}
