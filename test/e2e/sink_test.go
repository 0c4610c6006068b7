//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver, to read the MariaDB read models
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to read the PostgreSQL read models
	"github.com/replicator/replicator/pgcluster/pgtest"
	_ "modernc.org/sqlite" // the "sqlite" driver, to read the SQLite read models
)

const sinkDDL = `
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, tier text);
-- One account per customer at most, so that the partial-write projection
-- (customers LEFT JOIN loyalty) is a function of the tables.
CREATE TABLE loyalty (account_id bigint PRIMARY KEY, customer_id bigint NOT NULL UNIQUE, points bigint);
INSERT INTO customers SELECT g, 'c' || g, CASE WHEN g % 3 = 0 THEN 'gold' END FROM generate_series(1, 100) g;
-- Accounts 1..60 for customers 41..100, and 61..70 for customers 101..110 that do not exist yet.
INSERT INTO loyalty SELECT g, g + 40, g * 10 FROM generate_series(1, 70) g;`

// TestSinkConvergesPerStore: PostgreSQL → replicator run → replicator sink
// → a single-source and a two-source read model in each store (SQLite,
// PostgreSQL, MariaDB), through inserts, updates, deletes, a primary-key
// change, and non-owner records arriving before and after their owner and
// moving between rows. Each read model must equal the projection computed
// with SQL on the source tables.
func TestSinkConvergesPerStore(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, sinkDDL)
	mustExec(t, conn, `CREATE DATABASE readmodels`)
	mysqlURL := mysqlDatabase(t)
	dataDir := t.TempDir()
	stores := map[string]string{
		"sqlite":   "sqlite://" + filepath.Join(dataDir, "read.db"),
		"postgres": pg.DSN("readmodels"),
		"mysql":    mysqlURL,
	}
	var models strings.Builder
	for _, name := range []string{"sqlite", "postgres", "mysql"} {
		fmt.Fprintf(&models, `
  - name: customers_%[1]s
    store: %[2]q
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name, tier: tier}
  - name: profile_%[1]s
    store: %[2]q
    key: customer_id
    sources:
      - entity: customers
        key: id
        owner: true
        columns: {display_name: name}
      - entity: loyalty
        key: customer_id
        columns: {points: points}
`, name, stores[name])
	}
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
  - table: customers
  - table: loyalty
read_models:%s`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), brokerAddr, registryAddr, models.String())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	run := startReplicator(t, "run", "--config", cfgPath)
	waitSlot(t, conn, "replicator", run)
	sink := startReplicator(t, "sink", "--config", cfgPath)

	mustExec(t, conn, `INSERT INTO customers SELECT g, 'c' || g, NULL FROM generate_series(101, 105) g`) // owners after their accounts
	mustExec(t, conn, `INSERT INTO customers VALUES (200, 'before account', 'silver')`)
	mustExec(t, conn, `INSERT INTO loyalty VALUES (200, 200, 2000)`) // account after its owner
	mustExec(t, conn, `UPDATE customers SET name = name || '!', tier = 'vip' WHERE id % 10 = 0`)
	mustExec(t, conn, `UPDATE loyalty SET points = points + 1 WHERE account_id % 7 = 0`)
	mustExec(t, conn, `DELETE FROM customers WHERE id IN (41, 42, 3)`)               // owners with and without accounts
	mustExec(t, conn, `DELETE FROM loyalty WHERE account_id IN (5, 6)`)              // non-owner tombstones
	mustExec(t, conn, `UPDATE customers SET id = 1050 WHERE id = 50`)                // primary-key change (account 10 stays on 50)
	mustExec(t, conn, `UPDATE loyalty SET customer_id = 1050 WHERE account_id = 11`) // an account moves rows
	mustExec(t, conn, `UPDATE loyalty SET account_id = 1012 WHERE account_id = 12`)  // a non-owner key change
	mustExec(t, conn, `BEGIN; UPDATE loyalty SET points = NULL WHERE account_id = 20; UPDATE customers SET tier = NULL WHERE id = 60; COMMIT`)
	waitCaughtUp(t, conn, "replicator", run)

	wantCustomers := sourceRows(t, conn, `SELECT id::text, name, coalesce(tier, 'NULL') FROM customers`)
	wantProfile := sourceRows(t, conn, `SELECT c.id::text, c.name, coalesce(l.points::text, 'NULL') FROM customers c LEFT JOIN loyalty l ON l.customer_id = c.id`)
	for _, name := range []string{"sqlite", "postgres", "mysql"} {
		waitReadModel(t, sink, stores[name], "customers_"+name, []string{"id", "name", "tier"}, wantCustomers)
		waitReadModel(t, sink, stores[name], "profile_"+name, []string{"customer_id", "display_name", "points"}, wantProfile)
	}
	sink.stop(t) // SIGTERM: a clean stop after the batch in progress
	run.stop(t)
}

// sourceRows is the projection of the source tables, rows as text joined
// by "|", sorted.
func sourceRows(t *testing.T, conn *pgx.Conn, query string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// mysqlDatabase creates a database in the MariaDB on 127.0.0.1:3306 (root,
// no password), dropped when the test ends, and returns its sink URL.
func mysqlDatabase(t *testing.T) string {
	t.Helper()
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("MariaDB does not answer on 127.0.0.1:3306 as root without password: %v (start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd; install: apt-get install mariadb-server)", err)
	}
	name := fmt.Sprintf("e2e_sink_%d", rand.Uint32())
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP DATABASE " + name) })
	return "mysql://root@127.0.0.1:3306/" + name
}

// readModelRows reads a read model's rows as text through database/sql.
func readModelRows(storeURL, table string, cols []string) ([]string, error) {
	driver, dsn, quote := "", "", `"`
	switch {
	case strings.HasPrefix(storeURL, "sqlite://"):
		driver, dsn = "sqlite", "file:"+strings.TrimPrefix(storeURL, "sqlite://")+"?_pragma=busy_timeout(10000)"
	case strings.HasPrefix(storeURL, "postgres://"):
		driver, dsn = "pgx", storeURL
	case strings.HasPrefix(storeURL, "mysql://"):
		rest := strings.TrimPrefix(storeURL, "mysql://root@")
		host, db, _ := strings.Cut(rest, "/")
		driver, dsn, quote = "mysql", "root@tcp("+host+")/"+db, "`"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quote + c + quote
	}
	rows, err := db.Query(fmt.Sprintf("SELECT %s FROM %s%s%s", strings.Join(q, ", "), quote, table, quote))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = "NULL"
			if v.Valid {
				parts[i] = v.String
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	sort.Strings(out)
	return out, rows.Err()
}

// waitConverged bounds the wait for a read model: after sink processes were
// killed, their group sessions (10 s) and a rebalance or two (up to 10 s
// each) pass before the partitions move (15-30 s measured).
const waitConverged = 120 * time.Second

// waitReadModel polls until the read model equals want exactly.
func waitReadModel(t *testing.T, sink *process, storeURL, table string, cols, want []string) {
	t.Helper()
	deadline := time.Now().Add(waitConverged)
	var got []string
	var err error
	for {
		got, err = readModelRows(storeURL, table, cols)
		if err == nil && strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		select {
		case perr := <-sink.done:
			t.Fatalf("sink exited (%v) before %s converged; output:\n%s", perr, table, sink.output.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("read model %s did not converge within %v (last error %v): got %d rows, want %d; first differences: %s", table, waitConverged, err, len(got), len(want), firstDiffs(got, want, 10))
		}
	}
}

// firstDiffs lists up to n rows present in only one of got and want.
func firstDiffs(got, want []string, n int) string {
	in := map[string]int{}
	for _, r := range got {
		in[r]++
	}
	for _, r := range want {
		in[r]--
	}
	var out []string
	for r, c := range in {
		if c > 0 {
			out = append(out, "unexpected "+r)
		} else if c < 0 {
			out = append(out, "missing "+r)
		}
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return strings.Join(out, ", ")
}
