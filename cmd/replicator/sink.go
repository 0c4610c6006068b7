package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/metrics"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/sink"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

func newSinkCommand(stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "sink",
		Short: "Build the configured read models from the entity topics (daemon)",
		Long: `sink consumes the entity topics into the read models of read_models:, each
with its own consumer group, its offsets stored in its database with its rows.
With kafka.brokers empty it connects to the embedded broker of a running
"replicator run" at kafka.listen (and to its registry at registry.listen).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			cfg, err := config.LoadSink(path, cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			log := newLogger(stderr, cfg.Log)
			if pct := gcPercent(config.KeySinkGCPercent, cfg.Sink.GCPercent, os.Getenv("GOGC"), log); pct > 0 {
				// For the process's life: it runs the sinks only.
				debug.SetGCPercent(pct)
			}
			return runSinks(cmd.Context(), cfg, log, nil, cfg.Metrics.Listen != "")
		},
	}
}

// sinkEndpoints are the broker and registry a sink reaches: the configured
// ones, or a running `replicator run`'s embedded ones.
func sinkEndpoints(cfg *config.Config) (brokers []string, registryURL string) {
	brokers, registryURL = cfg.Kafka.Brokers, cfg.Registry.URL
	if cfg.EmbeddedKafka() {
		brokers = []string{cfg.Kafka.Listen}
	}
	if cfg.EmbeddedRegistry() {
		registryURL = "http://" + cfg.Registry.Listen
	}
	return brokers, registryURL
}

// sinkKafka returns the Kafka options of the sinks and rebuild once a
// broker has answered: a consumer retries a dead address silently forever,
// so a wrong address or a `replicator run` not started yet would leave the
// read models looking ready and consuming nothing, without a log line. The
// client's warnings are logged, so a broker lost later shows as failed
// connection attempts.
func sinkKafka(ctx context.Context, cfg *config.Config, brokers []string, log *slog.Logger) ([]kgo.Opt, error) {
	kopts, err := kafkaOptions(cfg, brokers, nil)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	if err := pingKafka(ctx, cl, brokers); err != nil {
		if cfg.EmbeddedKafka() {
			return nil, fmt.Errorf("%w; %s is empty, so this is the embedded broker of `replicator run` at %s %s: start it with this config first, or set %s", err, config.KeyKafkaBrokers, config.KeyKafkaListen, cfg.Kafka.Listen, config.KeyKafkaBrokers)
		}
		return nil, err
	}
	return append(kopts, broker.ClientLogger(log)), nil
}

// sinkRegistry returns the registry client of the sinks and rebuild once
// the registry has answered, so that a wrong address (or a path it does
// not serve: "404 page not found") is named with the setting to fix, not
// as each read model's first schema lookup.
func sinkRegistry(ctx context.Context, cfg *config.Config, registryURL string) (*sr.Client, error) {
	rcl, err := registry.NewClient(registry.ClientConfig{URL: registryURL, Username: cfg.Registry.Username, Password: cfg.Registry.Password, CAFile: cfg.Registry.CAFile})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.KeyRegistryURL, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := rcl.Subjects(pctx); err != nil {
		if cfg.EmbeddedRegistry() {
			return nil, fmt.Errorf("the schema registry at %s does not answer: %w; %s is empty, so this is the embedded registry of `replicator run` at %s: start it with this config first, or set %s", registryURL, err, config.KeyRegistryURL, config.KeyRegistryListen, config.KeyRegistryURL)
		}
		return nil, fmt.Errorf("the schema registry at %s (%s) does not answer: %w (check the URL, its path, TLS and credentials)", registryURL, config.KeyRegistryURL, err)
	}
	return rcl, nil
}

// buildSinks makes one sink per read model; obs, if set, observes their
// batches.
func buildSinks(ctx context.Context, cfg *config.Config, log *slog.Logger, obs *metrics.Sinks) ([]*sink.Sink, error) {
	brokers, registryURL := sinkEndpoints(cfg)
	kopts, err := sinkKafka(ctx, cfg, brokers, log)
	if err != nil {
		return nil, err
	}
	rcl, err := sinkRegistry(ctx, cfg, registryURL)
	if err != nil {
		return nil, err
	}
	var sinks []*sink.Sink
	for _, m := range cfg.ReadModels {
		sc := sink.Config{Model: sinkModel(m), StoreURL: m.Store, StoreName: m.RedactedStore(), GiveUpAfter: m.GiveUpAfter, Kafka: kopts, Registry: rcl, Logger: log}
		if obs != nil {
			sc.Observer = obs.Observer(m.Name)
		}
		s, err := sink.New(sc)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

// runSinks runs every read model side by side until ctx ends. A read model
// that fails is logged and stops alone; the others go on. The error joins
// the failed read models' errors once all have stopped. started, if set,
// receives the sinks before they run (the demo reads their progress).
// With serveMetrics, metrics.listen serves the sinks' metrics and health
// until they have all stopped.
func runSinks(ctx context.Context, cfg *config.Config, log *slog.Logger, started func([]*sink.Sink), serveMetrics bool) error {
	var obs *metrics.Sinks
	if serveMetrics {
		obs = metrics.NewSinks(cfg.Metrics.StallTimeout)
	}
	sinks, err := buildSinks(ctx, cfg, log, obs)
	if err != nil {
		return err
	}
	if started != nil {
		started(sinks)
	}
	if obs != nil {
		for _, s := range sinks {
			obs.Attach(s)
		}
		srv, err := listenMetrics(cfg, log, obs.AddTo)
		if err != nil {
			return err
		}
		mctx, stopMetrics := context.WithCancel(ctx)
		served := make(chan struct{})
		defer func() { <-served }() // the server has stopped when runSinks returns
		defer stopMetrics()         // runs first, once the sinks have stopped
		go func() {
			defer close(served)
			if err := srv.Run(mctx); err != nil {
				log.Error("metrics server stopped", "error", err)
			}
		}()
	}
	errs := make([]error, len(sinks))
	var wg sync.WaitGroup
	for i, s := range sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil {
				log.Error("read model stopped; the others go on", "read_model", cfg.ReadModels[i].Name, "error", err)
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return exitError{msg: err.Error()} // logged above
	}
	return nil
}

// sinkModel is the sink's view of a configured read model.
func sinkModel(m config.ReadModel) sink.ReadModel {
	out := sink.ReadModel{Name: m.Name, Table: m.Table, Key: m.Key, DeadLetterTopic: m.DeadLetterTopic}
	if m.OnError == config.OnErrorDeadLetter {
		out.OnError = sink.DeadLetter
	}
	for _, s := range m.Sources {
		src := sink.Source{Topic: s.Topic, Key: s.Key, Owner: s.Owner}
		for _, c := range s.Columns {
			src.Columns = append(src.Columns, sink.Column{Name: c.Name, Field: c.Field, Type: c.Type})
		}
		out.Sources = append(out.Sources, src)
	}
	return out
}
