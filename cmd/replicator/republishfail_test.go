package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestCheckAndStatusReportRepublishFailures: a table a republish could
// not republish (recorded in the state file by the daemon, which went on
// streaming) is a problem for check and needs attention in status, from
// the state file alone, with the way out.
func TestCheckAndStatusReportRepublishFailures(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "source"), 0o750); err != nil {
		t.Fatal(err)
	}
	state := `{"slot": "replicator", "complete": true, "tables": ["public.items"],
		"republish_done": ["20261208T101500-beef"],
		"republish_failed": [{"id": "20261208T101500-beef", "table": "public.items", "at": "2026-12-08T10:16:00Z",
			"error": "the table's columns changed while it was republished; restart replicator run, then request the republish of the table again"}]}`
	if err := os.WriteFile(filepath.Join(dataDir, "source", "slot-replicator.json"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: "postgres://u@%s/d?connect_timeout=5"}
data_dir: %q
kafka: {brokers: [%q]}
entities:
  - table: items
`, closedAddr(t), dataDir, closedAddr(t)))
	want := []string{"republish 20261208T101500-beef of table public.items failed at 2026-12-08T10:16:00Z", "columns changed while it was republished",
		"replicator republish --cancel --id 20261208T101500-beef"}

	out, err := runCLI(t, "check", "--config", cfg)
	if err == nil {
		t.Fatalf("check passed:\n%s", out)
	}
	for _, w := range append([]string{"FAIL  republish requests (" + filepath.Join(dataDir, "source") + ")"}, want...) {
		if !strings.Contains(out, w) {
			t.Errorf("check output does not say %q:\n%s", w, out)
		}
	}

	out, err = runCLI(t, "status", "--config", cfg, "--json")
	if err == nil {
		t.Errorf("status exited 0 with a failed republish:\n%s", out)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json printed no JSON (%v): %q", err, out)
	}
	if rep.Snapshot == nil || len(rep.Snapshot.RepublishFailed) != 1 || rep.Snapshot.RepublishFailed[0].Table != "public.items" {
		t.Errorf("status --json: snapshot %+v, want the failure of public.items", rep.Snapshot)
	}
	attention := strings.Join(rep.Attention, "\n")
	for _, w := range want {
		if !strings.Contains(attention, w) {
			t.Errorf("status attention does not say %q: %q", w, rep.Attention)
		}
	}
	var b strings.Builder
	if err := printStatus(&b, rep); err != nil {
		t.Fatal(err)
	}
	if w := "public.items: failed 2026-12-08T10:16:00Z"; !strings.Contains(b.String(), w) {
		t.Errorf("status output lacks %q:\n%s", w, b.String())
	}
}

// TestCheckReportsATableAddedWithoutAKey: a table added to entities: after
// the initial snapshot is snapshotted online at the next start, which
// needs a primary key; check says so before the start refuses it.
func TestCheckReportsATableAddedWithoutAKey(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, `CREATE TABLE good (id bigint PRIMARY KEY); CREATE TABLE nokey (a int NOT NULL, b text)`)
	// The slot the state file speaks of (made alone: not in a transaction
	// that wrote).
	if _, err := pgtest.Connect(t, dsn).Exec(context.Background(), `SELECT pg_create_logical_replication_slot('replicator', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "source"), 0o750); err != nil {
		t.Fatal(err)
	}
	state := `{"slot": "replicator", "complete": true, "tables": ["public.good"]}`
	statePath := filepath.Join(dataDir, "source", "slot-replicator.json")
	if err := os.WriteFile(statePath, []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: %q}
data_dir: %q
kafka: {listen: %q}
registry: {listen: %q}
entities:
  - table: good
  - table: nokey
    key: [a]
`, dsn, dataDir, closedAddr(t), closedAddr(t)))
	out, err := runCLI(t, "check", "--config", cfg)
	if err == nil {
		t.Fatalf("check passed with a table added without a primary key:\n%s", out)
	}
	for _, want := range []string{"FAIL  entities (2 tables)", "table public.nokey has no primary key", "the online snapshot of a table added to entities:",
		`ALTER TABLE "public"."nokey" ADD PRIMARY KEY`, "delete " + statePath} {
		if !strings.Contains(out, want) {
			t.Errorf("check output does not say %q:\n%s", want, out)
		}
	}
}
