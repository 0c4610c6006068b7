package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/sink"
	"github.com/replicator/replicator/source"
	"github.com/spf13/pflag"
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

	cfg, err := config.Load(path, flags)
	if err != nil {
		// A sink-only file (kafka, registry, read_models) is checked as
		// `replicator sink` reads it.
		scfg, serr := config.LoadSink(path, flags)
		if serr != nil || scfg.Source.URL != "" || len(scfg.Entities) > 0 {
			report("config", err)
			return exitError{msg: "check failed"}
		}
		report("config " + path + " (sink only: read_models)")
		checkReadModels(ctx, scfg, out, report)
		if len(problems) > 0 {
			fmt.Fprintf(out, "%d problem(s) found\n", len(problems))
			return exitError{msg: "check failed"}
		}
		return nil
	}
	report("config " + path)

	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		report("PostgreSQL "+config.RedactURL(cfg.Source.URL), err)
		return exitError{msg: "check failed"}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	report("PostgreSQL server "+config.RedactURL(cfg.Source.URL), source.CheckServer(ctx, conn, cfg.Source.Slot, cfg.Source.Publication)...)

	tables, _, err := loadEntities(ctx, cfg, conn)
	if err != nil {
		report("entities", err)
	} else {
		var errs []error
		for i := range tables {
			errs = append(errs, source.CheckTable(ctx, conn, &tables[i])...)
		}
		report(fmt.Sprintf("entities (%d tables)", len(tables)), errs...)
		report("publication "+cfg.Source.Publication, source.CheckPublication(ctx, conn, cfg.Source.Publication, tables)...)
	}

	if !cfg.EmbeddedKafka() {
		kcl, err := newKafkaClient(cfg, cfg.Kafka.Brokers, nil, nil) // check reports the failure itself
		if err == nil {
			err = pingKafka(ctx, kcl, cfg.Kafka.Brokers)
			kcl.Close()
		}
		report(fmt.Sprintf("Kafka %v", cfg.Kafka.Brokers), err)
	} else {
		report("Kafka: embedded broker on " + cfg.Kafka.Listen)
	}
	if !cfg.EmbeddedRegistry() {
		report("schema registry "+config.RedactURL(cfg.Registry.URL), pingRegistry(ctx, cfg))
	} else {
		report("schema registry: embedded on " + cfg.Registry.Listen)
	}
	checkReadModels(ctx, cfg, out, report)
	if len(problems) > 0 {
		fmt.Fprintf(out, "%d problem(s) found\n", len(problems))
		return exitError{msg: "check failed"}
	}
	return nil
}

// checkReadModels checks each read model as `replicator sink` would start
// it: store, topics, subjects, fields, table, missed tombstones.
func checkReadModels(ctx context.Context, cfg *config.Config, out io.Writer, report func(string, ...error)) {
	if len(cfg.ReadModels) == 0 {
		return
	}
	brokers, registryURL := sinkEndpoints(cfg)
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
