// Package config is replicator's one typed configuration: loaded by viper from
// a YAML file, REPLICATOR_* environment variables and command-line flags,
// defaulted in one place and validated with messages that name the key.
//
// It is the only package that imports viper. Components receive their own
// sub-struct, never a *viper.Viper.
package config

import (
	"fmt"
	"time"
)

// Key names, kept as constants so messages, defaults and flags agree.
const (
	KeyDataDir            = "data_dir"
	KeyLogLevel           = "log.level"
	KeyLogFormat          = "log.format"
	KeySourceURL          = "source.url"
	KeySourceSlot         = "source.slot"
	KeySourcePublication  = "source.publication"
	KeySourceSnapshot     = "source.snapshot"
	KeySourceStatus       = "source.status_interval"
	KeySnapshotWorkers    = "source.snapshot_workers"
	KeySnapshotChunkRows  = "source.snapshot_chunk_rows"
	KeySnapshotProgress   = "source.snapshot_progress_interval"
	KeySnapshotGCPercent  = "source.snapshot_gc_percent"
	KeySourceNumeric      = "source.unconstrained_numeric"
	KeyKafkaBrokers       = "kafka.brokers"
	KeyKafkaListen        = "kafka.listen"
	KeyKafkaClientID      = "kafka.client_id"
	KeyKafkaPartitions    = "kafka.partitions"
	KeyKafkaReplication   = "kafka.replication_factor"
	KeyKafkaCompression   = "kafka.compression"
	KeyKafkaMaxBuffered   = "kafka.max_buffered_records"
	KeyKafkaLinger        = "kafka.linger"
	KeyKafkaMaxMessage    = "kafka.max_message_bytes"
	KeyKafkaTLSEnabled    = "kafka.tls.enabled"
	KeyKafkaTLSCA         = "kafka.tls.ca_file"
	KeyKafkaTLSCert       = "kafka.tls.cert_file"
	KeyKafkaTLSKey        = "kafka.tls.key_file"
	KeyKafkaTLSInsecure   = "kafka.tls.insecure_skip_verify"
	KeyKafkaSASLMechanism = "kafka.sasl.mechanism"
	KeyKafkaSASLUser      = "kafka.sasl.username"
	KeyKafkaSASLPassword  = "kafka.sasl.password"
	KeyRegistryURL        = "registry.url"
	KeyRegistryListen     = "registry.listen"
	KeyRegistryUser       = "registry.username"
	KeyRegistryPassword   = "registry.password"
	KeyRegistryCA         = "registry.ca_file"
	KeyRegistryCert       = "registry.cert_file"
	KeyRegistryKey        = "registry.key_file"
	KeyEntities           = "entities"
)

// Keys of the reconnect backoff when the connection to PostgreSQL is lost.
const (
	KeySourceReconnectInitial = "source.reconnect.initial_backoff"
	KeySourceReconnectMax     = "source.reconnect.max_backoff"
	KeySourceReconnectGiveUp  = "source.reconnect.give_up_after"
)

// Snapshot modes for source.snapshot.
const (
	SnapshotInitial = "initial" // publish existing rows once, when the slot is created
	SnapshotNever   = "never"   // stream changes only
)

// Bounds of kafka.max_message_bytes. The default is Kafka's own
// (message.max.bytes, and so a topic's max.message.bytes, 1 MiB + 12); the
// ceiling keeps a record within what a broker accepts in one request
// (socket.request.max.bytes, 100 MiB by default) with room for the
// producer's buffer.
const (
	DefaultMaxMessageBytes = 1_048_588
	MinMaxMessageBytes     = 1024
	MaxMaxMessageBytes     = 64 << 20
)

// Config is the whole configuration. Every field's default is set in
// setDefaults and documented in docs/CONFIG.md.
type Config struct {
	// DataDir holds the embedded broker's log, the embedded registry's
	// schemas and the source's snapshot state. Default "./data".
	DataDir  string         `mapstructure:"data_dir"`
	Log      LogConfig      `mapstructure:"log"`
	Source   SourceConfig   `mapstructure:"source"`
	Kafka    KafkaConfig    `mapstructure:"kafka"`
	Registry RegistryConfig `mapstructure:"registry"`
	Entities []Entity       `mapstructure:"entities"`
	Metrics  MetricsConfig  `mapstructure:"metrics"`
	Sink     SinkConfig     `mapstructure:"sink"`
	// ReadModels are the tables `replicator sink` builds. Decoded from the
	// file by parseReadModels, not by viper (which folds map keys to lower
	// case).
	ReadModels []ReadModel `mapstructure:"-"`
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug|info|warn|error, default info
	Format string `mapstructure:"format"` // text|json, default text
	// StatsInterval is the period of the "streaming stats" line while
	// streaming; 0 turns it off. Default 1m, at least 1s.
	StatsInterval time.Duration `mapstructure:"stats_interval"`
}

// SourceConfig is the PostgreSQL side.
type SourceConfig struct {
	// URL is a libpq connection URL or DSN; sslmode and certificates pass
	// through. Required. Never logged unredacted.
	URL         string `mapstructure:"url"`
	Slot        string `mapstructure:"slot"`        // default "replicator"
	Publication string `mapstructure:"publication"` // default "replicator"
	Snapshot    string `mapstructure:"snapshot"`    // initial|never, default initial
	// StatusInterval is how often the confirmed LSN is reported to
	// PostgreSQL. Default 10s.
	StatusInterval time.Duration `mapstructure:"status_interval"`
	// SnapshotWorkers is how many connections read the initial snapshot
	// in parallel (one table each at a time). Default 2, 1 to 64.
	SnapshotWorkers int `mapstructure:"snapshot_workers"`
	// SnapshotChunkRows is the rows per key-ordered chunk of a table read
	// by the initial snapshot. Default 50000, 100 to 10000000.
	SnapshotChunkRows int `mapstructure:"snapshot_chunk_rows"`
	// SnapshotProgressInterval is how often snapshot progress is logged
	// (when stderr is not a terminal). Default 10s.
	SnapshotProgressInterval time.Duration `mapstructure:"snapshot_progress_interval"`
	// SnapshotGCPercent is Go's GC target (as GOGC) while the initial
	// snapshot or a republish runs, restored after it; 0 leaves it alone. Default 200;
	// ignored when the GOGC environment variable is set.
	SnapshotGCPercent int `mapstructure:"snapshot_gc_percent"`
	// UnconstrainedNumeric is how a numeric column without precision is
	// exported: string (default, lossless) or double.
	UnconstrainedNumeric string `mapstructure:"unconstrained_numeric"`
	// Reconnect is the backoff after a lost connection to PostgreSQL.
	Reconnect ReconnectConfig `mapstructure:"reconnect"`
}

// ReconnectConfig is how `run` rides out a PostgreSQL restart or a network
// cut: exponential backoff between attempts, transient failures only.
type ReconnectConfig struct {
	InitialBackoff time.Duration `mapstructure:"initial_backoff"` // first wait, doubled per attempt; default 500ms
	MaxBackoff     time.Duration `mapstructure:"max_backoff"`     // cap on the wait; default 30s
	// GiveUpAfter exits with the last error once PostgreSQL has been
	// unreachable this long; default 0 = keep trying.
	GiveUpAfter time.Duration `mapstructure:"give_up_after"`
}

// KafkaConfig is the broker side. No Brokers means the embedded broker.
type KafkaConfig struct {
	Brokers            []string      `mapstructure:"brokers"`
	Listen             string        `mapstructure:"listen"`               // embedded broker address, default 127.0.0.1:9092
	ClientID           string        `mapstructure:"client_id"`            // default "replicator"
	Partitions         int           `mapstructure:"partitions"`           // default partitions for new topics, default 6
	ReplicationFactor  int           `mapstructure:"replication_factor"`   // default -1 (broker default)
	Compression        string        `mapstructure:"compression"`          // none|lz4|zstd|snappy|gzip, default none
	MaxBufferedRecords int           `mapstructure:"max_buffered_records"` // back-pressure bound, default 100000
	Linger             time.Duration `mapstructure:"linger"`               // default 2ms
	// MaxMessageBytes is the largest record batch: the producer's limit
	// and max.message.bytes of topics created; default
	// DefaultMaxMessageBytes, Kafka's own.
	MaxMessageBytes int        `mapstructure:"max_message_bytes"`
	TLS             TLSConfig  `mapstructure:"tls"`
	SASL            SASLConfig `mapstructure:"sasl"`
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled            bool   `mapstructure:"enabled"`
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// SASLConfig authenticates to the brokers.
type SASLConfig struct {
	Mechanism string `mapstructure:"mechanism"` // PLAIN|SCRAM-SHA-256|SCRAM-SHA-512; empty = none
	Username  string `mapstructure:"username"`
	Password  string `mapstructure:"password"`
}

// RegistryConfig is the schema registry. No URL means the embedded registry.
type RegistryConfig struct {
	URL      string `mapstructure:"url"`
	Listen   string `mapstructure:"listen"` // embedded registry address, default 127.0.0.1:8081
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	CAFile   string `mapstructure:"ca_file"`
	// CertFile and KeyFile make the embedded registry serve HTTPS with
	// this certificate (CAFile then verifies it for replicator's own
	// client). Not used with URL.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Entity is one table exported as an entity topic. Only Table is required.
type Entity struct {
	// Name defaults to the table name without its schema.
	Name string `mapstructure:"name"`
	// Table is "table" (schema public) or "schema.table"; quote parts to
	// keep case: '"Sales"."Orders"'.
	Table string `mapstructure:"table"`
	// Topic defaults to Name.
	Topic string `mapstructure:"topic"`
	// Key columns; default the primary key.
	Key []string `mapstructure:"key"`
	// Columns exported in the value; default all.
	Columns []string `mapstructure:"columns"`
	// AsString columns are exported as their PostgreSQL text.
	AsString []string `mapstructure:"as_string"`
	// Partitions for the topic when created; default kafka.partitions.
	Partitions int `mapstructure:"partitions"`
	// OnTruncate is what a TRUNCATE of the table does: tombstone (default:
	// every key live on the topic gets a tombstone) or fail (stop).
	OnTruncate string `mapstructure:"on_truncate"`
	// Compatibility is what a new schema version must meet against the
	// latest registered one, checked by replicator itself before the
	// registry: full (default), backward or none.
	Compatibility string `mapstructure:"compatibility"`
}

// OnTruncate values.
const (
	OnTruncateTombstone = "tombstone"
	OnTruncateFail      = "fail"
)

// EmbeddedKafka reports whether the embedded broker is used.
func (c *Config) EmbeddedKafka() bool { return len(c.Kafka.Brokers) == 0 }

// EmbeddedRegistry reports whether the embedded registry is used.
func (c *Config) EmbeddedRegistry() bool { return c.Registry.URL == "" }

// String renders the config with secrets redacted, for logs and `check`.
func (c Config) String() string {
	c.Source.URL = RedactSourceURL(c.Source.URL)
	if c.Kafka.SASL.Password != "" {
		c.Kafka.SASL.Password = redacted
	}
	c.Registry.URL = RedactRegistryURL(c.Registry.URL)
	if c.Registry.Password != "" {
		c.Registry.Password = redacted
	}
	return fmt.Sprintf("%+v", struct {
		DataDir    string
		Source     SourceConfig
		Kafka      KafkaConfig
		Registry   RegistryConfig
		Entities   []Entity
		ReadModels []ReadModel
	}{c.DataDir, c.Source, c.Kafka, c.Registry, c.Entities, redactStores(c.ReadModels)})
}

func redactStores(models []ReadModel) []ReadModel {
	out := make([]ReadModel, len(models))
	for i, m := range models {
		m.Store = m.RedactedStore()
		out[i] = m
	}
	return out
}
