package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/config"
)

// With log.format json the error that ends `run` is a JSON line too (main
// prints nothing more for it); in text format main prints it as before.
func TestFatalErrorIsJSON(t *testing.T) {
	t.Parallel()
	cfg := writeYAML(t, fmt.Sprintf(`
log: {format: json}
source: {url: "postgres://nobody@%s/db?connect_timeout=5"}
data_dir: %q
kafka: {listen: %q}
registry: {listen: %q}
entities: [{table: t}]
`, closedAddr(t), t.TempDir(), closedAddr(t), closedAddr(t)))
	out, err := runCLI(t, "run", "--config", cfg)
	var exit exitError
	if !errors.As(err, &exit) {
		t.Fatalf("run: got %v, want an error already reported (exitError)", err)
	}
	var fatal map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["level"] == "ERROR" {
			fatal = rec
		}
	}
	if fatal == nil || !strings.Contains(fmt.Sprint(fatal["error"]), "connect") {
		t.Errorf("no JSON error line naming the failed connection in:\n%s", out)
	}
}

// Every LSN in the log is X/Y, in JSON too (the JSON handler alone would
// print the number).
func TestLogLSNAsText(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log := newLogger(&buf, config.LogConfig{Level: "info", Format: format})
		log.Info("streaming", "from_lsn", pglogrepl.LSN(0x16B3748), slog.Group("g", "lsn", pglogrepl.LSN(0x1_0000_0001)))
		for _, want := range []string{"0/16B3748", "1/1"} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("%s log %q lacks LSN %s", format, buf.String(), want)
			}
		}
		if strings.Contains(buf.String(), "23803720") {
			t.Errorf("%s log %q prints an LSN as a number", format, buf.String())
		}
	}
}
