package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer defaults applied by [ProducerOptions] to zero fields.
const (
	// DefaultMaxBufferedRecords bounds the records a producer holds that
	// Kafka has not acknowledged yet (kgo's own default).
	DefaultMaxBufferedRecords = 50_000
	// DefaultMaxBufferedBytes bounds the bytes of those records. kgo's
	// default is unlimited, which would let a table of large rows grow
	// memory without bound.
	DefaultMaxBufferedBytes = 64 << 20
	// DefaultBatchMaxBytes is Kafka's default max.message.bytes (and kgo's
	// default batch limit).
	DefaultBatchMaxBytes = 1_000_012
)

// ProducerConfig tunes the producer. The zero value is valid and gives an
// uncompressed, non-lingering, bounded, never-give-up producer.
type ProducerConfig struct {
	// Compression is the batch codec: none, lz4, zstd, snappy or gzip
	// (case-insensitive). Empty means none, unlike kgo's snappy default:
	// every consumer can read uncompressed batches. Against the in-process
	// broker lz4 cost about a third of the throughput; compression pays
	// off on a real network.
	Compression string

	// MaxBufferedRecords is the back-pressure bound: once this many records
	// are produced and not yet acknowledged, Produce blocks (until a record
	// completes or its context is done). Zero means
	// [DefaultMaxBufferedRecords]; negative is an error. Promises must not
	// block on the client: a Produce (or Flush) inside a promise waits for
	// space that only later promises free, and deadlocks (kgo's Produce
	// doc).
	MaxBufferedRecords int
	// MaxBufferedBytes bounds the same buffer by record size (key, value and
	// headers). Zero means [DefaultMaxBufferedBytes]. It must be at least
	// BatchMaxBytes: kgo fails at once a record larger than the buffer.
	MaxBufferedBytes int

	// Linger is how long a partition waits for more records before its
	// batch is sent. Zero sends as soon as possible; batches still grow
	// while a request is in flight, so under a backlog batching happens
	// anyway, but at moderate rates zero costs a request per few records
	// (replicator's kafka.linger defaults to 2ms for that, see
	// docs/CONFIG.md).
	Linger time.Duration

	// BatchMaxBytes caps a record batch before compression and must not
	// exceed the topic's max.message.bytes. Zero means
	// [DefaultBatchMaxBytes]. A single record larger than this fails.
	BatchMaxBytes int32

	// DeliveryTimeout fails a record that waited this long without being
	// acknowledged (Kafka's delivery.timeout.ms). Zero means no limit: the
	// producer retries until the broker answers, which is what no-loss
	// needs, and the caller decides when to give up through the context.
	// With idempotence on, kgo only enforces it when that cannot create a
	// sequence gap.
	DeliveryTimeout time.Duration
	// RecordRetries limits retries per record. Zero means unlimited (kgo's
	// default). When a record fails, every later record buffered for the
	// same partition fails with it, so order never has gaps.
	RecordRetries int
}

// ProducerOptions returns the kgo options for replicator's producer.
//
// It fixes the properties the guarantees rest on:
//
//   - idempotent writes (kgo's default, left on): broker-side
//     deduplication of retried batches, up to 5 requests in flight per
//     broker without reordering;
//   - acks=all ([kgo.AllISRAcks], also kgo's default, set explicitly):
//     a record is acknowledged only once every in-sync replica has it;
//   - [kgo.StickyKeyPartitioner] with a nil hasher: keyed records go to
//     murmur2(key) & 0x7fffffff % partitions, exactly Kafka's Java
//     default partitioner, so the same key always lands on the same
//     partition whoever produces it. (kgo's default UniformBytesPartitioner
//     hashes keys the same way; naming the partitioner pins the behaviour
//     rather than relying on a default.) Records without a key stick to a
//     partition per batch.
//   - bounded buffering (MaxBufferedRecords, MaxBufferedBytes): a slow
//     broker blocks Produce instead of growing memory.
//
// Broker outages: with the zero DeliveryTimeout and RecordRetries a record
// is never failed because the broker is down or slow; the request is
// retried (after kgo's request timeout when the broker does not answer)
// until it is acknowledged, and Produce blocks once the buffer is full, so
// the source stops reading and the WAL waits in PostgreSQL. An outage of
// any length therefore loses nothing and does not end the process (the
// e2e test TestBrokerOutageBackPressure holds the broker away for a
// minute); what ends it is the operator, or a record the broker refuses.
//
// Unknown-topic errors keep kgo's default of failing a record after 4
// metadata loads that do not find its topic: topics are created up front by
// [EnsureTopics], and a missing one is a configuration error, not something
// to wait for.
//
// p must be valid: ProducerOptions panics with [ProducerConfig.Validate]'s
// error otherwise (the config package rejects the same values at load).
func ProducerOptions(p ProducerConfig) []kgo.Opt {
	if err := p.Validate(); err != nil {
		panic(fmt.Sprintf("broker.ProducerOptions: %v", err))
	}
	codec, _ := ParseCompression(p.Compression)
	records := p.MaxBufferedRecords
	if records == 0 {
		records = DefaultMaxBufferedRecords
	}
	batch := p.BatchMaxBytes
	if batch == 0 {
		batch = DefaultBatchMaxBytes
	}
	bytes := p.MaxBufferedBytes
	if bytes == 0 {
		bytes = max(DefaultMaxBufferedBytes, int(batch))
	}

	opts := []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerBatchCompression(codec),
		kgo.MaxBufferedRecords(records),
		kgo.MaxBufferedBytes(bytes),
		kgo.ProducerLinger(p.Linger),
		kgo.ProducerBatchMaxBytes(batch),
	}
	if p.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(p.DeliveryTimeout))
	}
	if p.RecordRetries > 0 {
		opts = append(opts, kgo.RecordRetries(p.RecordRetries))
	}
	return opts
}

// Validate reports every invalid field, naming its configuration key where
// there is one.
func (p ProducerConfig) Validate() error {
	var errs []error
	if _, err := ParseCompression(p.Compression); err != nil {
		errs = append(errs, err)
	}
	if p.MaxBufferedRecords < 0 {
		errs = append(errs, fmt.Errorf("%s: %d is negative", keyMaxBuffered, p.MaxBufferedRecords))
	}
	batch := p.BatchMaxBytes
	if batch == 0 {
		batch = DefaultBatchMaxBytes
	}
	if batch < 512 || batch > 1<<30 {
		errs = append(errs, fmt.Errorf("producer batch max bytes %d: want 512 to %d", batch, 1<<30))
	}
	if p.MaxBufferedBytes < 0 || (p.MaxBufferedBytes > 0 && p.MaxBufferedBytes < int(batch)) {
		errs = append(errs, fmt.Errorf("producer max buffered bytes %d is below the batch max bytes %d", p.MaxBufferedBytes, batch))
	}
	if p.Linger < 0 {
		errs = append(errs, fmt.Errorf("kafka.linger: %v is negative", p.Linger))
	}
	if p.DeliveryTimeout < 0 {
		errs = append(errs, fmt.Errorf("producer delivery timeout %v is negative", p.DeliveryTimeout))
	}
	if p.RecordRetries < 0 {
		errs = append(errs, fmt.Errorf("producer record retries %d is negative", p.RecordRetries))
	}
	return errors.Join(errs...)
}

// ParseCompression maps a kafka.compression value to a kgo codec. Empty and
// "none" are no compression.
func ParseCompression(s string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	default:
		return kgo.NoCompression(), fmt.Errorf("%s: unknown codec %q, want none, lz4, zstd, snappy or gzip", keyCompression, s)
	}
}
