//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

// retainedWAL reads how far the slot's confirmed position is behind the
// server's WAL, with the slot's wal_status.
func retainedWAL(t *testing.T, conn *pgx.Conn, slot string) (confirmed pglogrepl.LSN, behind int64, status string) {
	t.Helper()
	var text string
	err := conn.QueryRow(context.Background(), `
		SELECT confirmed_flush_lsn::text, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, coalesce(wal_status, '')
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&text, &behind, &status)
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	confirmed, err = pglogrepl.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	return confirmed, behind, status
}

// TestIdleTablesBusyDatabase writes about 100 MB to a table the replicator
// does not publish (and some to another database): with no change of its
// own to confirm, the slot must still advance (keepalives answered with the
// server's WAL end), so the WAL it retains drops back to almost nothing.
func TestIdleTablesBusyDatabase(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `
		CREATE TABLE items (id bigint PRIMARY KEY, v int);
		CREATE TABLE bulk (id bigserial PRIMARY KEY, pad text);
		INSERT INTO items VALUES (1, 1);`)
	if err := pg.CreateDatabase(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(context.Background(), pg.DSN("other"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close(context.Background()) })
	mustExec(t, other, `CREATE TABLE bulk (id bigserial PRIMARY KEY, pad text)`)

	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 200ms
kafka:
  listen: %q
  partitions: 2
registry:
  listen: %q
entities:
  - table: items
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startReplicator(t, "run", "--config", cfgPath)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, conn, "replicator", p)
	start, _, _ := retainedWAL(t, conn, "replicator")

	// About 110 MB of WAL: 100 MB into the unpublished table of this
	// database, 10 MB into another database. Bounded by count and time.
	const target = 110 << 20
	deadline := time.Now().Add(3 * time.Minute)
	var wrote int64
	for batch := 0; wrote < target; batch++ {
		if batch >= 200 || time.Now().After(deadline) {
			t.Fatalf("wrote %d MB of WAL in %d batches, want %d MB", wrote>>20, batch, target>>20)
		}
		c := conn
		if batch%10 == 9 {
			c = other
		}
		mustExec(t, c, `INSERT INTO bulk (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 5000) g`)
		if err := conn.QueryRow(context.Background(), `SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint`, start.String()).Scan(&wrote); err != nil {
			t.Fatal(err)
		}
	}
	_, behind, _ := retainedWAL(t, conn, "replicator")
	t.Logf("wrote %d MB of WAL to unpublished tables; slot %d MB behind right after", wrote>>20, behind>>20)

	// The slot catches up by itself: no published change is coming to
	// carry it forward.
	const bound = 1 << 20
	deadline = time.Now().Add(90 * time.Second)
	for {
		confirmed, behind, status := retainedWAL(t, conn, "replicator")
		if behind < bound {
			if adv := int64(confirmed - start); adv < target-bound {
				t.Fatalf("slot is %d bytes behind but advanced only %d MB of the %d MB written", behind, adv>>20, wrote>>20)
			}
			if status != "reserved" {
				t.Errorf("wal_status: got %q, want reserved", status)
			}
			t.Logf("slot %d KB behind the WAL, confirmed %s (advanced %d MB)", behind>>10, confirmed, int64(confirmed-start)>>20)
			break
		}
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v); output:\n%s", err, p.output.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot still %d MB behind the WAL after 90s (confirmed %s, wal_status %s); output:\n%s", behind>>20, confirmed, status, p.output.String())
		}
	}

	// And the stream still works: a published change after the bulk load.
	mustExec(t, conn, `UPDATE items SET v = 2 WHERE id = 1`)
	waitCaughtUp(t, conn, "replicator", p)
	records := readTopic(t, brokerAddr, "http://"+registryAddr, "items")
	assertConverged(t, records, tableState(t, conn, `SELECT id, v FROM items`), nil)
	p.stop(t)
}
