package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kfake"
)

// check reads an external broker's existing entity topics: one whose
// max.message.bytes is below kafka.max_message_bytes fails with the topic,
// both values and the fix; lowering kafka.max_message_bytes to it passes.
func TestCheckReportsTopicMessageLimit(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	if err := kc.CreateTopic("good", 1, map[string]string{"cleanup.policy": "compact", "max.message.bytes": "500000"}); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, `CREATE TABLE good (id bigint PRIMARY KEY, name text)`)
	config := func(limit string) string {
		return writeYAML(t, fmt.Sprintf(`
source: {url: %q}
data_dir: %q
kafka: {brokers: [%q]%s}
registry: {listen: %q}
entities:
  - table: good
`, dsn, t.TempDir(), kc.ListenAddrs()[0], limit, closedAddr(t)))
	}
	out, err := runCLI(t, "check", "--config", config(""))
	if err == nil {
		t.Fatalf("check passed with a topic below kafka.max_message_bytes:\n%s", out)
	}
	for _, w := range []string{"FAIL  Kafka", `topic "good" has max.message.bytes=500000, below kafka.max_message_bytes=1048588`, "--add-config max.message.bytes=1048588"} {
		if !strings.Contains(out, w) {
			t.Errorf("check output lacks %q:\n%s", w, out)
		}
	}
	if out, err := runCLI(t, "check", "--config", config(", max_message_bytes: 500000")); err != nil {
		t.Fatalf("check with kafka.max_message_bytes at the topic's limit: %v\n%s", err, out)
	}
}
