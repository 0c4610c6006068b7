package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/replicator/replicator/listenaddr"
	"github.com/replicator/replicator/relation"
)

// replicationIdent is what we accept for slot and publication names: they
// are spliced into replication commands, so only PostgreSQL's unquoted
// identifier alphabet is allowed (slot names are further limited by
// PostgreSQL to lower case, digits and underscore).
var replicationIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// topicName is Kafka's legal topic alphabet.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// MaxPartitions bounds kafka.partitions and an entity's partitions: a
// topic's partitions cost the broker memory and file handles each, and a
// typo (99999999999) must not become a request for a billion of them.
const MaxPartitions = 10_000

// maxReplication bounds kafka.replication_factor: no cluster has more
// brokers than this, and the protocol's field is 16 bits.
const maxReplication = 100

// Validate reports every problem at once, each naming its key and how to
// fix it, for `run`: the source and its entities are required.
func (c *Config) Validate() error {
	errs := c.validateCommon()
	if c.Source.URL == "" {
		errs = append(errs, fmt.Errorf("%s: required: the PostgreSQL connection URL, e.g. postgres://user@host:5432/db (or set REPLICATOR_SOURCE_URL)", KeySourceURL))
	} else if _, ok := redactSource(c.Source.URL); !ok {
		errs = append(errs, fmt.Errorf("%s: does not parse (not shown: it may hold a password): write postgres://user:password@host:5432/db with special characters percent-encoded (@ as %%40, / as %%2F, : as %%3A), or host=h user=u dbname=d with values containing spaces in single quotes", KeySourceURL))
	}
	errs = append(errs, c.validateEntities()...)
	errs = append(errs, c.validateListenOverlap()...)
	errs = append(errs, c.validateReadModels()...)
	return errors.Join(errs...)
}

// validateListenOverlap reports two of the addresses `run` listens on
// (the embedded broker's, the embedded registry's, metrics.listen) that
// are one: each binds on its own, so `check` (which tries them one by
// one) passed them while `run` failed at start with "address already in
// use", naming only the second.
func (c *Config) validateListenOverlap() []error {
	type listener struct{ key, addr string }
	var ls []listener
	if c.EmbeddedKafka() {
		ls = append(ls, listener{KeyKafkaListen, c.Kafka.Listen})
	}
	if c.EmbeddedRegistry() {
		ls = append(ls, listener{KeyRegistryListen, c.Registry.Listen})
	}
	if c.Metrics.Listen != "" {
		ls = append(ls, listener{KeyMetricsListen, c.Metrics.Listen})
	}
	var errs []error
	for i, a := range ls {
		for _, b := range ls[:i] {
			if sameListenAddr(a.addr, b.addr) {
				errs = append(errs, fmt.Errorf("%s: %s is the address of %s (%s) too: `replicator run` listens on both; give each its own port", a.key, a.addr, b.key, b.addr))
			}
		}
	}
	return errs
}

// sameListenAddr reports whether listening on a and then on b would
// collide: the same port (not 0, which picks a free one) on the same
// host, or on any host when either listens on every interface. localhost
// is 127.0.0.1, which Go binds for it. Addresses that do not parse are
// reported by their own checks.
func sameListenAddr(a, b string) bool {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil {
		return false
	}
	na, erra := net.LookupPort("tcp", pa)
	nb, errb := net.LookupPort("tcp", pb)
	if erra != nil || errb != nil || na == 0 || na != nb {
		return false
	}
	ipa, ipb := listenIP(ha), listenIP(hb)
	switch {
	case ipa == nil || ipb == nil:
		return strings.EqualFold(ha, hb)
	case ipa.IsUnspecified() || ipb.IsUnspecified():
		return true
	}
	return ipa.Equal(ipb)
}

// listenIP is the IP a listen host binds: every interface for "", the
// loopback for localhost, nil for another name.
func listenIP(host string) net.IP {
	switch {
	case host == "":
		return net.IPv6unspecified
	case strings.EqualFold(host, "localhost"):
		return net.IPv4(127, 0, 0, 1)
	}
	return net.ParseIP(host)
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
	durationIn := func(key string, d, lo, hi time.Duration, why string) {
		if d < lo || d > hi {
			bad(key, "%v must be between %v and %v (%s)", d, lo, hi, why)
		}
	}
	durationIn(KeySourceStatus, c.Source.StatusInterval, 100*time.Millisecond, 10*time.Minute,
		"how often the confirmed LSN is reported to PostgreSQL; keep it below the server's wal_sender_timeout")
	if c.Source.SnapshotWorkers < 1 || c.Source.SnapshotWorkers > 64 {
		bad(KeySnapshotWorkers, "%d must be between 1 and 64 (connections reading the initial snapshot in parallel)", c.Source.SnapshotWorkers)
	}
	if c.Source.SnapshotChunkRows < 100 || c.Source.SnapshotChunkRows > 10_000_000 {
		bad(KeySnapshotChunkRows, "%d must be between 100 and 10000000 (rows per chunk of the initial snapshot)", c.Source.SnapshotChunkRows)
	}
	if c.Source.SnapshotGCPercent < 0 || c.Source.SnapshotGCPercent > 1000 {
		bad(KeySnapshotGCPercent, "%d must be between 0 and 1000 (Go's GC target during the initial snapshot, as GOGC; 0 leaves it alone)", c.Source.SnapshotGCPercent)
	}
	if c.Sink.GCPercent < 0 || c.Sink.GCPercent > 1000 {
		bad(KeySinkGCPercent, "%d must be between 0 and 1000 (Go's GC target of `replicator sink`, as GOGC; 0 leaves it alone)", c.Sink.GCPercent)
	}
	durationIn(KeySnapshotProgress, c.Source.SnapshotProgressInterval, 100*time.Millisecond, 24*time.Hour,
		"how often snapshot progress is logged")
	if rc := c.Source.Reconnect; rc.InitialBackoff < 10*time.Millisecond || rc.InitialBackoff > time.Minute {
		bad(KeySourceReconnectInitial, "%v must be between 10ms and 1m0s (the first wait before reconnecting)", rc.InitialBackoff)
	} else if rc.MaxBackoff < rc.InitialBackoff {
		bad(KeySourceReconnectMax, "%v is below %s (%v)", rc.MaxBackoff, KeySourceReconnectInitial, rc.InitialBackoff)
	} else {
		durationIn(KeySourceReconnectMax, rc.MaxBackoff, rc.InitialBackoff, time.Hour, "the longest wait between reconnect attempts")
	}
	if g := c.Source.Reconnect.GiveUpAfter; g < 0 || (g > 0 && g < time.Second) || g > 365*24*time.Hour {
		bad(KeySourceReconnectGiveUp, "%v must be 0s (never give up) or between 1s and 8760h0m0s, such as 10m", g)
	}
	switch c.Source.UnconstrainedNumeric {
	case "string", "double":
	default:
		bad(KeySourceNumeric, "%q is not one of string, double", c.Source.UnconstrainedNumeric)
	}
	for _, b := range c.Kafka.Brokers {
		if err := checkAddr(b); err != nil {
			bad(KeyKafkaBrokers, "%q is not host:port (%v)", b, err)
		}
	}
	if c.EmbeddedKafka() {
		if err := checkAddr(c.Kafka.Listen); err != nil {
			bad(KeyKafkaListen, "%q is not host:port (%v)", c.Kafka.Listen, err)
		} else if !listenaddr.IsLoopback(c.Kafka.Listen) {
			switch strings.ToUpper(c.Kafka.SASL.Mechanism) {
			case "":
				bad(KeyKafkaListen, "%s is not a loopback address: the embedded broker would serve anyone who can reach it; set %s (SCRAM-SHA-256 or SCRAM-SHA-512), %s and %s (better REPLICATOR_KAFKA_SASL_PASSWORD) so that it requires them, or listen on 127.0.0.1",
					c.Kafka.Listen, KeyKafkaSASLMechanism, KeyKafkaSASLUser, KeyKafkaSASLPassword)
			case "PLAIN":
				if !c.Kafka.TLS.Enabled {
					bad(KeyKafkaSASLMechanism, "PLAIN with %s %s would send the password in clear over the network: use SCRAM-SHA-256 or SCRAM-SHA-512, or serve TLS (%s with %s and %s)", KeyKafkaListen, c.Kafka.Listen, KeyKafkaTLSEnabled, KeyKafkaTLSCert, KeyKafkaTLSKey)
				}
			}
		}
		if c.Kafka.TLS.Enabled && (c.Kafka.TLS.CertFile == "" || c.Kafka.TLS.KeyFile == "") {
			bad(KeyKafkaTLSEnabled, "the embedded broker serves TLS with %s and %s: set both", KeyKafkaTLSCert, KeyKafkaTLSKey)
		}
	}
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Password == "" {
		bad(KeyKafkaSASLPassword, "required when %s is set (set it through REPLICATOR_KAFKA_SASL_PASSWORD rather than the file)", KeyKafkaSASLMechanism)
	}
	if c.Kafka.Partitions < 1 || c.Kafka.Partitions > MaxPartitions {
		bad(KeyKafkaPartitions, "%d must be between 1 and %d (partitions of each topic created)", c.Kafka.Partitions, MaxPartitions)
	}
	if r := c.Kafka.ReplicationFactor; r != -1 && (r < 1 || r > maxReplication) {
		bad(KeyKafkaReplication, "%d must be -1 (broker default) or between 1 and %d", r, maxReplication)
	}
	switch c.Kafka.Compression {
	case "none", "lz4", "zstd", "snappy", "gzip":
	default:
		bad(KeyKafkaCompression, "%q is not one of none, lz4, zstd, snappy, gzip", c.Kafka.Compression)
	}
	if c.Kafka.MaxBufferedRecords < 1 || c.Kafka.MaxBufferedRecords > 10_000_000 {
		bad(KeyKafkaMaxBuffered, "%d must be between 1 and 10000000 (records in flight before the stream pauses)", c.Kafka.MaxBufferedRecords)
	}
	durationIn(KeyKafkaLinger, c.Kafka.Linger, 0, 10*time.Second,
		"how long a partition waits for more records before its batch is sent; 0 sends at once")
	if c.Kafka.MaxMessageBytes < MinMaxMessageBytes || c.Kafka.MaxMessageBytes > MaxMaxMessageBytes {
		bad(KeyKafkaMaxMessage, "%d is not between %d and %d (bytes; Kafka's default is %d)",
			c.Kafka.MaxMessageBytes, MinMaxMessageBytes, MaxMaxMessageBytes, DefaultMaxMessageBytes)
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
			bad(KeyRegistryURL, "%q is not an http(s) URL", RedactRegistryURL(c.Registry.URL))
		} else if u.User != nil {
			// The registry client refuses them too, but only once run or
			// check builds it, past "config ok".
			bad(KeyRegistryURL, "%q: credentials in the URL are not supported: set %s and %s (better REPLICATOR_REGISTRY_PASSWORD)", RedactRegistryURL(c.Registry.URL), KeyRegistryUser, KeyRegistryPassword)
		}
		if c.Registry.Password != "" && c.Registry.Username == "" {
			bad(KeyRegistryUser, "required when %s is set", KeyRegistryPassword)
		}
		if c.Registry.CertFile != "" || c.Registry.KeyFile != "" {
			bad(KeyRegistryCert, "%s and %s are the embedded registry's certificate: not used with %s", KeyRegistryCert, KeyRegistryKey, KeyRegistryURL)
		}
	} else if (c.Registry.CertFile == "") != (c.Registry.KeyFile == "") {
		bad(KeyRegistryCert, "%s and %s: set both or neither", KeyRegistryCert, KeyRegistryKey)
	} else if err := checkAddr(c.Registry.Listen); err != nil {
		bad(KeyRegistryListen, "%q is not host:port (%v)", c.Registry.Listen, err)
	} else {
		if (c.Registry.Username == "") != (c.Registry.Password == "") {
			bad(KeyRegistryUser, "%s and %s: set both or neither (the embedded registry then requires them)", KeyRegistryUser, KeyRegistryPassword)
		}
		if c.Registry.Username == "" && !listenaddr.IsLoopback(c.Registry.Listen) {
			bad(KeyRegistryListen, "%s is not a loopback address: the embedded registry would serve anyone who can reach it; set %s and %s (better REPLICATOR_REGISTRY_PASSWORD) so that it requires them, or listen on 127.0.0.1",
				c.Registry.Listen, KeyRegistryUser, KeyRegistryPassword)
		}
	}
	errs = append(errs, c.validateOps()...)
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
		if e.Partitions < 1 || e.Partitions > MaxPartitions {
			errs = append(errs, fmt.Errorf("%s.partitions: %d must be between 1 and %d", key, e.Partitions, MaxPartitions))
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

// checkAddr checks that addr is host:port with a port that can be used:
// net.SplitHostPort alone takes "127.0.0.1:99999" and "127.0.0.1:http2",
// which fail only when the listener starts or the client dials. A port may
// be a number (0-65535) or a service name known to this machine.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	return nil
}
