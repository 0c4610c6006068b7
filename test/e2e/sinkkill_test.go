//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// killSetup is the source, the read model and the running `replicator run`
// the sink kill tests share: items(id, v) with 2,000 rows, a PostgreSQL
// read model items_read whose trigger counts applications per (key,
// version) in applications, and a config whose topics have partitions
// partitions.
type killSetup struct {
	pg      *pgcluster.Cluster
	conn    *pgx.Conn // the source
	read    *pgx.Conn // the read-model database
	cfgPath string
	broker  string // the embedded broker's address
	run     *process
	// writerEnded is set when startWriter's writer has stopped, by
	// itself (its bounds) or by its stop.
	writerEnded atomic.Bool
}

func startKillSetup(t *testing.T, partitions int) *killSetup {
	t.Helper()
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
		INSERT INTO items SELECT g, 0 FROM generate_series(1, 2000) g`)
	mustExec(t, conn, `CREATE DATABASE readmodels`)
	read := pgtest.Connect(t, pg.DSN("readmodels"))
	// Every UPDATE of a source row bumps its version, so each (id, v) is
	// one source record (one offset): a batch applied twice counts some
	// (id, v) twice.
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
	cfgPath := filepath.Join(dataDir, "replicator.yaml")
	broker := freeAddr(t)
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 100ms
kafka:
  listen: %q
  partitions: %d
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
`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), broker, partitions, freeAddr(t), pg.DSN("readmodels"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := startReplicator(t, "run", "--config", cfgPath)
	waitSlot(t, conn, "replicator", run)
	k := &killSetup{pg: pg, conn: conn, read: read, cfgPath: cfgPath, broker: broker, run: run}
	// A takeover that does not come (partitions left with dead members)
	// is a failure of the group, not of the rows: say who holds what.
	// Registered after run's cleanup, so it runs before run is stopped.
	t.Cleanup(func() {
		if t.Failed() {
			k.logGroup(t)
		}
	})
	return k
}

// logGroup logs the sink group's state as the broker describes it: its
// members and each one's assigned partitions.
func (k *killSetup) logGroup(t *testing.T) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.broker))
	if err != nil {
		t.Logf("describe the sink group: %v", err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, "replicator-sink-items_read")
	if err != nil {
		t.Logf("describe the sink group: %v", err)
		return
	}
	for _, g := range groups.Sorted() {
		t.Logf("sink group %s: state %s, protocol %s, %d members (err %v)", g.Group, g.State, g.Protocol, len(g.Members), g.Err)
		for _, m := range g.Members {
			var parts []string
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range a.Topics {
					parts = append(parts, fmt.Sprintf("%s%v", tp.Topic, tp.Partitions))
				}
			}
			t.Logf("  member %s (client %s, host %s): %v", m.MemberID, m.ClientID, m.ClientHost, parts)
		}
	}
}

// startWriter bumps the version of 50 random rows about 25 times a second,
// at most 7,500 statements and for at most 5 minutes (the five kills take
// about a minute alone: each waits for the broker to expire the killed
// member's session), until the returned
// stop is called; stop returns the writer's error (and may be called
// again: the test's cleanup does, for a test that failed before).
func (k *killSetup) startWriter(t *testing.T) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	w := connect(t, k.pg)
	done := make(chan error, 1)
	go func() {
		defer k.writerEnded.Store(true)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 7500 && ctx.Err() == nil; i++ {
			base := rng.Int64N(1950) + 1
			if _, err := w.Exec(ctx, `UPDATE items SET v = v + 1 WHERE id BETWEEN $1 AND $1 + 49`, base); err != nil && ctx.Err() == nil {
				done <- err
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(40 * time.Millisecond):
			}
		}
		done <- nil
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

// writing reports whether the writer startWriter started still runs.
func (k *killSetup) writing() bool { return !k.writerEnded.Load() }

// converge waits for the source to be on the topics and the read model
// (built by sink) to equal the source table, then checks that the trigger
// saw no (key, version) applied twice.
func (k *killSetup) converge(t *testing.T, sink *process) {
	t.Helper()
	began := time.Now()
	waitCaughtUp(t, k.conn, "replicator", k.run)
	want := sourceRows(t, k.conn, `SELECT id::text, v::text FROM items`)
	waitReadModel(t, sink, k.pg.DSN("readmodels"), "items_read", []string{"id", "v"}, want)
	// After kills, the takeover of the dead processes' partitions is
	// most of it (docs/ARCHITECTURE.md, "The sink": 20–40 s expected).
	t.Logf("read model converged %v after the check began", time.Since(began).Round(100*time.Millisecond))
	var dup, total int
	if err := k.read.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE n > 1), count(*) FROM applications`).Scan(&dup, &total); err != nil {
		t.Fatal(err)
	}
	if dup != 0 {
		t.Errorf("%d of %d (key, version) pairs were applied more than once", dup, total)
	}
}

// TestSinkKilledConvergesWithoutDoubleApply kills `replicator sink` with
// SIGKILL five times while a writer keeps changing the source, restarting
// it each time. Each process is killed at a random moment after it has
// taken partitions over and applied records of its own: a new group
// member first waits for the killed one (up to the 10 s rebalance
// timeout), and a kill during that wait would test nothing. The
// PostgreSQL read model converges to the source table, and a trigger
// counting applications per (key, version) proves that no batch was
// applied twice.
func TestSinkKilledConvergesWithoutDoubleApply(t *testing.T) {
	k := startKillSetup(t, 3)
	stopWriter := k.startWriter(t)
	defer stopWriter()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 1; i <= 5; i++ {
		addr := freeAddr(t)
		began := time.Now()
		sink := startReplicator(t, "sink", "--config", k.cfgPath, "--metrics-listen", addr)
		var applying float64
		eventually(t, sink, 60*time.Second, fmt.Sprintf("sink process %d of 5 owns partitions and applies records", i), func() (bool, string) {
			parts, applied, ok := sinkOwnership(t, sink, addr)
			applying = applied
			return ok && parts > 0 && applied > 0, fmt.Sprintf("serving metrics %v, %d partitions, %v records applied", ok, parts, applied)
		})
		applyingAfter := time.Since(began)
		time.Sleep(time.Duration(rng.IntN(800)) * time.Millisecond) // a random moment while it applies, not a synchronisation
		_, applied, _ := sinkOwnership(t, sink, addr)
		t.Logf("kill %d: applying %v after the start (%v records), killed %v after it (%v records)", i, applyingAfter.Round(10*time.Millisecond), applying, (time.Since(began) - applyingAfter).Round(10*time.Millisecond), applied)
		if err := sink.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-sink.done
		if !k.writing() {
			t.Fatalf("the writer had stopped before kill %d of 5: the kills must land under load", i)
		}
	}
	if err := stopWriter(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	sink := startReplicator(t, "sink", "--config", k.cfgPath)
	k.converge(t, sink)
	sink.stop(t)
	k.run.stop(t)
}

// sinkOwnership is what a sink process's /metrics says of read model
// items_read: the partitions it holds (one lag sample each) and the
// records it has applied; ok false while it does not serve metrics yet.
func sinkOwnership(t *testing.T, p *process, addr string) (parts int, applied float64, ok bool) {
	t.Helper()
	if code, _ := probe(t, addr, "/readyz"); code != http.StatusOK {
		return 0, 0, false
	}
	s := scrapeMetrics(t, addr)
	applied, _ = s.value("replicator_sink_records_applied_total", "read_model", "items_read")
	if f := s["replicator_sink_lag_records"]; f != nil {
		parts = len(f.GetMetric())
	}
	return parts, applied, true
}

// TestSinkTwoProcessesOneKilled runs two `replicator sink` processes of
// one read model (one consumer group) over four partitions under a writer.
// Once both hold partitions and the victim is applying records of its
// own, it is killed with SIGKILL: the survivor takes over all four
// partitions. The victim is then restarted and takes some back. The read
// model converges exactly, and the trigger proves no (key, version) was
// applied twice: not at the takeover (the survivor starts from the offsets
// stored with the rows, not the group's) nor at the rejoin.
func TestSinkTwoProcessesOneKilled(t *testing.T) {
	const partitions = 4
	k := startKillSetup(t, partitions)
	stopWriter := k.startWriter(t)
	defer stopWriter()
	victimAddr, survivorAddr := freeAddr(t), freeAddr(t)
	victim := startReplicator(t, "sink", "--config", k.cfgPath, "--metrics-listen", victimAddr)
	survivor := startReplicator(t, "sink", "--config", k.cfgPath, "--metrics-listen", survivorAddr)

	// Both own partitions and have applied records; then the victim,
	// still owning some, applies more: it is killed mid-stream.
	var victimApplied float64
	eventually(t, survivor, 60*time.Second, "both sink processes own partitions and have applied records", func() (bool, string) {
		vp, va, vok := sinkOwnership(t, victim, victimAddr)
		sp, sa, sok := sinkOwnership(t, survivor, survivorAddr)
		victimApplied = va
		return vok && sok && vp > 0 && sp > 0 && va > 0 && sa > 0,
			fmt.Sprintf("victim: serving %v, %d partitions, %v applied; survivor: serving %v, %d partitions, %v applied", vok, vp, va, sok, sp, sa)
	})
	eventually(t, victim, 30*time.Second, "the victim applies more while owning partitions", func() (bool, string) {
		vp, va, _ := sinkOwnership(t, victim, victimAddr)
		return vp > 0 && va > victimApplied, fmt.Sprintf("%d partitions, %v applied (had %v)", vp, va, victimApplied)
	})
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.done

	// The survivor takes over once the victim's session (10 s) expires.
	eventually(t, survivor, 60*time.Second, "the survivor owns every partition", func() (bool, string) {
		sp, _, _ := sinkOwnership(t, survivor, survivorAddr)
		return sp == partitions, fmt.Sprintf("%d of %d partitions", sp, partitions)
	})

	// The victim restarted rejoins the group, takes partitions back and
	// applies records of its own while the writer still runs.
	rejoinedAddr := freeAddr(t)
	rejoined := startReplicator(t, "sink", "--config", k.cfgPath, "--metrics-listen", rejoinedAddr)
	eventually(t, rejoined, 60*time.Second, "the restarted process owns partitions and applies records", func() (bool, string) {
		rp, ra, rok := sinkOwnership(t, rejoined, rejoinedAddr)
		sp, _, _ := sinkOwnership(t, survivor, survivorAddr)
		return rok && rp > 0 && ra > 0 && sp > 0 && rp+sp == partitions,
			fmt.Sprintf("restarted: serving %v, %d partitions, %v applied; survivor: %d partitions", rok, rp, ra, sp)
	})
	if err := stopWriter(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	k.converge(t, survivor)
	rejoined.stop(t)
	survivor.stop(t)
	k.run.stop(t)
}
