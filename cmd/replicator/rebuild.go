package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/sink"
	"github.com/spf13/cobra"
)

func newRebuildCommand(stderr io.Writer) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild a read model from offset zero into a new table, then swap it in",
		Long: `rebuild reads the read model's topics from the start into <table>__rebuild,
catches up with a running "replicator sink", and swaps the new table in
atomically (PostgreSQL, SQLite, MySQL/MariaDB): queries see the old table
until then. A running sink continues into the new table. One rebuild of a
read model runs at a time: a second one fails at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			cfg, err := config.LoadSink(path, cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			return runRebuild(cmd.Context(), cfg, name, newLogger(stderr, cfg.Log), terminal(stderr))
		},
	}
	cmd.Flags().StringVar(&name, "read-model", "", "the read model to rebuild (its name: in read_models)")
	_ = cmd.MarkFlagRequired("read-model")
	return cmd
}

// runRebuild rebuilds one read model, with a progress bar on a terminal
// (bar) or log lines otherwise (rebuildProgress).
func runRebuild(ctx context.Context, cfg *config.Config, name string, log *slog.Logger, bar io.Writer) error {
	var model *config.ReadModel
	for i := range cfg.ReadModels {
		if cfg.ReadModels[i].Name == name {
			model = &cfg.ReadModels[i]
		}
	}
	if model == nil {
		return fmt.Errorf("--read-model %q: no read model of that name in %s", name, config.KeyReadModels)
	}
	brokers, registryURL := sinkEndpoints(cfg)
	kopts, err := sinkKafka(ctx, cfg, brokers, log)
	if err != nil {
		return err
	}
	rcl, err := sinkRegistry(ctx, cfg, registryURL)
	if err != nil {
		return err
	}
	start := time.Now()
	err = sink.Rebuild(ctx, sink.Config{Model: sinkModel(*model), StoreURL: model.Store, StoreName: model.RedactedStore(), GiveUpAfter: model.GiveUpAfter, RebuildGCPercent: gcPercent(config.KeyReadModels+"[].rebuild_gc_percent", model.RebuildGCPercent, os.Getenv("GOGC"), log), Kafka: kopts, Registry: rcl, Logger: log}, rebuildProgress(name, log, bar))
	if bar != nil {
		fmt.Fprintln(bar)
	}
	if err != nil {
		return err
	}
	log.Info("read model rebuilt and swapped in", "read_model", name, "table", model.Table, "seconds", time.Since(start).Seconds())
	return nil
}

// rebuildProgress reports a rebuild's progress: on a terminal (bar not
// nil) a bar redrawn after each batch (records done of the total, rate,
// ETA; "done" once swapped in), otherwise a log line at most every 10 s
// (runRebuild logs the end).
func rebuildProgress(name string, log *slog.Logger, bar io.Writer) func(sink.Progress) {
	var lastLog time.Time
	return func(p sink.Progress) {
		rate := float64(p.Done) / max(p.Elapsed.Seconds(), 0.001)
		eta := (time.Duration(float64(p.Total-p.Done)/max(rate, 1)) * time.Second).Round(time.Second)
		if bar != nil {
			const width = 30
			filled := int(width * p.Done / max(p.Total, 1))
			state := "ETA " + eta.String()
			if p.Swapped {
				state = "done"
			}
			fmt.Fprintf(bar, "\r%s [%-*s] %d/%d records, %.0f/s, %s ", name, width, strings.Repeat("=", filled), p.Done, p.Total, rate, state)
			return
		}
		if !p.Swapped && time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			log.Info("rebuild progress", "read_model", name, "done", p.Done, "total", p.Total, "rate", int(rate), "eta", eta.String())
		}
	}
}
