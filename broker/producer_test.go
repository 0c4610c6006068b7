package broker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestProducerConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  ProducerConfig
		want string // substring of the error; empty means no error
	}{
		{"zero value", ProducerConfig{}, ""},
		{"every codec", ProducerConfig{Compression: "LZ4"}, ""},
		{"unknown codec", ProducerConfig{Compression: "brotli"}, "kafka.compression"},
		{"negative buffer", ProducerConfig{MaxBufferedRecords: -1}, "kafka.max_buffered_records"},
		{"bytes below batch", ProducerConfig{MaxBufferedBytes: 1000, BatchMaxBytes: 2000}, "below the batch max bytes"},
		{"tiny batch", ProducerConfig{BatchMaxBytes: 10}, "batch max bytes"},
		{"negative linger", ProducerConfig{Linger: -1}, "kafka.linger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				ProducerOptions(tc.cfg) // must not panic
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), tc.want) {
					t.Fatalf("ProducerOptions: got panic %v, want one containing %q", p, tc.want)
				}
			}()
			ProducerOptions(tc.cfg)
		})
	}
	for _, c := range []string{"", "none", "gzip", "snappy", "lz4", "zstd"} {
		if _, err := ParseCompression(c); err != nil {
			t.Errorf("ParseCompression(%q): %v", c, err)
		}
	}
}

// TestMurmur2Partitioning checks placement against Kafka's own murmur2
// vectors (UtilsTest.testMurmur2 in Apache Kafka): the Java producer puts
// key k on partition (murmur2(k) & 0x7fffffff) % n, and so must we, every
// time, so that per-key order holds whoever produces.
func TestMurmur2Partitioning(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const partitions = 7
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: "hashed", Partitions: partitions})
	cl := newClient(t, e.Addr(), &ProducerConfig{})

	vectors := []struct {
		key    string
		murmur int32 // Kafka's Utils.murmur2(key.getBytes(UTF_8))
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	}
	for round := range 3 {
		for _, v := range vectors {
			want := int32(uint32(v.murmur)&0x7fffffff) % partitions
			recs := produceSync(t, cl, "hashed", [2]string{v.key, fmt.Sprint(round)})
			if got := recs[0].Partition; got != want {
				t.Errorf("round %d key %q: got partition %d, want %d", round, v.key, got, want)
			}
		}
	}
}

// TestTinyBufferNoDeadlock produces far more records than the buffer holds:
// Produce must block and resume as acks arrive, never deadlock.
func TestTinyBufferNoDeadlock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  ProducerConfig
	}{
		{"one record", ProducerConfig{MaxBufferedRecords: 1}},
		{"few bytes", ProducerConfig{MaxBufferedBytes: 1024, BatchMaxBytes: 1024}},
		{"lingering lz4", ProducerConfig{MaxBufferedRecords: 10, Linger: time.Millisecond, Compression: "lz4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEmbedded(t, EmbeddedConfig{})
			ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: "tiny", Partitions: 3})
			cl := newClient(t, e.Addr(), &tc.cfg)
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()

			const n = 500
			var acked, failed atomic.Int64
			for i := range n {
				r := &kgo.Record{Topic: "tiny", Key: fmt.Appendf(nil, "k%d", i%50), Value: fmt.Appendf(nil, "v%d", i)}
				cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						failed.Add(1)
						return
					}
					acked.Add(1)
				})
			}
			if err := cl.Flush(ctx); err != nil {
				t.Fatalf("flush: %v (acked %d of %d)", err, acked.Load(), n)
			}
			if acked.Load() != n || failed.Load() != 0 {
				t.Fatalf("got %d acked and %d failed, want %d acked", acked.Load(), failed.Load(), n)
			}
		})
	}
}
