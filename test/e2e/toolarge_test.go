//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A row larger than the broker takes stops the replicator at once (no
// further change needed to notice it) with the table, key, column sizes and
// the fix; its transaction is not confirmed, and a restart meets it again.
// A topic whose max.message.bytes is lowered behind replicator's back stops
// the stream at once too (the broker's refusal), and the next start is
// refused with the topic, both limits and the fix.
func TestTooLargeRowStops(t *testing.T) {
	pg := pgtest.Start(t)
	admin := connect(t, pg)
	conn := newDatabase(t, pg, admin, "too_large")
	mustExec(t, conn, `CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text)`)
	env := newEnv(t)
	env.writeConfig(t, pg.DSN("too_large"), "too_large", "  - table: docs\n    topic: docs\n")

	// held reports whether the slot still holds the transaction xid: its
	// LSN was not confirmed.
	held := func(xid string) bool {
		t.Helper()
		waitSlotReleased(t, conn, env.slot)
		var pending int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($2::name, NULL, NULL,
			'proto_version', '1', 'publication_names', $2::text) WHERE xid::text = $1`, xid, env.slot).Scan(&pending)
		if err != nil {
			t.Fatalf("peek the slot: %v", err)
		}
		return pending > 0
	}
	// insert writes a body of size bytes of hex digits: random, so that
	// compression halves it at best.
	insert := func(id, size int) string {
		t.Helper()
		var xid string
		err := conn.QueryRow(context.Background(), `INSERT INTO docs
			SELECT $1, 'title', left(string_agg(md5(random()::text), ''), $2) FROM generate_series(1, $2/32 + 1)
			RETURNING pg_current_xact_id()::text`, id, size).Scan(&xid)
		if err != nil {
			t.Fatal(err)
		}
		return xid
	}

	p := startReplicator(t, "run", "--config", env.cfgPath)
	waitOutput(t, p, "msg=streaming")
	insert(1, 10)
	waitCaughtUp(t, conn, env.slot, p)

	xid := insert(2, 1_200_000) // over Kafka's default 1 MiB, alone: nothing follows it
	want := []string{"public.docs key 2", "body 1200000 bytes", "title 5 bytes", "kafka.compression", "kafka.max_message_bytes (1048588)"}
	for attempt := 1; attempt <= 2; attempt++ {
		if attempt == 2 {
			p = startReplicator(t, "run", "--config", env.cfgPath)
		}
		if err := p.waitExit(t, 30*time.Second); err == nil {
			t.Fatalf("start %d: replicator exited cleanly, want a failure on key 2", attempt)
		}
		assertOutput(t, p, want)
		if !held(xid) {
			t.Fatalf("start %d: the slot no longer holds transaction %s: its LSN was confirmed although its row was not produced", attempt, xid)
		}
	}

	// The way out the message gives: a larger limit (and compression).
	env.writeConfig(t, pg.DSN("too_large"), "too_large", "  - table: docs\n    topic: docs.large\n")
	editConfig(t, env.cfgPath, "  partitions: 2\n", "  partitions: 2\n  max_message_bytes: 2000000\n  compression: zstd\n")
	p = startReplicator(t, "run", "--config", env.cfgPath)
	waitCaughtUp(t, conn, env.slot, p) // confirmed: the large row was acknowledged by the broker

	// Someone lowers the topic's limit: the broker refuses the next large
	// row and the replicator stops at once, saying which limit.
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokerAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("100000")}}, "docs.large")
	if err == nil {
		_, err = resp.On("docs.large", nil)
	}
	if err != nil {
		t.Fatalf("alter docs.large max.message.bytes: %v", err)
	}
	xid = insert(3, 500_000)
	if err := p.waitExit(t, 30*time.Second); err == nil {
		t.Fatal("replicator exited cleanly after the broker refused a record, want a failure")
	}
	assertOutput(t, p, []string{"produce to docs.large", "MESSAGE_TOO_LARGE", "max.message.bytes", "kafka.max_message_bytes (2000000)"})
	if !held(xid) {
		t.Fatalf("the slot no longer holds transaction %s: its LSN was confirmed although the broker refused its row", xid)
	}
	p = startReplicator(t, "run", "--config", env.cfgPath)
	if err := p.waitExit(t, 30*time.Second); err == nil {
		t.Fatal("replicator started against a topic whose max.message.bytes is below kafka.max_message_bytes")
	}
	assertOutput(t, p, []string{`topic "docs.large" has max.message.bytes=100000, below kafka.max_message_bytes=2000000`, "--add-config max.message.bytes=2000000"})
}

// editConfig replaces old, which must be there, with new in the config file.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), old) {
		t.Fatalf("config %s lacks %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(cfg), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}
