// Package metrics is how an operator sees a running replicator: Prometheus
// metrics, /healthz and /readyz served on one listener (metrics.listen),
// the slot poller behind the slot metrics, and the periodic stats log line.
//
// Nothing here sits on the hot path. The components keep plain atomic
// counters (source.Stats, pipeline.Stats) and this package reads them when
// Prometheus scrapes, through collectors that build their samples then: a
// per-entity counter costs the pipeline one atomic add per record and no
// label lookup.
//
// A long-running command builds one [Registry] (Go runtime and process
// collectors included), one [Health], registers its collectors and checks,
// and runs a [Server] in its errgroup. `run` uses [Replication]; the sink
// adds its own collector (a prometheus.Collector reading its counters, as
// Replication does) with Registry.MustRegister, its liveness with
// Health.AddCheck and its readiness with Health.AddReady.
package metrics
