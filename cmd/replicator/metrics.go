package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/metrics"
	"github.com/replicator/replicator/pipeline"
	"github.com/replicator/replicator/source"
	"golang.org/x/sync/errgroup"
)

// observed is what `run` shows of itself: metrics, health and readiness
// on metrics.listen, and the periodic stats line. Built before anything
// else so the listener answers (not ready) during the start-up.
type observed struct {
	repl    *metrics.Replication
	schemas *metrics.SchemaCounter
	server  *metrics.Server     // nil: metrics.listen is off
	slot    *metrics.SlotPoller // nil with server
	stats   *metrics.StatsLog   // nil: log.stats_interval 0
}

func newObserved(cfg *config.Config, log *slog.Logger) (*observed, error) {
	o := &observed{schemas: &metrics.SchemaCounter{}}
	if cfg.Metrics.Listen != "" {
		o.slot = metrics.NewSlotPoller(func(ctx context.Context) (*pgx.Conn, error) {
			return source.Connect(ctx, cfg.Source.URL)
		}, cfg.Source.Slot, cfg.Metrics.SlotPollInterval, log)
	}
	o.repl = metrics.NewReplication(cfg.Metrics.StallTimeout, o.slot, o.schemas)
	if cfg.Metrics.Listen != "" {
		srv, err := listenMetrics(cfg, log, o.repl.AddTo)
		if err != nil {
			return nil, err
		}
		o.server = srv
	}
	if cfg.Log.StatsInterval > 0 {
		o.stats = metrics.NewStatsLog(cfg.Log.StatsInterval, o.repl, log)
	}
	return o, nil
}

// listenMetrics binds metrics.listen with a registry holding the Go,
// process and build collectors and what add registers (a command's
// collectors and health checks). A long-running command other than run
// (the sink) calls it with its own add and runs the server in its
// errgroup.
func listenMetrics(cfg *config.Config, log *slog.Logger, add func(prometheus.Registerer, *metrics.Health) error) (*metrics.Server, error) {
	v := currentVersion()
	reg := metrics.NewRegistry(v.Version, v.Commit, v.GoVersion)
	health := &metrics.Health{}
	if err := add(reg, health); err != nil {
		return nil, err
	}
	srv, err := metrics.Listen(cfg.Metrics.Listen, reg, health, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.KeyMetricsListen, err)
	}
	log.Info("serving metrics", "addr", srv.Addr(), "paths", "/metrics /healthz /readyz")
	return srv, nil
}

// attach points the metrics at the running source and pipeline.
func (o *observed) attach(src *source.Source, pipe *pipeline.Pipeline, entities []*mapping.Entity) {
	names := make([]string, len(entities))
	for i, e := range entities {
		names[i] = e.Name()
	}
	stats := src.Stats()
	o.repl.Attach(stats.Report, pipe.Stats, names)
}

// runObserved runs replicate with the metrics server, slot poller and
// stats line beside it in one errgroup; they stop when replicate returns.
func runObserved(ctx context.Context, cfg *config.Config, log *slog.Logger, progress io.Writer, ready func(endpoints)) error {
	o, err := newObserved(cfg, log)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	octx, stopObserving := context.WithCancel(gctx)
	for _, r := range o.runners() {
		g.Go(func() error { return r.Run(octx) })
	}
	g.Go(func() error {
		defer stopObserving()
		return runReplicator(gctx, cfg, log, progress, ready, o)
	})
	return g.Wait()
}

// runners are the components that are on.
func (o *observed) runners() []interface{ Run(context.Context) error } {
	var rs []interface{ Run(context.Context) error }
	if o.server != nil {
		rs = append(rs, o.server)
	}
	if o.slot != nil {
		rs = append(rs, o.slot)
	}
	if o.stats != nil {
		rs = append(rs, o.stats)
	}
	return rs
}
