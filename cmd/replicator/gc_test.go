package main

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: replicator's GC target applies unless GOGC is set, which
// wins. Not parallel: the GC percent is process-wide.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	env := map[string]string{"GOGC": "150"}
	if tuneGC(func(k string) string { return env[k] }) {
		t.Error("tuneGC applied its default although GOGC is set")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set: GC percent %d, want it untouched (100)", got)
	}

	if !tuneGC(func(string) string { return "" }) {
		t.Error("tuneGC did not apply its default without GOGC")
	}
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("without GOGC: GC percent %d, want %d", got, defaultGCPercent)
	}
}
