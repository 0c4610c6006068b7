package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
	"golang.org/x/sync/errgroup"
)

// The workload: one table of ten columns of the common kinds, rows of
// about 250 bytes, changed in transactions of txnRows rows.
const (
	tableName   = "bench_rows"
	publication = "bench"
	txnRows     = 1000

	createTable = `CREATE TABLE bench_rows (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text NOT NULL,
	amount     numeric(12,2) NOT NULL,
	created_at timestamptz NOT NULL,
	tags       text[] NOT NULL,
	attrs      jsonb NOT NULL,
	quantity   int NOT NULL,
	active     bool NOT NULL,
	note       text
)`

	// columns is the column list, in table order.
	columns = "id, name, email, amount, created_at, tags, attrs, quantity, active, note"
)

// clusterSettings tune the throwaway cluster for benchmarks: the data and
// the WAL kept by the slots fit in memory, no checkpoint starts on its own
// during a measurement, and autovacuum does not compete for the two cores.
var clusterSettings = map[string]string{
	"wal_level":             "logical",
	"shared_buffers":        "512MB",
	"max_wal_size":          "4GB",
	"checkpoint_timeout":    "30min",
	"autovacuum":            "off",
	"max_replication_slots": "32",
	"max_wal_senders":       "16",
}

// startCluster starts a throwaway PostgreSQL cluster with clusterSettings,
// creates the table and a publication for it, and returns the cluster and
// a connection to it. The caller closes both.
func startCluster(ctx context.Context) (*pgcluster.Cluster, *pgx.Conn, error) {
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Settings: clusterSettings})
	if err != nil {
		return nil, nil, err
	}
	conn, err := pgx.Connect(ctx, cl.DSN("postgres"))
	if err != nil {
		return nil, nil, errors.Join(err, cl.Close())
	}
	for _, sql := range []string{createTable, "CREATE PUBLICATION " + publication + " FOR TABLE " + tableName} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			conn.Close(ctx)
			return nil, nil, errors.Join(fmt.Errorf("%s: %w", firstLine(sql), err), cl.Close())
		}
	}
	return cl, conn, nil
}

// insertSQL inserts the rows with keys lo..hi. Every row is about 250
// bytes on disk (pg_column_size of the row).
func insertSQL(lo, hi int64) string {
	return insertNoteSQL(lo, hi, "'note ' || md5(g::text)")
}

// insertNoteSQL inserts the rows with keys lo..hi, each row's note being
// the SQL expression note (of g, the key).
func insertNoteSQL(lo, hi int64, note string) string {
	return insertRowsSQL(fmt.Sprint(lo), fmt.Sprint(hi), note)
}

// insertRowsSQL inserts the rows with keys from the SQL expressions lo to
// hi ("$1" for a prepared statement), each row's note being the SQL
// expression note.
func insertRowsSQL(lo, hi, note string) string {
	return fmt.Sprintf(`INSERT INTO bench_rows (%s)
SELECT g, 'customer ' || g, 'customer.' || g || '@example.com',
	((g * 7919) %% 10000000) / 100.0,
	timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
	ARRAY['tag-' || g %% 7, 'tag-' || g %% 11, 'segment-' || g %% 13],
	jsonb_build_object('plan', 'pro', 'seats', g %% 50, 'region', 'eu-west-' || g %% 3),
	g %% 1000, g %% 2 = 0, %s
FROM generate_series(%s::bigint, %s::bigint) g`, columns, note, lo, hi)
}

// updateSQL changes four columns of the rows with keys lo..hi.
func updateSQL(lo, hi int64) string {
	return updateRowsSQL(fmt.Sprint(lo), fmt.Sprint(hi))
}

// updateRowsSQL is updateSQL with keys from the SQL expressions lo to hi.
func updateRowsSQL(lo, hi string) string {
	return fmt.Sprintf(`UPDATE bench_rows SET amount = amount + 1, quantity = quantity + 1, active = NOT active,
	note = 'note ' || md5((id + 1)::text) WHERE id BETWEEN %s AND %s`, lo, hi)
}

// deleteSQL deletes the rows with keys lo..hi.
func deleteSQL(lo, hi int64) string {
	return fmt.Sprintf(`DELETE FROM bench_rows WHERE id BETWEEN %d AND %d`, lo, hi)
}

// changeInBatches runs stmt(lo, hi) for keys from..to in transactions of
// batch rows, on workers connections in parallel (disjoint key ranges).
func changeInBatches(ctx context.Context, dsn string, from, to, batch int64, workers int, stmt func(lo, hi int64) string) error {
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan int64)
	g.Go(func() error {
		defer close(next)
		for lo := from; lo <= to; lo += batch {
			select {
			case next <- lo:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			for lo := range next {
				if _, err := conn.Exec(ctx, stmt(lo, min(lo+batch-1, to))); err != nil {
					return fmt.Errorf("%s: %w", firstLine(stmt(lo, lo)), err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// createSlots creates pgoutput slots with the given names.
func createSlots(ctx context.Context, conn *pgx.Conn, names ...string) error {
	for _, n := range names {
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", n); err != nil {
			return fmt.Errorf("create slot %s: %w", n, err)
		}
	}
	return nil
}

// dropSlot drops a slot if it exists and is not in use.
func dropSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", name)
	if err != nil {
		return fmt.Errorf("drop slot %s: %w", name, err)
	}
	return nil
}

// currentLSN is pg_current_wal_lsn(): the end of the WAL written so far.
func currentLSN(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("pg_current_wal_lsn: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}

// pollInterval is how often the benchmark asks PostgreSQL for a slot's
// position. It is also the resolution of stream timings, together with
// the readers' status interval.
const pollInterval = 20 * time.Millisecond

// statusInterval is the confirmation interval of replicator and the bare
// reader in every benchmark.
const statusInterval = 100 * time.Millisecond

// waitConfirmed polls until slot's confirmed_flush_lsn reaches target and
// returns when that was seen. alive is checked on every poll, so that a
// reader that died fails the wait at once.
func waitConfirmed(ctx context.Context, conn *pgx.Conn, slot string, target pglogrepl.LSN, timeout time.Duration, alive func() error) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		var s *string
		err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
		now := time.Now()
		if err != nil {
			return now, fmt.Errorf("slot %s position: %w", slot, err)
		}
		if s != nil {
			last = *s
			lsn, err := pglogrepl.ParseLSN(*s)
			if err != nil {
				return now, err
			}
			if lsn >= target {
				return now, nil
			}
		}
		if err := alive(); err != nil {
			return now, err
		}
		if now.After(deadline) {
			return now, fmt.Errorf("slot %s confirmed %s, not %s, within %s", slot, last, target, timeout)
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// walsender is the server process streaming to one reader, and its TCP
// connection's ports. The server port is the one the harness's own
// connection uses (inet_server_port()): the benchmark cluster listens on
// one port. clientPort is -1 for a Unix-socket connection (none here).
type walsender struct {
	pid                    int
	serverPort, clientPort int
}

// findWalsender returns the walsender serving application_name app,
// waiting for it to appear.
func findWalsender(ctx context.Context, conn *pgx.Conn, app string) (walsender, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var w walsender
		err := conn.QueryRow(ctx, `SELECT pid, coalesce(client_port, -1), coalesce(inet_server_port(), -1)
			FROM pg_stat_replication WHERE application_name = $1`, app).Scan(&w.pid, &w.clientPort, &w.serverPort)
		if err == nil {
			return w, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return w, fmt.Errorf("walsender of %s: %w", app, err)
		}
		if time.Now().After(deadline) {
			return w, fmt.Errorf("no walsender with application_name %s", app)
		}
		select {
		case <-ctx.Done():
			return w, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
