//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// avroRecord is one consumed record decoded by goavro, an Avro
// implementation independent of the hamba/avro the replicator is built
// with, so both the writer's bytes and its schemas are checked.
type avroRecord struct {
	Key     map[string]any
	KeyRaw  string
	Value   map[string]any // nil for a tombstone
	Headers map[string]string
}

// readTopicGoavro consumes topic from the start to its current end and
// decodes every key and value with goavro, using the schema its Confluent
// header names, fetched from the registry.
func readTopicGoavro(t *testing.T, brokers, registryURL, topic string) []avroRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	rcl, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		t.Fatal(err)
	}
	codecs := map[int]*goavro.Codec{}
	decode := func(b []byte) map[string]any {
		t.Helper()
		if len(b) < 5 || b[0] != 0 {
			t.Fatalf("record in %s lacks the Confluent header: % x", topic, b)
		}
		id := int(binary.BigEndian.Uint32(b[1:5]))
		c, ok := codecs[id]
		if !ok {
			ss, err := rcl.SchemaByID(ctx, id)
			if err != nil {
				t.Fatalf("schema %d: %v", id, err)
			}
			c, err = goavro.NewCodecWithOptions(ss.Schema, &goavro.CodecOption{EnableDecimalBinarySpecCompliantEncoding: true})
			if err != nil {
				t.Fatalf("goavro cannot parse schema %d of %s: %v\n%s", id, topic, err, ss.Schema)
			}
			codecs[id] = c
		}
		native, rest, err := c.NativeFromBinary(b[5:])
		if err != nil {
			t.Fatalf("goavro cannot decode a record of %s with schema %d: %v", topic, id, err)
		}
		if len(rest) != 0 {
			t.Fatalf("goavro left %d bytes after a record of %s (schema %d)", len(rest), topic, id)
		}
		m, ok := native.(map[string]any)
		if !ok {
			t.Fatalf("goavro decoded a record of %s as %T", topic, native)
		}
		return m
	}
	var out []avroRecord
	got := map[int32]int64{}
	done := func() bool {
		for p, end := range want {
			if got[p] < end {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume %s: reached %v of %v: %v", topic, got, want, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			rec := avroRecord{Key: decode(r.Key), KeyRaw: string(r.Key), Headers: map[string]string{}}
			if r.Value != nil {
				rec.Value = decode(r.Value)
			}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
			}
			out = append(out, rec)
			got[r.Partition] = r.Offset + 1
		})
	}
	return out
}

// latestAvroByKey keeps the last record of each key (what compaction keeps).
func latestAvroByKey(records []avroRecord) map[string]avroRecord {
	m := map[string]avroRecord{}
	for _, r := range records {
		m[r.KeyRaw] = r
	}
	return m
}

// unwrapUnion returns the value inside goavro's union wrapper
// (map[type name]value), or v itself.
func unwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, inner := range m {
			return inner
		}
	}
	return v
}

// e2eEnv is one replicator deployment for a test: its data directory, the
// embedded broker and registry addresses and the config file.
type e2eEnv struct {
	dataDir, brokerAddr, registryAddr, cfgPath string
	slot                                       string // slot and publication name
}

func newEnv(t *testing.T) *e2eEnv {
	t.Helper()
	dir := t.TempDir()
	return &e2eEnv{dataDir: dir, brokerAddr: freeAddr(t), registryAddr: freeAddr(t), cfgPath: filepath.Join(dir, "replicator.yaml")}
}

func (e *e2eEnv) registryURL() string { return "http://" + e.registryAddr }

// writeConfig writes the config file: the common part with slot and
// publication named slot, then entities (YAML list items, indented by two
// spaces).
func (e *e2eEnv) writeConfig(t *testing.T, dsn, slot, entities string) {
	t.Helper()
	e.slot = slot
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  slot: %s
  publication: %s
  status_interval: 100ms
kafka:
  listen: %q
  partitions: 2
registry:
  listen: %q
entities:
%s`, filepath.Join(e.dataDir, "data"), dsn, slot, slot, e.brokerAddr, e.registryAddr, entities)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}
