//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// murmur2 is Kafka's key hash (Utils.murmur2 in the Java client), written
// out here so the test does not trust the producer's own partitioner.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(data))
	n := len(data) / 4
	for i := 0; i < n; i++ {
		k := uint32(data[i*4]) | uint32(data[i*4+1])<<8 | uint32(data[i*4+2])<<16 | uint32(data[i*4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// assertTopicLayout checks what any Kafka client relies on: the topic is
// compacted with the configured partition count, and every key sits on
// partition murmur2(key) % partitions, as Kafka's default partitioner puts it.
func assertTopicLayout(t *testing.T, brokers, topic string, partitions int, records []topicRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	cfgs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	rc, err := cfgs.On(topic, nil)
	if err != nil {
		t.Fatalf("configs of %s: %v", topic, err)
	}
	policy := ""
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		t.Errorf("topic %s: cleanup.policy = %q, want compact", topic, policy)
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(details[topic].Partitions); got != partitions {
		t.Errorf("topic %s: %d partitions, want %d", topic, got, partitions)
	}
	for _, r := range records {
		want := (murmur2([]byte(r.KeyRaw)) & 0x7fffffff) % int32(partitions)
		if r.Partition != want {
			t.Errorf("key %v on partition %d, want %d (murmur2)", r.Key, r.Partition, want)
		}
	}
}

// assertKcatReads reads the topic with kcat (librdkafka, a C client that
// shares no code with franz-go) and checks it sees the same records.
func assertKcatReads(t *testing.T, brokers, topic string, records []topicRecord) {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: install it (Debian: apt-get install -y kcat); .ci/run does")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", `%p %o %K %S\n`).CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := make([]string, len(records))
	for i, r := range records {
		want[i] = fmt.Sprintf("%d %d %d %d", r.Partition, r.Offset, len(r.KeyRaw), r.ValueLen)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("kcat saw %d records, franz-go %d; first kcat lines %q, want %q", len(got), len(want), head(got), head(want))
	}
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}
