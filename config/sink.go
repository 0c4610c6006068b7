package config

// KeySinkGCPercent is `replicator sink`'s garbage-collection target.
const KeySinkGCPercent = "sink.gc_percent"

// DefaultSinkGCPercent is sink.gc_percent when unset. A sink's live heap is
// a few MB in the steady state (one batch of at most MaxBatch records and
// the decoders), so Go's default of 100 collects many times a second:
// about a fifth of the sink's CPU in the sink-latency benchmark
// (bench/analysis.md). 300, as a rebuild's, trades a bounded amount of
// memory for less of it.
const DefaultSinkGCPercent = 300

// SinkConfig is the `replicator sink` process's own settings; each read
// model's are in read_models.
type SinkConfig struct {
	// GCPercent is Go's GC target (as GOGC) for the life of `replicator
	// sink` (0–1000; 0 leaves Go's alone). Default DefaultSinkGCPercent;
	// unused when the GOGC environment variable is set.
	GCPercent int `mapstructure:"gc_percent"`
}
