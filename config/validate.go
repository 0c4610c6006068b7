package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/replicator/replicator/relation"
)

// replicationIdent is what we accept for slot and publication names: they
// are spliced into replication commands, so only PostgreSQL's unquoted
// identifier alphabet is allowed (slot names are further limited by
// PostgreSQL to lower case, digits and underscore).
var replicationIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// topicName is Kafka's legal topic alphabet.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Validate reports every problem at once, each naming its key and how to
// fix it, for `run`: the source and its entities are required.
func (c *Config) Validate() error {
	errs := c.validateCommon()
	if c.Source.URL == "" {
		errs = append(errs, fmt.Errorf("%s: required: the PostgreSQL connection URL, e.g. postgres://user@host:5432/db (or set REPLICATOR_SOURCE_URL)", KeySourceURL))
	}
	errs = append(errs, c.validateEntities()...)
	errs = append(errs, c.validateReadModels()...)
	return errors.Join(errs...)
}

// ValidateSink is [Config.Validate] for `sink`: at least one read model is
// required; source.url and entities are optional (entities, when given,
// are checked: read-model sources may name them).
func (c *Config) ValidateSink() error {
	errs := c.validateCommon()
	if len(c.Entities) > 0 {
		errs = append(errs, c.validateEntities()...)
	}
	if len(c.ReadModels) == 0 {
		errs = append(errs, fmt.Errorf("%s: at least one read model is required, e.g.\n  read_models:\n    - name: customers\n      store: sqlite://./read.db\n      key: id\n      sources:\n        - entity: customers\n          key: id\n          columns: {name: name}", KeyReadModels))
	}
	errs = append(errs, c.validateReadModels()...)
	return errors.Join(errs...)
}

func (c *Config) validateCommon() []error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.DataDir == "" {
		bad(KeyDataDir, "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad(KeyLogLevel, "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad(KeyLogFormat, "%q is not one of text, json", c.Log.Format)
	}
	if !replicationIdent.MatchString(c.Source.Slot) {
		bad(KeySourceSlot, "%q must be 1-63 characters of a-z, 0-9 and _ and not start with a digit", c.Source.Slot)
	}
	if !replicationIdent.MatchString(c.Source.Publication) {
		bad(KeySourcePublication, "%q must be 1-63 characters of a-z, 0-9 and _ and not start with a digit", c.Source.Publication)
	}
	switch c.Source.Snapshot {
	case SnapshotInitial, SnapshotNever:
	default:
		bad(KeySourceSnapshot, "%q is not one of %s, %s", c.Source.Snapshot, SnapshotInitial, SnapshotNever)
	}
	if c.Source.StatusInterval <= 0 {
		bad(KeySourceStatus, "must be a positive duration such as 10s")
	}
	if c.Source.SnapshotWorkers < 1 || c.Source.SnapshotWorkers > 64 {
		bad(KeySnapshotWorkers, "%d must be between 1 and 64 (connections reading the initial snapshot in parallel)", c.Source.SnapshotWorkers)
	}
	if c.Source.SnapshotChunkRows < 100 || c.Source.SnapshotChunkRows > 10_000_000 {
		bad(KeySnapshotChunkRows, "%d must be between 100 and 10000000 (rows per chunk of the initial snapshot)", c.Source.SnapshotChunkRows)
	}
	if c.Source.SnapshotGCPercent < 0 || c.Source.SnapshotGCPercent > 1000 {
		bad(KeySnapshotGCPercent, "%d must be between 0 and 1000 (Go's GC target during the initial snapshot, as GOGC; 0 leaves it alone)", c.Source.SnapshotGCPercent)
	}
	if c.Source.SnapshotProgressInterval < 100*time.Millisecond {
		bad(KeySnapshotProgress, "must be a duration of at least 100ms such as 10s")
	}
	if rc := c.Source.Reconnect; rc.InitialBackoff <= 0 {
		bad(KeySourceReconnectInitial, "must be a positive duration such as 500ms")
	} else if rc.MaxBackoff < rc.InitialBackoff {
		bad(KeySourceReconnectMax, "%v is below %s (%v)", rc.MaxBackoff, KeySourceReconnectInitial, rc.InitialBackoff)
	}
	if c.Source.Reconnect.GiveUpAfter < 0 {
		bad(KeySourceReconnectGiveUp, "must be 0 (never give up) or a positive duration such as 10m")
	}
	switch c.Source.UnconstrainedNumeric {
	case "string", "double":
	default:
		bad(KeySourceNumeric, "%q is not one of string, double", c.Source.UnconstrainedNumeric)
	}
	for _, b := range c.Kafka.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad(KeyKafkaBrokers, "%q is not host:port", b)
		}
	}
	if c.EmbeddedKafka() {
		if _, _, err := net.SplitHostPort(c.Kafka.Listen); err != nil {
			bad(KeyKafkaListen, "%q is not host:port", c.Kafka.Listen)
		}
	}
	if c.Kafka.Partitions < 1 {
		bad(KeyKafkaPartitions, "must be at least 1")
	}
	if c.Kafka.ReplicationFactor == 0 || c.Kafka.ReplicationFactor < -1 {
		bad(KeyKafkaReplication, "must be -1 (broker default) or at least 1")
	}
	switch c.Kafka.Compression {
	case "none", "lz4", "zstd", "snappy", "gzip":
	default:
		bad(KeyKafkaCompression, "%q is not one of none, lz4, zstd, snappy, gzip", c.Kafka.Compression)
	}
	if c.Kafka.MaxBufferedRecords < 1 {
		bad(KeyKafkaMaxBuffered, "must be at least 1")
	}
	switch strings.ToUpper(c.Kafka.SASL.Mechanism) {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		bad(KeyKafkaSASLMechanism, "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.Kafka.SASL.Mechanism)
	}
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Username == "" {
		bad(KeyKafkaSASLUser, "required when %s is set", KeyKafkaSASLMechanism)
	}
	if c.Registry.URL != "" {
		if u, err := url.Parse(c.Registry.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(KeyRegistryURL, "%q is not an http(s) URL", RedactURL(c.Registry.URL))
		}
	} else if _, _, err := net.SplitHostPort(c.Registry.Listen); err != nil {
		bad(KeyRegistryListen, "%q is not host:port", c.Registry.Listen)
	}
	return errs
}

func (c *Config) validateEntities() []error {
	var errs []error
	if len(c.Entities) == 0 {
		return []error{fmt.Errorf("%s: at least one entity is required, e.g.\n  entities:\n    - table: public.orders", KeyEntities)}
	}
	names, topics, tables := map[string]int{}, map[string]int{}, map[string]int{}
	for i, e := range c.Entities {
		key := fmt.Sprintf("%s[%d]", KeyEntities, i)
		if e.Table == "" {
			errs = append(errs, fmt.Errorf("%s.table: required", key))
			continue
		}
		schema, table, err := relation.ParseQualifiedName(e.Table)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.table: %w", key, err))
			continue
		}
		if j, dup := tables[schema+"."+table]; dup {
			errs = append(errs, fmt.Errorf("%s.table: %s is already exported by %s[%d]", key, e.Table, KeyEntities, j))
		}
		tables[schema+"."+table] = i
		if j, dup := names[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by %s[%d]", key, e.Name, KeyEntities, j))
		}
		names[e.Name] = i
		if !topicName.MatchString(e.Topic) || e.Topic == "." || e.Topic == ".." {
			errs = append(errs, fmt.Errorf("%s.topic: %q is not a legal Kafka topic name (letters, digits, '.', '_', '-')", key, e.Topic))
		}
		if j, dup := topics[e.Topic]; dup {
			errs = append(errs, fmt.Errorf("%s.topic: %q is already used by %s[%d]", key, e.Topic, KeyEntities, j))
		}
		topics[e.Topic] = i
		if e.Partitions < 1 {
			errs = append(errs, fmt.Errorf("%s.partitions: must be at least 1", key))
		}
		switch e.OnTruncate {
		case OnTruncateTombstone, OnTruncateFail:
		default:
			errs = append(errs, fmt.Errorf("%s.on_truncate: %q is not one of %s, %s", key, e.OnTruncate, OnTruncateTombstone, OnTruncateFail))
		}
		switch e.Compatibility {
		case "full", "backward", "none":
		default:
			errs = append(errs, fmt.Errorf("%s.compatibility: %q is not one of full, backward, none", key, e.Compatibility))
		}
		for _, list := range []struct {
			name string
			cols []string
		}{{"key", e.Key}, {"columns", e.Columns}, {"as_string", e.AsString}} {
			seen := map[string]bool{}
			for _, col := range list.cols {
				if col == "" {
					errs = append(errs, fmt.Errorf("%s.%s: empty column name", key, list.name))
				}
				if seen[col] {
					errs = append(errs, fmt.Errorf("%s.%s: column %q listed twice", key, list.name, col))
				}
				seen[col] = true
			}
		}
	}
	return errs
}
