package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
