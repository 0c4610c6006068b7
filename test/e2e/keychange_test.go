//go:build e2e

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// A change of the key's type is refused even under compatibility: none,
// while streaming and again at the restart, saying why (every key's bytes
// would change) and the way out; the key subject keeps one version.
func TestKeySchemaChangeRefused(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, "  - table: orders\n    compatibility: none\n")
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	mustExec(t, env.conn, `UPDATE orders SET note = 'seen' WHERE id = 1`)
	waitCaughtUp(t, env.conn, "replicator", p)

	mustExec(t, env.conn, `ALTER TABLE orders ALTER COLUMN id TYPE int`)
	changeAt := currentLSN(t, env.conn)
	mustExec(t, env.conn, `UPDATE orders SET note = 'after' WHERE id = 2`)
	want := []string{`the key schema of subject "orders-key" would change`, "every key would get new bytes", "compaction would keep", "new topic"}
	for attempt := 1; attempt <= 2; attempt++ {
		if attempt == 2 {
			p = env.start(t) // the catalog has the change already
		}
		if err := p.waitExit(t, 90*time.Second); err == nil {
			t.Fatalf("start %d: replicator exited 0 after the key's type changed", attempt)
		}
		assertOutput(t, p, want)
		if c := confirmed(t, env.conn); c > changeAt {
			t.Errorf("start %d: slot confirmed %s, past the change at %s", attempt, c, changeAt)
		}
	}
	env.whileStopped(t, func(_, registryURL string) {
		if n := len(subjectVersions(t, registryURL, "orders-key")); n != 1 {
			t.Errorf("orders-key: got %d versions, want 1", n)
		}
	})
}

// An unsupported column added while older changes were unconfirmed: the
// start is refused with the advice to list it in as_string:, and with that
// done the replicator streams, the older changes (a shape without the
// column) included. Before, the older shape failed ("does not exist").
func TestAsStringAdviceForAddedColumn(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, "  - table: orders\n")
	p := env.start(t)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)

	mustExec(t, env.conn, `UPDATE orders SET note = 'before' WHERE id = 1`) // unconfirmed, old shape
	mustExec(t, env.conn, `ALTER TABLE orders ADD COLUMN spot point`)
	mustExec(t, env.conn, `UPDATE orders SET spot = '(1,2)' WHERE id = 2`)

	p = env.start(t)
	if err := p.waitExit(t, 90*time.Second); err == nil {
		t.Fatal("replicator started with an unsupported column")
	}
	assertOutput(t, p, []string{`column "spot" has type point`, "as_string:"})

	cfg, err := os.ReadFile(env.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env.cfgPath, []byte(strings.Replace(string(cfg), "  - table: orders\n", "  - table: orders\n    as_string: [spot]\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p = env.start(t)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)
	assertOutput(t, p, []string{"resuming from replication slot"}) // the older changes were streamed, not snapshotted
	env.whileStopped(t, func(brokerAddr, registryURL string) {
		got := latestByID(t, brokerAddr, registryURL, "orders")
		one, two := got["1"], got["2"]
		if note, _ := gotString(unwrapUnion(one.Value["note"])); note != "before" {
			t.Errorf("key 1 (changed before the column was added): got note %q, want before; %v", note, one.Value)
		}
		if spot, _ := gotString(unwrapUnion(two.Value["spot"])); spot != "(1,2)" {
			t.Errorf("key 2: got spot %v, want (1,2) as text; %v", two.Value["spot"], two.Value)
		}
	})
}

// A column listed in as_string: dropped while changes from before the drop
// are unconfirmed: the start is not refused (a warning says the table no
// longer has it), the older change is exported with it as text and the
// later one without it. Before, the name was refused at start-up as not in
// the table, and without it the older shape was refused for its type: no
// configuration could start.
func TestAsStringColumnDropped(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL+`; ALTER TABLE orders ADD COLUMN spot point`, "  - table: orders\n    as_string: [spot]\n")
	p := env.start(t)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)

	mustExec(t, env.conn, `UPDATE orders SET spot = '(3,4)', note = 'before' WHERE id = 1`) // unconfirmed, with the column
	mustExec(t, env.conn, `ALTER TABLE orders DROP COLUMN spot`)
	mustExec(t, env.conn, `UPDATE orders SET note = 'after' WHERE id = 2`)

	p = env.start(t)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)
	assertOutput(t, p, []string{"resuming from replication slot", "listed in as_string: is not in table public.orders", "level=WARN"})
	env.whileStopped(t, func(brokerAddr, registryURL string) {
		got := latestByID(t, brokerAddr, registryURL, "orders")
		one, two := got["1"], got["2"]
		if spot, _ := gotString(unwrapUnion(one.Value["spot"])); spot != "(3,4)" {
			t.Errorf("key 1 (changed before the drop): got spot %v, want (3,4) as text; %v", one.Value["spot"], one.Value)
		}
		if note, _ := gotString(unwrapUnion(two.Value["note"])); note != "after" {
			t.Errorf("key 2: got note %q, want after; %v", note, two.Value)
		}
		if _, ok := two.Value["spot"]; ok {
			t.Errorf("key 2 (changed after the drop) still has spot: %v", two.Value)
		}
	})
}

// latestByID reads topic and returns each key's latest record by its id
// field.
func latestByID(t *testing.T, brokerAddr, registryURL, topic string) map[string]topicRecord {
	t.Helper()
	got := map[string]topicRecord{}
	for _, r := range latestByKey(readTopic(t, brokerAddr, registryURL, topic)) {
		id, _ := gotInt(r.Key["id"])
		got[id] = r
	}
	return got
}
