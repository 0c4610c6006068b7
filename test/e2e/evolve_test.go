//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/registry"
	"github.com/twmb/franz-go/pkg/sr"
)

// evolveEnv is one throwaway cluster and the config of a replicator that
// exports its tables to the embedded broker and registry.
type evolveEnv struct {
	conn        *pgx.Conn
	dataDir     string
	cfgPath     string
	broker      string
	registryURL string
}

func newEvolveEnv(t *testing.T, ddl, entities string) *evolveEnv {
	t.Helper()
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, ddl)
	dataDir := t.TempDir()
	env := &evolveEnv{conn: conn, dataDir: filepath.Join(dataDir, "data"), cfgPath: filepath.Join(dataDir, "replicator.yaml"), broker: freeAddr(t)}
	registryAddr := freeAddr(t)
	env.registryURL = "http://" + registryAddr
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
%s`, filepath.Join(dataDir, "data"), pg.DSN("postgres"), env.broker, registryAddr, entities)
	if err := os.WriteFile(env.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return env
}

func (env *evolveEnv) start(t *testing.T) *process {
	t.Helper()
	return startReplicator(t, "run", "--config", env.cfgPath)
}

// versions lists the registered versions of subject with their schemas,
// asking the running replicator's embedded registry.
func (env *evolveEnv) versions(t *testing.T, subject string) []sr.SubjectSchema {
	t.Helper()
	return subjectVersions(t, env.registryURL, subject)
}

// whileStopped serves the stopped replicator's persisted topics and
// schemas with an embedded broker and registry of the test's own, on free
// ports, for the duration of f.
func (env *evolveEnv) whileStopped(t *testing.T, f func(brokerAddr, registryURL string)) {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.StartEmbedded(ctx, registry.EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: filepath.Join(env.dataDir, "registry")})
	if err != nil {
		t.Fatalf("open the stopped replicator's registry: %v", err)
	}
	defer reg.Close(ctx)
	b, err := broker.StartEmbedded(ctx, broker.EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: filepath.Join(env.dataDir, "kafka")})
	if err != nil {
		t.Fatalf("open the stopped replicator's broker: %v", err)
	}
	defer b.Close()
	f(b.Addr(), reg.URL())
}

// assertNothingAfter checks that no record of topic comes from a
// transaction committed after lsn.
func assertNothingAfter(t *testing.T, records []topicRecord, lsn pglogrepl.LSN) {
	t.Helper()
	for _, r := range records {
		got, err := pglogrepl.ParseLSN(r.Headers[cdc.HeaderLSN])
		if err != nil {
			t.Fatalf("record %v: lsn header: %v", r.Key, err)
		}
		if got > lsn {
			t.Errorf("record %v (op %s) from LSN %s was produced, after the stop at %s", r.Key, r.Headers[cdc.HeaderOp], got, lsn)
		}
	}
}

func subjectVersions(t *testing.T, url, subject string) []sr.SubjectSchema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := sr.NewClient(sr.URLs(url))
	if err != nil {
		t.Fatal(err)
	}
	vs, err := cl.SubjectVersions(ctx, subject)
	if err != nil {
		t.Fatalf("versions of %s: %v", subject, err)
	}
	out := make([]sr.SubjectSchema, len(vs))
	for i, v := range vs {
		if out[i], err = cl.SchemaByVersion(ctx, subject, v); err != nil {
			t.Fatalf("%s version %d: %v", subject, v, err)
		}
	}
	return out
}

// confirmed is the slot's confirmed_flush_lsn.
func confirmed(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var text string
	if err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'replicator'`).Scan(&text); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func currentLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var text string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		t.Fatal(err)
	}
	lsn, _ := pglogrepl.ParseLSN(text)
	return lsn
}

const evolveDDL = `
CREATE TABLE orders (id bigint PRIMARY KEY, qty int NOT NULL, note text);
CREATE TABLE narrow (id bigint PRIMARY KEY, a text, b text);
INSERT INTO orders SELECT g, g, 'n' || g FROM generate_series(1, 20) g;
INSERT INTO narrow SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 5) g;`

const evolveEntities = `  - table: orders
  - table: narrow
    columns: [id, a]
`

// TestSchemaEvolutionAddColumn: ADD COLUMN mid-stream on a table exported
// with all its columns registers a BACKWARD (and FORWARD) compatible second
// value version that the following records use; on a table with a columns:
// list it registers nothing. A restart on the changed catalog adds nothing.
func TestSchemaEvolutionAddColumn(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, evolveEntities)
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	mustExec(t, env.conn, `UPDATE orders SET qty = qty + 1 WHERE id <= 5`)
	waitCaughtUp(t, env.conn, "replicator", p)
	alterAt := currentLSN(t, env.conn)

	// The ALTER and rows in the new shape in one transaction, then more.
	mustExec(t, env.conn, `BEGIN;
		ALTER TABLE orders ADD COLUMN color text, ADD COLUMN size int NOT NULL DEFAULT 1;
		INSERT INTO orders VALUES (21, 21, 'new', 'red');
		UPDATE orders SET color = 'blue' WHERE id = 1;
		COMMIT`)
	mustExec(t, env.conn, `UPDATE orders SET qty = 0 WHERE id = 2`)
	mustExec(t, env.conn, `ALTER TABLE narrow ADD COLUMN c text`)
	mustExec(t, env.conn, `INSERT INTO narrow VALUES (6, 'a6', 'b6', 'c6')`)
	mustExec(t, env.conn, `UPDATE narrow SET c = 'x', a = 'changed' WHERE id = 1`)
	waitCaughtUp(t, env.conn, "replicator", p)

	vs := env.versions(t, "orders-value")
	if len(vs) != 2 {
		t.Fatalf("orders-value: got %d versions, want 2", len(vs))
	}
	v1, err := avro.ParseWithCache(vs[0].Schema.Schema, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := avro.ParseWithCache(vs[1].Schema.Schema, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	if err := avro.NewSchemaCompatibility().Compatible(v2, v1); err != nil {
		t.Errorf("version 2 is not BACKWARD compatible with version 1: %v", err)
	}
	if err := avro.NewSchemaCompatibility().Compatible(v1, v2); err != nil {
		t.Errorf("version 2 is not FORWARD compatible with version 1: %v", err)
	}
	for _, f := range []string{"color", "size"} {
		if !strings.Contains(vs[1].Schema.Schema, `{"name":"`+f+`","type":["null",`) {
			t.Errorf("version 2 = %s, want a nullable field %s with default null", vs[1].Schema.Schema, f)
		}
	}
	if n := len(env.versions(t, "narrow-value")); n != 1 {
		t.Errorf("narrow-value: got %d versions, want 1 (column c is not exported)", n)
	}

	records := readTopic(t, env.broker, env.registryURL, "orders")
	after := 0
	for _, r := range records {
		lsn, err := pglogrepl.ParseLSN(r.Headers[cdc.HeaderLSN])
		if err != nil {
			t.Fatalf("record %v: lsn header: %v", r.Key, err)
		}
		_, hasColor := r.Value["color"]
		if lsn > alterAt {
			after++
			if !hasColor {
				t.Errorf("record %v after ADD COLUMN: no color field (schema version 1?)", r.Value)
			}
		} else if hasColor {
			t.Errorf("record %v before ADD COLUMN has a color field", r.Value)
		}
	}
	if after != 3 {
		t.Errorf("got %d records after the ALTER, want 3", after)
	}
	if r, _ := latestKey(records, "21"); pgText(r.Value["size"]) != "1" {
		t.Errorf("key 21: size %v, want 1", r.Value["size"])
	}
	assertConverged(t, withoutField(withDefaultNull(records, "color"), "size"), tableState(t, env.conn, `SELECT id, qty, note, color FROM orders`), nil)
	narrow := readTopic(t, env.broker, env.registryURL, "narrow")
	assertConverged(t, narrow, tableState(t, env.conn, `SELECT id, a FROM narrow`), nil)

	// Restart on the changed catalog (size is NOT NULL there): same
	// schemas, nothing new registered.
	p.stop(t)
	mustExec(t, env.conn, `INSERT INTO orders VALUES (22, 22, NULL, 'green', 5)`)
	p = env.start(t)
	waitOutput(t, p, "msg=streaming")
	waitCaughtUp(t, env.conn, "replicator", p)
	if n := len(env.versions(t, "orders-value")); n != 2 {
		t.Errorf("orders-value after a restart: got %d versions, want 2", n)
	}
	assertConverged(t, withoutField(withDefaultNull(readTopic(t, env.broker, env.registryURL, "orders"), "color"), "size"), tableState(t, env.conn, `SELECT id, qty, note, color FROM orders`), nil)
	p.stop(t)
}

// withDefaultNull reads records written before field existed as a reader
// on the newer schema does: with the field's default, null.
func withDefaultNull(records []topicRecord, field string) []topicRecord {
	for _, r := range records {
		if _, ok := r.Value[field]; r.Value != nil && !ok {
			r.Value[field] = nil
		}
	}
	return records
}

// latestKey is the latest record of the key whose id column prints as id.
func latestKey(records []topicRecord, id string) (topicRecord, bool) {
	for _, r := range latestByKey(records) {
		if pgText(r.Key["id"]) == id {
			return r, true
		}
	}
	return topicRecord{}, false
}

// withoutField drops field from every value, for comparing with a table
// query that leaves the column out.
func withoutField(records []topicRecord, field string) []topicRecord {
	for _, r := range records {
		delete(r.Value, field)
	}
	return records
}

// TestSchemaEvolutionIncompatible: a DROP of a NOT NULL column, a type
// change and a rename of one stop the replicator with a message naming the
// table, the column and its old and new types, before anything is
// produced in the new shape and without confirming the change; the subject
// gets no new version, and a restart stops again.
func TestSchemaEvolutionIncompatible(t *testing.T) {
	for _, tc := range []struct {
		name, alter string
		want        []string
	}{
		{"drop column", `ALTER TABLE orders DROP COLUMN qty`, []string{`column "qty" (integer) dropped`}},
		{"type change", `ALTER TABLE orders ALTER COLUMN qty TYPE text`, []string{`column "qty" changed type from integer to text`}},
		{"rename", `ALTER TABLE orders RENAME COLUMN qty TO quantity`, []string{`column "qty" (integer) dropped`, `column "quantity" (integer) added`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEvolveEnv(t, evolveDDL, evolveEntities)
			p := env.start(t)
			waitSlot(t, env.conn, "replicator", p)
			mustExec(t, env.conn, `UPDATE orders SET note = 'seen' WHERE id = 1`)
			waitCaughtUp(t, env.conn, "replicator", p)

			mustExec(t, env.conn, tc.alter)
			changeAt := currentLSN(t, env.conn)
			mustExec(t, env.conn, `UPDATE orders SET note = 'after' WHERE id = 2`)
			err := p.waitExit(t, 90*time.Second)
			if err == nil {
				t.Fatalf("replicator exited 0 after an incompatible change; output:\n%s", p.output.String())
			}
			out := p.output.String()
			for _, w := range append(tc.want, "table public.orders", "compatibility: none", "docs/OPERATIONS.md") {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
			env.whileStopped(t, func(brokerAddr, registryURL string) {
				if n := len(subjectVersions(t, registryURL, "orders-value")); n != 1 {
					t.Errorf("orders-value: got %d versions, want 1", n)
				}
				assertNothingAfter(t, readTopic(t, brokerAddr, registryURL, "orders"), changeAt)
			})
			if c := confirmed(t, env.conn); c > changeAt {
				t.Errorf("slot confirmed %s, past the change at %s", c, changeAt)
			}

			// A restart (on a catalog that already has the change) stops too.
			p = env.start(t)
			if err := p.waitExit(t, 90*time.Second); err == nil {
				t.Fatalf("replicator restarted and exited 0; output:\n%s", p.output.String())
			}
			if out := p.output.String(); !strings.Contains(out, "incompatibl") || !strings.Contains(out, "orders-value") {
				t.Errorf("restart output does not explain the incompatible schema:\n%s", out)
			}
			env.whileStopped(t, func(_, registryURL string) {
				if n := len(subjectVersions(t, registryURL, "orders-value")); n != 1 {
					t.Errorf("orders-value after a restart: got %d versions, want 1", n)
				}
			})
		})
	}
}

// TestTruncateTombstonesLiveKeys: a TRUNCATE tombstones every key still
// live on the topic, including rows written earlier in its transaction;
// rows written after it in the same transaction and later stay.
func TestTruncateTombstonesLiveKeys(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, evolveEntities)
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	mustExec(t, env.conn, `INSERT INTO orders SELECT g, g, NULL FROM generate_series(100, 300) g`)
	mustExec(t, env.conn, `DELETE FROM orders WHERE id BETWEEN 150 AND 160`)
	mustExec(t, env.conn, `UPDATE orders SET id = id + 1000 WHERE id BETWEEN 200 AND 205`)
	waitCaughtUp(t, env.conn, "replicator", p)
	var live []string
	for _, r := range latestByKey(readTopic(t, env.broker, env.registryURL, "orders")) {
		if r.Value != nil {
			live = append(live, pgText(r.Key["id"]))
		}
	}
	if len(live) != 20+201-11 {
		t.Fatalf("live keys before the TRUNCATE: got %d, want 210", len(live))
	}

	mustExec(t, env.conn, `BEGIN;
		INSERT INTO orders VALUES (400, 1, 'before the truncate');
		TRUNCATE orders;
		INSERT INTO orders VALUES (1, 7, 'back'), (500, 5, 'after');
		UPDATE orders SET qty = 8 WHERE id = 1;
		COMMIT`)
	mustExec(t, env.conn, `INSERT INTO orders VALUES (2, 2, 'later')`)
	// A TRUNCATE of a table not exported changes nothing.
	mustExec(t, env.conn, `CREATE TABLE scratch (id int PRIMARY KEY); TRUNCATE scratch`)
	waitCaughtUp(t, env.conn, "replicator", p)

	records := readTopic(t, env.broker, env.registryURL, "orders")
	state := tableState(t, env.conn, `SELECT id, qty, note FROM orders`)
	if len(state) != 3 {
		t.Fatalf("table: got %d rows, want 3", len(state))
	}
	var gone []string
	for _, id := range append(live, "400") {
		if _, ok := state[id]; !ok {
			gone = append(gone, id)
		}
	}
	assertConverged(t, records, state, gone)
	tombstones := 0
	for _, r := range records {
		if r.Value == nil && r.Headers[cdc.HeaderOp] == "d" && r.Headers[cdc.HeaderLSN] != "" {
			tombstones++
		}
	}
	// 11 deletes, 6 old keys of key changes, and the TRUNCATE's one per key
	// that had a value on the topic: the 211 live then, and the 11 deleted
	// and 6 moved keys again (harmless: their latest record was a
	// tombstone already).
	if want := 11 + 6 + 211 + 11 + 6; tombstones != want {
		t.Errorf("tombstones: got %d, want %d", tombstones, want)
	}
	p.stop(t)
}

// TestTruncateFail: with on_truncate: fail the replicator stops at the
// TRUNCATE with a message, publishes nothing of it and confirms nothing
// past it.
func TestTruncateFail(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, `  - table: orders
    on_truncate: fail
`)
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	mustExec(t, env.conn, `INSERT INTO orders VALUES (100, 1, NULL)`)
	waitCaughtUp(t, env.conn, "replicator", p)
	at := currentLSN(t, env.conn)
	mustExec(t, env.conn, `TRUNCATE orders`)
	if err := p.waitExit(t, 90*time.Second); err == nil {
		t.Fatalf("replicator exited 0 after TRUNCATE with on_truncate: fail; output:\n%s", p.output.String())
	}
	out := p.output.String()
	for _, w := range []string{"TRUNCATE of public.orders", "on_truncate: fail", "entities[0].on_truncate: tombstone"} {
		if !strings.Contains(out, w) {
			t.Errorf("output does not contain %q:\n%s", w, out)
		}
	}
	mustExec(t, env.conn, `INSERT INTO orders VALUES (101, 1, NULL)`)
	env.whileStopped(t, func(brokerAddr, registryURL string) {
		records := readTopic(t, brokerAddr, registryURL, "orders")
		assertNothingAfter(t, records, at)
		if r, ok := latestKey(records, "100"); !ok || r.Value == nil {
			t.Errorf("key 100: got %v, want its row (the TRUNCATE must publish nothing)", r.Value)
		}
	})
	if c := confirmed(t, env.conn); c > at {
		t.Errorf("slot confirmed %s, past the TRUNCATE at %s", c, at)
	}
}

// TestDropNotNull: pgoutput does not announce ALTER COLUMN ... DROP NOT
// NULL, so the first NULL in the column stops the replicator with a message
// saying what to do, and nothing past it is confirmed; following it
// (compatibility: backward, restart) registers the field as nullable and
// the row goes through.
func TestDropNotNull(t *testing.T) {
	env := newEvolveEnv(t, evolveDDL, evolveEntities)
	p := env.start(t)
	waitSlot(t, env.conn, "replicator", p)
	waitCaughtUp(t, env.conn, "replicator", p)

	mustExec(t, env.conn, `ALTER TABLE orders ALTER COLUMN qty DROP NOT NULL`)
	changeAt := currentLSN(t, env.conn)
	mustExec(t, env.conn, `UPDATE orders SET qty = NULL WHERE id = 3`)
	if err := p.waitExit(t, 90*time.Second); err == nil {
		t.Fatalf("replicator exited 0 on a NULL it cannot encode; output:\n%s", p.output.String())
	}
	out := p.output.String()
	for _, w := range []string{`column "qty": NULL`, "compatibility: backward", "docs/OPERATIONS.md"} {
		if !strings.Contains(out, w) {
			t.Errorf("output does not contain %q:\n%s", w, out)
		}
	}
	if c := confirmed(t, env.conn); c > changeAt {
		t.Errorf("slot confirmed %s, past the NULL written after %s", c, changeAt)
	}

	cfg, err := os.ReadFile(env.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "  - table: orders\n", "  - table: orders\n    compatibility: backward\n", 1))
	if err := os.WriteFile(env.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	p = env.start(t)
	waitCaughtUp(t, env.conn, "replicator", p)
	p.stop(t)
	env.whileStopped(t, func(brokerAddr, registryURL string) {
		if n := len(subjectVersions(t, registryURL, "orders-value")); n != 2 {
			t.Errorf("orders-value: got %d versions, want 2 (qty nullable)", n)
		}
		r, ok := latestKey(readTopic(t, brokerAddr, registryURL, "orders"), "3")
		if !ok || r.Value == nil {
			t.Fatalf("orders key 3: no record (found %v)", ok)
		}
		if v, has := r.Value["qty"]; !has || v != nil {
			t.Errorf("orders key 3: qty = %#v, want null", v)
		}
	})
}
