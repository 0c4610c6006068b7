package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/listenaddr"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/sink"
	"github.com/replicator/replicator/source"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
)

// runCheck is `replicator check`: it validates the config and every
// prerequisite it can reach, prints each problem with how to fix it, and
// fails if there was any.
func runCheck(ctx context.Context, path string, flags *pflag.FlagSet, out io.Writer) error {
	var problems []error
	report := func(section string, errs ...error) {
		var mine []error
		for _, err := range errs {
			if err != nil {
				mine = append(mine, splitJoined(err)...)
			}
		}
		if len(mine) == 0 {
			fmt.Fprintf(out, "ok    %s\n", section)
			return
		}
		fmt.Fprintf(out, "FAIL  %s\n", section)
		for _, err := range mine {
			fmt.Fprintf(out, "      - %s\n", strings.ReplaceAll(err.Error(), "\n", "\n        "))
		}
		problems = append(problems, mine...)
	}

	// A sink-only file (kafka, registry, read_models) is checked as
	// `replicator sink` reads it.
	cfg, sinkOnly, err := config.LoadAny(path, flags)
	if err != nil {
		report("config", err)
		return exitError{msg: "check failed"}
	}
	if sinkOnly {
		report("config " + path + " (sink only: read_models)")
		checkMetricsListen(cfg, report)
		checkReadModels(ctx, cfg, out, report)
		if len(problems) > 0 {
			fmt.Fprintf(out, "%d problem(s) found\n", len(problems))
			return exitError{msg: "check failed"}
		}
		return nil
	}
	report("config " + path)

	// PostgreSQL out of reach leaves its own checks out, not Kafka's,
	// the registry's or the metrics listener's: every problem at once.
	entities := checkPostgres(ctx, cfg, out, report)
	// From the state file alone: reported without PostgreSQL too.
	stateDir := filepath.Join(cfg.DataDir, "source")
	report("republish requests ("+stateDir+")", source.CheckRepublishFailures(stateDir, cfg.Source.Slot)...)

	if !cfg.EmbeddedKafka() {
		kcl, err := newKafkaClient(cfg, cfg.Kafka.Brokers, nil, nil) // check reports the failure itself
		if err == nil {
			err = pingKafka(ctx, kcl, cfg.Kafka.Brokers)
			if err == nil && entities != nil {
				// Existing topics must be compacted and take what the
				// producer sends (kafka.max_message_bytes).
				err = broker.CheckTopics(ctx, kadm.NewClient(kcl), topicSpecs(cfg, entities))
			}
			kcl.Close()
		}
		report(fmt.Sprintf("Kafka %v", cfg.Kafka.Brokers), err)
	} else {
		report("Kafka: embedded broker on "+cfg.Kafka.Listen, broker.CheckEmbedded(cfg.Kafka.Listen, filepath.Join(cfg.DataDir, "kafka")))
	}
	if !cfg.EmbeddedRegistry() {
		report("schema registry "+config.RedactRegistryURL(cfg.Registry.URL), pingRegistry(ctx, cfg))
	} else {
		report("schema registry: embedded on "+cfg.Registry.Listen, registry.CheckEmbedded(cfg.Registry.Listen, filepath.Join(cfg.DataDir, "registry")))
	}
	checkMetricsListen(cfg, report)
	checkReadModels(ctx, cfg, out, report)
	if len(problems) > 0 {
		fmt.Fprintf(out, "%d problem(s) found\n", len(problems))
		return exitError{msg: "check failed"}
	}
	return nil
}

// checkConnectTimeout bounds the connection to PostgreSQL: a server that
// accepts it and never answers would otherwise hold check forever.
const checkConnectTimeout = 15 * time.Second

// checkPostgres reports the server, the slot, the entities and the
// publication, or only the connection's failure. It returns the entities'
// mappings when they could be built (for the topic checks), else nil.
func checkPostgres(ctx context.Context, cfg *config.Config, out io.Writer, report func(string, ...error)) []*mapping.Entity {
	cctx, cancel := context.WithTimeout(ctx, checkConnectTimeout)
	conn, err := source.Connect(cctx, cfg.Source.URL)
	cancel()
	if err != nil {
		report("PostgreSQL "+config.RedactSourceURL(cfg.Source.URL), err)
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	report("PostgreSQL server "+config.RedactSourceURL(cfg.Source.URL), append(source.CheckServer(ctx, conn, cfg.Source.Slot, cfg.Source.Publication),
		source.CheckSlotKept(ctx, conn, cfg.Source.Slot, filepath.Join(cfg.DataDir, "source"), cfg.Source.Snapshot == config.SnapshotInitial))...)

	tables, entities, notes, err := loadEntities(ctx, cfg, conn)
	printNotes := func() {
		for _, n := range notes {
			fmt.Fprintf(out, "      note: %s\n", n)
		}
	}
	if err != nil {
		report("entities", err)
		printNotes()
		return nil
	}
	var errs []error
	for i := range tables {
		errs = append(errs, source.CheckTable(ctx, conn, &tables[i])...)
	}
	stateDir := filepath.Join(cfg.DataDir, "source")
	errs = append(errs, source.CheckAddedTables(ctx, conn, cfg.Source.Slot, stateDir, cfg.Source.Snapshot == config.SnapshotInitial, tables))
	report(fmt.Sprintf("entities (%d tables)", len(tables)), errs...)
	printNotes()
	report("publication "+cfg.Source.Publication, append(source.CheckPrivileges(ctx, conn, cfg.Source.Publication, tables),
		source.CheckPublication(ctx, conn, cfg.Source.Publication, tables)...)...)
	return entities
}

// checkReadModels checks each read model as `replicator sink` would start
// it: store, topics, subjects, fields, table, missed tombstones.
func checkReadModels(ctx context.Context, cfg *config.Config, out io.Writer, report func(string, ...error)) {
	if len(cfg.ReadModels) == 0 {
		return
	}
	// As `replicator sink` starts: the broker and the registry, each named
	// with the setting to fix (a read model's own check says only
	// "list topics: unable to dial"). The read models are checked all the
	// same, for their stores' problems.
	brokers, registryURL := sinkEndpoints(cfg)
	_, kerr := sinkKafka(ctx, cfg, brokers, slog.New(slog.DiscardHandler))
	report(fmt.Sprintf("Kafka of the read models %v", brokers), kerr)
	_, rerr := sinkRegistry(ctx, cfg, registryURL)
	report("schema registry of the read models "+config.RedactRegistryURL(registryURL), rerr)
	kopts, err := kafkaOptions(cfg, brokers, nil)
	if err != nil {
		report("read models", err)
		return
	}
	rcl, err := registry.NewClient(registry.ClientConfig{URL: registryURL, Username: cfg.Registry.Username, Password: cfg.Registry.Password, CAFile: cfg.Registry.CAFile})
	if err != nil {
		report("read models", fmt.Errorf("%s: %w", config.KeyRegistryURL, err))
		return
	}
	for i, m := range cfg.ReadModels {
		notes, errs := sink.Check(ctx, sink.Config{Model: sinkModel(m), StoreURL: m.Store, Kafka: kopts, Registry: rcl})
		report(fmt.Sprintf("read model %s (%s[%d]) in %s", m.Name, config.KeyReadModels, i, m.RedactedStore()), errs...)
		for _, n := range notes {
			fmt.Fprintf(out, "      note: %s\n", n)
		}
	}
}

func pingRegistry(ctx context.Context, cfg *config.Config) error {
	cl, err := registry.NewClient(registry.ClientConfig{URL: cfg.Registry.URL, Username: cfg.Registry.Username, Password: cfg.Registry.Password, CAFile: cfg.Registry.CAFile})
	if err != nil {
		return fmt.Errorf("%s: %w", config.KeyRegistryURL, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cl.Subjects(pctx); err != nil {
		return fmt.Errorf("%s does not answer: %w", config.KeyRegistryURL, err)
	}
	return nil
}

// splitJoined flattens errors.Join trees so each problem prints on its own line.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, splitJoined(e)...)
		}
		return out
	}
	return []error{err}
}

// checkMetricsListen checks metrics.listen can be bound, when set.
func checkMetricsListen(cfg *config.Config, report func(string, ...error)) {
	if cfg.Metrics.Listen == "" {
		return
	}
	err := listenaddr.Check(cfg.Metrics.Listen, config.KeyMetricsListen)
	report("metrics: /metrics, /healthz and /readyz on "+cfg.Metrics.Listen+" ("+config.KeyMetricsListen+")", err)
}
