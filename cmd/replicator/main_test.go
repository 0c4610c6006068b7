package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/listenaddr/addrtest"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/registry"
)

// One cluster serves every test in this file; each test uses its own
// database so they do not see each other's tables.
func newDatabase(t *testing.T, pg *pgcluster.Cluster, ddl string) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := pg.CreateDatabase(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Connect(t, pg.DSN(name))
	if _, err := conn.Exec(context.Background(), ddl); err != nil {
		t.Fatalf("ddl: %v", err)
	}
	return pg.DSN(name)
}

func writeYAML(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "replicator.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// closedAddr is a loopback address nothing listens on, for a server the
// test starts (or to find refused): outside the kernel's ephemeral range,
// where no other listener or connection takes it meanwhile.
func closedAddr(t *testing.T) string {
	t.Helper()
	return addrtest.Free(t)
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, args, &out, &out)
	return out.String(), err
}

const badTables = `
CREATE TABLE good (id bigint PRIMARY KEY, name text, price numeric(8,2), at timestamptz);
CREATE TABLE nokey (a int NOT NULL, b text);
CREATE TABLE shapes (id int PRIMARY KEY, p point, label text);
CREATE PUBLICATION no_deletes FOR TABLE good WITH (publish = 'insert, update');
`

func TestCheckReportsEveryProblem(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, badTables)
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: %q}
data_dir: %q
entities:
  - table: good
  - table: nokey
  - table: shapes
  - table: missing
`, dsn, t.TempDir()))
	out, err := runCLI(t, "check", "--config", cfg)
	if err == nil {
		t.Fatalf("check passed; output:\n%s", out)
	}
	for _, want := range []string{
		"nokey", "primary key", // no key, and says how to fix
		"shapes", "p", "point", // unmappable type names table, column, type
		"missing", "does not exist",
		"entities[3].table",
		"ok    PostgreSQL server",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output does not mention %q:\n%s", want, out)
		}
	}
}

func TestCheckPassesOnAGoodSetup(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, badTables)
	dataDir, kafkaAddr, registryAddr, metricsAddr := t.TempDir(), closedAddr(t), closedAddr(t), closedAddr(t)
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: %q}
data_dir: %q
kafka: {listen: %q}
registry: {listen: %q}
metrics: {listen: %q}
entities:
  - table: good
  - table: shapes
    columns: [id, label]
  - table: nokey
    key: [a]
    as_string: [b, dropped]
`, dsn, dataDir, kafkaAddr, registryAddr, metricsAddr))
	out, err := runCLI(t, "check", "--config", cfg)
	if err != nil {
		t.Fatalf("check failed: %v\n%s", err, out)
	}
	// An as_string: name the table lacks (a dropped column whose older
	// changes may still stream) is a note, not a problem.
	if want := `note: entities[2].as_string: column "dropped" listed in as_string: is not in table public.nokey`; !strings.Contains(out, want) {
		t.Errorf("check output does not say %q:\n%s", want, out)
	}

	// The same config while a replicator runs on it: the three addresses
	// are taken and both data directories locked.
	metricsLn, err := net.Listen("tcp", metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { metricsLn.Close() })
	emb, err := broker.StartEmbedded(t.Context(), broker.EmbeddedConfig{Listen: kafkaAddr, DataDir: filepath.Join(dataDir, "kafka")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	reg, err := registry.StartEmbedded(t.Context(), registry.EmbeddedConfig{Listen: registryAddr, DataDir: filepath.Join(dataDir, "registry")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	out, err = runCLI(t, "check", "--config", cfg)
	if err == nil {
		t.Fatalf("check passed with the embedded services' ports and data_dir in use:\n%s", out)
	}
	for _, want := range []string{
		"FAIL  Kafka: embedded broker", "kafka.listen: cannot listen on " + kafkaAddr, filepath.Join(dataDir, "kafka") + " is in use by another process",
		"FAIL  schema registry: embedded", "registry.listen: cannot listen on " + registryAddr, filepath.Join(dataDir, "registry") + " is in use by another process",
		"FAIL  metrics:", "metrics.listen: cannot listen on " + metricsAddr,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output does not mention %q:\n%s", want, out)
		}
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	pg := pgtest.Start(t)
	replicaOnly := pgtest.Start(t, pgtest.Setting("wal_level", "replica"))
	dsn := newDatabase(t, pg, badTables+`CREATE ROLE secretive LOGIN PASSWORD 'right'; CREATE ROLE noselect LOGIN REPLICATION;`)
	// Password authentication for one role, trust for the rest.
	hba := filepath.Join(pg.Dir(), "data", "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("host all secretive 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(context.Background(), `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	wrongPassword := strings.Replace(dsn, "postgres@", "secretive:wrong@", 1)

	tests := []struct {
		name    string
		url     string
		pub     string // source.publication; default replicator's
		extra   string
		entity  string
		want    []string
		notWant string
	}{
		{name: "table without primary key", url: dsn, entity: "nokey", want: []string{"nokey", "primary key", "key:"}},
		{name: "unknown table", url: dsn, entity: "nosuch", want: []string{"nosuch", "does not exist"}},
		{name: "unmappable type", url: dsn, entity: "shapes", want: []string{"shapes", "p", "point", "as_string:"}},
		{name: "wal_level not logical", url: replicaOnly.DSN("postgres"), entity: "pg_catalog.pg_class", want: []string{"wal_level", "logical", "ALTER SYSTEM"}},
		{name: "wrong password", url: wrongPassword, entity: "good", want: []string{"password", "secretive"}, notWant: "wrong@"},
		{name: "role without SELECT on the table", url: strings.Replace(dsn, "postgres@", "noselect@", 1), entity: "good", want: []string{`role noselect lacks SELECT: GRANT SELECT ON "public"."good" TO "noselect"`}},
		{name: "publication that would lose deletes", url: dsn, pub: "no_deletes", entity: "good", want: []string{"publication no_deletes does not publish delete, truncate", `ALTER PUBLICATION "no_deletes" SET (publish = 'insert, update, delete, truncate')`}},
		{name: "unreachable registry", url: dsn, entity: "good", extra: fmt.Sprintf("registry: {url: %q}\n", "http://"+closedAddr(t)), want: []string{"registry.url"}},
		{name: "unreachable broker", url: dsn, entity: "good", extra: fmt.Sprintf("kafka: {brokers: [%q]}\n", closedAddr(t)), want: []string{"kafka.brokers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := tt.extra
			if !strings.Contains(extra, "registry:") {
				extra += fmt.Sprintf("registry: {listen: %q}\n", closedAddr(t))
			}
			if !strings.Contains(extra, "kafka:") {
				extra += fmt.Sprintf("kafka: {listen: %q}\n", closedAddr(t))
			}
			pub := tt.pub
			if pub == "" {
				pub = "replicator"
			}
			cfg := writeYAML(t, fmt.Sprintf("source: {url: %q, slot: s_%d, publication: %s}\ndata_dir: %q\n%sentities:\n  - table: %s\n",
				tt.url, time.Now().UnixNano()%1e6, pub, t.TempDir(), extra, tt.entity))
			out, err := runCLI(t, "run", "--config", cfg)
			if err == nil {
				t.Fatalf("run succeeded; output:\n%s", out)
			}
			msg := err.Error() + "\n" + out
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
			if tt.notWant != "" && strings.Contains(msg, tt.notWant) {
				t.Errorf("error leaks %q:\n%s", tt.notWant, msg)
			}
		})
	}
}

func TestSchemaPrintsSubjects(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, badTables)
	cfg := writeYAML(t, fmt.Sprintf("source: {url: %q}\nentities:\n  - table: good\n    topic: shop.good\n", dsn))
	out, err := runCLI(t, "schema", "--config", cfg)
	if err != nil {
		t.Fatalf("schema: %v\n%s", err, out)
	}
	for _, want := range []string{"# subject shop.good-key", "# subject shop.good-value", `"decimal"`, `"timestamp-micros"`} {
		if !strings.Contains(out, want) {
			t.Errorf("schema output lacks %q:\n%s", want, out)
		}
	}
}

func TestInvalidConfigNamesKeys(t *testing.T) {
	cfg := writeYAML(t, "source: {url: x, snapshot: often}\nentities: [{table: t, partitions: -1}]\nkafka: {compresion: lz4}\n")
	out, err := runCLI(t, "run", "--config", cfg)
	if err == nil {
		t.Fatal("run accepted an invalid config")
	}
	for _, want := range []string{"kafka.compresion", "source.snapshot"} {
		if !strings.Contains(err.Error()+out, want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

// The demo is the README's first command: it must run end to end by itself
// and show the user what landed on the topics and in the read models.
func TestDemo(t *testing.T) {
	out, err := runCLI(t, "demo", "--kafka-listen", closedAddr(t), "--registry-listen", closedAddr(t))
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"--- topic customers: 65 records, 60 distinct keys, 0 tombstones; by op: r=50 c=10 u=5",
		"--- topic orders: 258 records, 203 distinct keys, 4 tombstones; by op: r=200 c=2 u=52 d=4",
		"--- topic loyalty_accounts: 32 records, 26 distinct keys, 1 tombstones; by op: r=25 c=1 u=5 d=1",
		"value=null (tombstone)",
		"orders_read: 199 rows, equal to the source tables' projection",
		"customer_profile: 60 rows, equal to the source tables' projection",
		"2 | customer 2 | vip2@example.com | points=110",
		"==> done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestDemoHelp: `demo --help` says the demo runs the sink too, into a
// SQLite read model built by partial writes.
func TestDemoHelp(t *testing.T) {
	t.Parallel()
	out, err := runCLI(t, "demo", "--help")
	if err != nil {
		t.Fatalf("demo --help: %v\n%s", err, out)
	}
	for _, want := range []string{"the sink", "SQLite read models", "customer_profile", "partial writes"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --help lacks %q:\n%s", want, out)
		}
	}
}

// TestDemoRefusesGlobalFlags: demo builds its own config, so a global
// flag given to it (which it would ignore) is refused, named.
func TestDemoRefusesGlobalFlags(t *testing.T) {
	t.Parallel()
	out, err := runCLI(t, "demo", "--config", "mine.yaml", "--source-url", "postgres://x@127.0.0.1/db")
	if err == nil {
		t.Fatalf("demo with --config and --source-url ran:\n%s", out)
	}
	for _, want := range []string{"--config", "--source-url", "replicator run --config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("demo's refusal %q lacks %q", err, want)
		}
	}
	if strings.Contains(out, "starting a throwaway PostgreSQL") {
		t.Errorf("demo started before refusing:\n%s", out)
	}
}

// TestCheckGoesOnWithoutPostgres: PostgreSQL out of reach does not hide
// the other problems (an unreachable broker, a taken metrics port).
func TestCheckGoesOnWithoutPostgres(t *testing.T) {
	t.Parallel()
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { metricsLn.Close() })
	pgAddr, brokerAddr := closedAddr(t), closedAddr(t)
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: "postgres://u@%s/d?connect_timeout=5"}
data_dir: %q
kafka: {brokers: [%q]}
metrics: {listen: %q}
entities:
  - table: t
`, pgAddr, t.TempDir(), brokerAddr, metricsLn.Addr().String()))
	out, err := runCLI(t, "check", "--config", cfg)
	if err == nil {
		t.Fatalf("check passed with nothing reachable:\n%s", out)
	}
	for _, want := range []string{
		"FAIL  PostgreSQL", "FAIL  Kafka [" + brokerAddr + "]",
		"FAIL  metrics:", "metrics.listen: cannot listen on " + metricsLn.Addr().String(),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output does not mention %q:\n%s", want, out)
		}
	}
}
