package main

import "runtime/debug"

// defaultGCPercent is the garbage collector's target replicator runs with
// unless GOGC is set. Every row allocates its decoded values and its
// records, all short-lived, and at Go's default of 100 the collector took
// about a third of the snapshot's CPU; at 400 the snapshot used ~30 % less
// CPU, while the heap stays bounded by what the producer may buffer
// (docs/BENCHMARKS.md, "What the profiles showed"; docs/OPERATIONS.md,
// "Memory").
const defaultGCPercent = 400

// tuneGC applies defaultGCPercent unless the environment sets GOGC (which
// the runtime has applied already), and reports whether it did.
func tuneGC(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	return true
}
