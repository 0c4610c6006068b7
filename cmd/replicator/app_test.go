package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
)

// GOGC in the environment is the operator's choice for the whole process:
// source.snapshot_gc_percent then stays unused, and the log says so.
func TestSnapshotGCPercentYieldsToGOGC(t *testing.T) {
	for _, tt := range []struct {
		configured int
		gogc       string
		want       int
		logged     bool
	}{
		{configured: 200, gogc: "", want: 200},
		{configured: 0, gogc: "", want: 0},
		{configured: 200, gogc: "150", want: 0, logged: true},
		{configured: 0, gogc: "off", want: 0},
	} {
		var logs bytes.Buffer
		got := gcPercent(config.KeySnapshotGCPercent, tt.configured, tt.gogc, slog.New(slog.NewTextHandler(&logs, nil)))
		if got != tt.want || strings.Contains(logs.String(), "GOGC is set") != tt.logged {
			t.Errorf("gcPercent(%d, GOGC=%q): got %d, logged %q; want %d, logged %v", tt.configured, tt.gogc, got, logs.String(), tt.want, tt.logged)
		}
	}
}
