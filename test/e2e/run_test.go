//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

const accountsDDL = `
CREATE TABLE accounts (
	id         bigint PRIMARY KEY,
	owner      text NOT NULL,
	balance    numeric(10,2) NOT NULL,
	active     boolean NOT NULL DEFAULT true,
	note       text,
	tags       text[],
	updated_at timestamptz NOT NULL DEFAULT '2024-05-06 07:08:09.123456+00'
);
CREATE TABLE audit (id bigint PRIMARY KEY, msg text);`

// accountsState is the table as text, in the exported columns' names.
const accountsState = `SELECT id, owner, balance, active, note, tags, updated_at FROM accounts`

// TestRunStreamsSnapshotAndChangesAcrossRestart is the first slice end to
// end: the binary, a real PostgreSQL, the embedded broker and registry.
func TestRunStreamsSnapshotAndChangesAcrossRestart(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, accountsDDL)
	// Rows that exist before the slot: they must arrive through the snapshot.
	mustExec(t, conn, `INSERT INTO accounts (id, owner, balance, note, tags)
		SELECT g, 'owner ' || g, g * 10.5, CASE WHEN g % 2 = 0 THEN 'even' END, ARRAY['t' || g, 'x']
		FROM generate_series(1, 500) g`)

	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
kafka:
  listen: %q
  partitions: 3
registry:
  listen: %q
entities:
  - table: accounts
    topic: bank.accounts
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	registryURL := "http://" + registryAddr

	p := startReplicator(t, "run", "--config", cfgPath)
	// Once the slot exists, every later commit is past its consistent point
	// and arrives through the stream, which makes the op counts exact.
	waitSlot(t, conn, "replicator", p)
	// Changes while it snapshots and streams: insert, update, delete, key change,
	// and writes to a table that is not exported.
	mustExec(t, conn, `INSERT INTO accounts (id, owner, balance) VALUES (501, 'new', 1.25), (502, 'newer', -3.50)`)
	mustExec(t, conn, `UPDATE accounts SET balance = balance + 1, note = 'bumped' WHERE id % 50 = 0`)
	mustExec(t, conn, `DELETE FROM accounts WHERE id IN (7, 8, 9, 502)`)
	mustExec(t, conn, `UPDATE accounts SET id = 10010 WHERE id = 10`)
	mustExec(t, conn, `INSERT INTO audit SELECT g, 'noise' FROM generate_series(1, 100) g`)
	mustExec(t, conn, `BEGIN; UPDATE accounts SET active = false WHERE id = 11; UPDATE accounts SET active = true, note = NULL WHERE id = 11; COMMIT`)
	waitCaughtUp(t, conn, "replicator", p)

	records := readTopic(t, brokerAddr, registryURL, "bank.accounts")
	assertConverged(t, records, tableState(t, conn, accountsState), []string{"7", "8", "9", "10", "502"})
	assertHeaders(t, records)
	assertTopicLayout(t, brokerAddr, "bank.accounts", 3, records)
	assertKcatReads(t, brokerAddr, "bank.accounts", records)

	// A clean stop confirms everything; changes written while it is down
	// arrive after the restart, nothing missing and no snapshot repeated.
	p.stop(t)
	mustExec(t, conn, `INSERT INTO accounts (id, owner, balance) SELECT g, 'offline ' || g, 0 FROM generate_series(600, 650) g`)
	mustExec(t, conn, `UPDATE accounts SET owner = 'renamed' WHERE id = 1`)
	mustExec(t, conn, `DELETE FROM accounts WHERE id = 2`)
	before := len(records)

	p = startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, conn, "replicator", p)
	records = readTopic(t, brokerAddr, registryURL, "bank.accounts")
	assertConverged(t, records, tableState(t, conn, accountsState), []string{"2", "7", "8", "9", "10", "502"})
	if added := len(records) - before; added != 51+1+1 {
		t.Errorf("after restart: got %d new records, want 53 (51 inserts, 1 update, 1 delete): the snapshot or old changes were repeated or lost", added)
	}
	p.stop(t)
}

// assertHeaders checks the change metadata: op per record kind, an LSN and
// a commit time on every record.
func assertHeaders(t *testing.T, records []topicRecord) {
	t.Helper()
	ops := map[string]int{}
	for _, r := range records {
		ops[r.Headers[cdc.HeaderOp]]++
		if r.Headers[cdc.HeaderLSN] == "" || r.Headers[cdc.HeaderCommitTime] == "" {
			t.Fatalf("record %v: missing lsn or commit_ts header: %v", r.Key, r.Headers)
		}
		if (r.Value == nil) != (r.Headers[cdc.HeaderOp] == "d") {
			t.Errorf("record %v: op %q with value %v", r.Key, r.Headers[cdc.HeaderOp], r.Value)
		}
	}
	// 500 snapshot rows; inserts 501, 502, 10010; deletes 7, 8, 9, 502, old key 10.
	if ops["r"] != 500 || ops["c"] != 2 || ops["d"] != 5 || ops["u"] != 10+1+2 {
		t.Errorf("ops: got %v, want r=500 c=2 d=5 u=13", ops)
	}
}
