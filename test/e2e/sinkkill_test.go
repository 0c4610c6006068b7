//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestSinkKilledConvergesWithoutDoubleApply kills `replicator sink` with
// SIGKILL five times at random moments while a writer keeps changing the
// source, restarting it each time. The PostgreSQL read model converges to
// the source table, and a trigger counting applications per (key, version)
// proves that no batch was applied twice: every UPDATE of a row bumps its
// version, so a replayed batch would apply some (key, version) again.
func TestSinkKilledConvergesWithoutDoubleApply(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
		INSERT INTO items SELECT g, 0 FROM generate_series(1, 2000) g`)
	mustExec(t, conn, `CREATE DATABASE readmodels`)
	read := pgtest.Connect(t, pg.DSN("readmodels"))
	mustExec(t, read, `CREATE TABLE items_read (id bigint PRIMARY KEY, v bigint);
		CREATE TABLE applications (id bigint, v bigint, n int NOT NULL, PRIMARY KEY (id, v));
		CREATE FUNCTION count_application() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO applications VALUES (NEW.id, NEW.v, 1)
				ON CONFLICT (id, v) DO UPDATE SET n = applications.n + 1;
			RETURN NEW;
		END $$;
		CREATE TRIGGER count_application AFTER INSERT OR UPDATE ON items_read
			FOR EACH ROW EXECUTE FUNCTION count_application();`)

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
  - table: items
read_models:
  - name: items_read
    store: %q
    key: id
    sources:
      - entity: items
        key: id
        columns: {v: v}
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr, pg.DSN("readmodels"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := startReplicator(t, "run", "--config", cfgPath)
	waitSlot(t, conn, "replicator", run)

	// The writer: every statement bumps the version of 50 rows, about 25
	// statements a second, for as long as the kills take.
	ctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go func() {
		w := connect(t, pg)
		rng := rand.New(rand.NewPCG(1, 2))
		for ctx.Err() == nil {
			base := rng.Int64N(1950) + 1
			if _, err := w.Exec(ctx, `UPDATE items SET v = v + 1 WHERE id BETWEEN $1 AND $1 + 49`, base); err != nil && ctx.Err() == nil {
				writerDone <- err
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(40 * time.Millisecond):
			}
		}
		writerDone <- nil
	}()

	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 5; i++ {
		sink := startReplicator(t, "sink", "--config", cfgPath)
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond) // a random moment, not a synchronisation
		if err := sink.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-sink.done
	}
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	waitCaughtUp(t, conn, "replicator", run)
	sink := startReplicator(t, "sink", "--config", cfgPath)
	want := sourceRows(t, conn, `SELECT id::text, v::text FROM items`)
	waitReadModel(t, sink, pg.DSN("readmodels"), "items_read", []string{"id", "v"}, want)
	var dup, total int
	if err := read.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE n > 1), count(*) FROM applications`).Scan(&dup, &total); err != nil {
		t.Fatal(err)
	}
	if dup != 0 {
		t.Errorf("%d of %d (key, version) pairs were applied more than once", dup, total)
	}
	sink.stop(t)
	run.stop(t)
}
