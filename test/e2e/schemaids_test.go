//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// An external broker with the embedded registry: data_dir is deleted and
// replicator restarted with its entities in the other order. The registry
// keeps its schemas on the broker, so every topic's records, old and new,
// carry the same key and value schema ids, and no id names the schemas of
// two topics. (Before, the ids were handed out again from 1 in the new
// order: the old records of one topic decoded with another's schema.)
func TestSchemaIDsSurviveLostDataDir(t *testing.T) {
	_, addr := startKfake(t)

	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `
		CREATE TABLE alpha (id bigint PRIMARY KEY, a text);
		CREATE TABLE beta (id int PRIMARY KEY, b bigint, c text);
		INSERT INTO alpha SELECT g, 'a' FROM generate_series(1, 5) g;
		INSERT INTO beta SELECT g, g, 'b' FROM generate_series(1, 5) g;`)

	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "replicator.yaml")
	writeCfg := func(entities string) {
		cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  slot: ids
  publication: ids
  status_interval: 100ms
kafka:
  brokers: [%q]
  partitions: 2
registry:
  listen: %q
entities:
%s`, dataDir, pg.DSN("postgres"), addr, freeAddr(t), entities)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const alpha, beta = "  - table: alpha\n", "  - table: beta\n"

	writeCfg(alpha + beta)
	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")
	mustExec(t, conn, `INSERT INTO alpha VALUES (6, 'a'); INSERT INTO beta VALUES (6, 6, 'b')`)
	waitCaughtUp(t, conn, "ids", p)
	p.stop(t)
	before := map[string]int64{"alpha": endOffsets(t, addr, "alpha"), "beta": endOffsets(t, addr, "beta")}

	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	writeCfg(beta + alpha) // registered in the other order
	p = startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")
	mustExec(t, conn, `INSERT INTO alpha VALUES (7, 'a'); INSERT INTO beta VALUES (7, 7, 'b')`)
	waitCaughtUp(t, conn, "ids", p)
	p.stop(t)

	checkIDs(t, addr, before)

	// The registry's topic lost too (or another registry): the same key
	// schemas get other ids, and the start is refused rather than give
	// every key other bytes.
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	deleteTopic(t, addr, "_replicator_schemas")
	p = startReplicator(t, "run", "--config", cfgPath)
	if err := p.waitExit(t, 60*time.Second); err == nil {
		t.Fatal("replicator started with a registry that numbered the key schemas again")
	}
	assertOutput(t, p, []string{`holds keys framed with schema id`, "registry.url", "new topic"})
}

// checkIDs checks that every record of alpha and beta carries its topic's
// first record's schema ids, that no id is carried by both, and that both
// have more records than before (a second run published too).
func checkIDs(t *testing.T, addr string, before map[string]int64) {
	t.Helper()
	owner := map[int]string{} // schema id → the topic whose records carry it
	for _, topic := range []string{"alpha", "beta"} {
		ids := frameIDs(t, addr, topic)
		if int64(len(ids)) <= before[topic] {
			t.Fatalf("topic %s: %d records, want more than the %d of the first run (the restart published again)", topic, len(ids), before[topic])
		}
		first := ids[0]
		for i, got := range ids {
			if !slices.Equal(got, first) {
				t.Errorf("topic %s record %d: key/value schema ids %v, want %v as its first record", topic, i, got, first)
				break
			}
		}
		for _, id := range first {
			if other, ok := owner[id]; ok {
				t.Errorf("schema id %d is carried by records of %s and %s", id, other, topic)
			}
			owner[id] = topic
		}
	}
}

func deleteTopic(t *testing.T, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
}

// endOffsets is the number of records written to topic.
func endOffsets(t *testing.T, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// frameIDs reads topic to its end and returns, per record in partition
// then offset order, the schema ids of its key and value (Confluent
// framing); a tombstone has the key's only.
func frameIDs(t *testing.T, addr, topic string) [][]int {
	t.Helper()
	n := endOffsets(t, addr, topic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byPart := map[int32][][]int{}
	for got := int64(0); got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d of %d records before the deadline", topic, got, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			id := func(b []byte) int {
				if len(b) < 5 || b[0] != 0 {
					t.Fatalf("topic %s offset %d: not Confluent-framed", topic, r.Offset)
				}
				return int(binary.BigEndian.Uint32(b[1:5]))
			}
			ids := []int{id(r.Key)}
			if r.Value != nil {
				ids = append(ids, id(r.Value))
			}
			byPart[r.Partition] = append(byPart[r.Partition], ids)
		})
	}
	var out [][]int
	for p := int32(0); p < int32(len(byPart)) || p < 2; p++ {
		out = append(out, byPart[p]...)
	}
	return out
}
