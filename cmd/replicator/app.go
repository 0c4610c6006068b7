package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/pipeline"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// endpoints tells an in-process caller (the demo) where the running
// replicator's broker and registry are.
type endpoints struct {
	Brokers     []string
	RegistryURL string
	Entities    []*mapping.Entity
}

// loadEntities reads every configured table from the catalog and builds its
// mapping, reporting every problem at once.
func loadEntities(ctx context.Context, cfg *config.Config, conn *pgx.Conn) ([]relation.Table, []*mapping.Entity, error) {
	opts := mapping.Options{UnconstrainedNumeric: mapping.NumericAsString}
	if cfg.Source.UnconstrainedNumeric == "double" {
		opts.UnconstrainedNumeric = mapping.NumericAsDouble
	}
	var errs []error
	tables := make([]relation.Table, len(cfg.Entities))
	entities := make([]*mapping.Entity, len(cfg.Entities))
	for i, e := range cfg.Entities {
		key := fmt.Sprintf("%s[%d]", config.KeyEntities, i)
		schema, name, err := relation.ParseQualifiedName(e.Table)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.table: %w", key, err))
			continue
		}
		t, err := source.LoadTable(ctx, conn, schema, name)
		if errors.Is(err, source.ErrTableNotFound) {
			errs = append(errs, fmt.Errorf("%s.table: table %s does not exist in the source database (or the role cannot see it)", key, pgx.Identifier{schema, name}.Sanitize()))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			continue
		}
		if t, err = mapping.ApplyOverrides(t, e.AsString); err != nil {
			errs = append(errs, fmt.Errorf("%s.as_string: %w", key, err))
			continue
		}
		tables[i] = t
		ent, err := mapping.NewEntity(mapping.Spec{Name: e.Name, Topic: e.Topic, Key: e.Key, Columns: e.Columns}, &tables[i], opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", key, e.Name, err))
			continue
		}
		entities[i] = ent
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return tables, entities, nil
}

// runReplicator is `replicator run`: it starts the embedded broker and
// registry when configured so, prepares topics and schemas, and streams
// until ctx ends. ready, if set, is called once streaming can begin.
//
// progress, when not nil (a terminal), gets the snapshot's progress bar
// instead of periodic log lines.
func runReplicator(ctx context.Context, cfg *config.Config, log *slog.Logger, progress io.Writer, ready func(endpoints)) error {
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return err
	}
	problems := source.CheckServer(ctx, conn, cfg.Source.Slot, cfg.Source.Publication)
	var tables []relation.Table
	var entities []*mapping.Entity
	if len(problems) == 0 {
		tables, entities, err = loadEntities(ctx, cfg, conn)
		problems = append(problems, err)
	}
	conn.Close(ctx)
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("source %s is not ready:\n%w", config.RedactURL(cfg.Source.URL), err)
	}

	brokers := cfg.Kafka.Brokers
	if cfg.EmbeddedKafka() {
		emb, err := broker.StartEmbedded(ctx, broker.EmbeddedConfig{
			Listen:  cfg.Kafka.Listen,
			DataDir: filepath.Join(cfg.DataDir, "kafka"),
			Logger:  log,
		})
		if err != nil {
			return fmt.Errorf("start embedded broker (%s): %w", config.KeyKafkaListen, err)
		}
		defer emb.Close()
		brokers = []string{emb.Addr()}
		log.Info("embedded Kafka broker listening", "addr", emb.Addr(), "data_dir", filepath.Join(cfg.DataDir, "kafka"))
	}
	registryURL := cfg.Registry.URL
	if cfg.EmbeddedRegistry() {
		reg, err := registry.StartEmbedded(ctx, registry.EmbeddedConfig{
			Listen:  cfg.Registry.Listen,
			DataDir: filepath.Join(cfg.DataDir, "registry"),
		})
		if err != nil {
			return fmt.Errorf("start embedded registry (%s): %w", config.KeyRegistryListen, err)
		}
		defer reg.Close(context.WithoutCancel(ctx))
		registryURL = reg.URL()
		log.Info("embedded schema registry listening", "url", registryURL)
	}

	kcl, err := newKafkaClient(cfg, brokers)
	if err != nil {
		return err
	}
	defer kcl.Close()
	if err := pingKafka(ctx, kcl, brokers); err != nil {
		return err
	}
	specs := make([]broker.TopicSpec, len(entities))
	for i, e := range entities {
		specs[i] = broker.TopicSpec{
			Name:              e.Topic(),
			Partitions:        int32(cfg.Entities[i].Partitions),
			ReplicationFactor: int16(cfg.Kafka.ReplicationFactor),
		}
	}
	res, err := broker.EnsureTopics(ctx, kadm.NewClient(kcl), specs)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		log.Warn(w)
	}

	rcl, err := registry.NewClient(registry.ClientConfig{URL: registryURL, Username: cfg.Registry.Username, Password: cfg.Registry.Password, CAFile: cfg.Registry.CAFile})
	if err != nil {
		return fmt.Errorf("%s: %w", config.KeyRegistryURL, err)
	}
	pents, err := registerSchemas(ctx, rcl, entities)
	if err != nil {
		return fmt.Errorf("schema registry %s (%s): %w", config.RedactURL(registryURL), config.KeyRegistryURL, err)
	}

	src, err := source.New(source.Config{
		URL:            cfg.Source.URL,
		Slot:           cfg.Source.Slot,
		Publication:    cfg.Source.Publication,
		Snapshot:       cfg.Source.Snapshot,
		StatusInterval: cfg.Source.StatusInterval,
		StateDir:       filepath.Join(cfg.DataDir, "source"),
		Logger:         log,

		SnapshotWorkers:   cfg.Source.SnapshotWorkers,
		SnapshotChunkRows: cfg.Source.SnapshotChunkRows,
		ProgressInterval:  cfg.Source.SnapshotProgressInterval,
		Progress:          progress,
	}, tables)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(endpoints{Brokers: brokers, RegistryURL: registryURL, Entities: entities})
	}
	return src.Run(ctx, pipeline.New(pents, kcl))
}

func newKafkaClient(cfg *config.Config, brokers []string) (*kgo.Client, error) {
	bc := broker.Config{
		Brokers:  brokers,
		ClientID: cfg.Kafka.ClientID,
		TLS: broker.TLSConfig{
			Enabled: cfg.Kafka.TLS.Enabled, CAFile: cfg.Kafka.TLS.CAFile, CertFile: cfg.Kafka.TLS.CertFile,
			KeyFile: cfg.Kafka.TLS.KeyFile, InsecureSkipVerify: cfg.Kafka.TLS.InsecureSkipVerify,
		},
		SASL: broker.SASLConfig{Mechanism: cfg.Kafka.SASL.Mechanism, Username: cfg.Kafka.SASL.Username, Password: cfg.Kafka.SASL.Password},
	}
	opts, err := bc.ClientOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, broker.ProducerOptions(broker.ProducerConfig{
		MaxBufferedRecords: cfg.Kafka.MaxBufferedRecords,
		Linger:             cfg.Kafka.Linger,
		Compression:        cfg.Kafka.Compression,
	})...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// pingKafka fails fast, naming the brokers, when none answers: otherwise the
// producer would retry silently forever.
func pingKafka(ctx context.Context, cl *kgo.Client, brokers []string) error {
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		return fmt.Errorf("no Kafka broker of %s %v answers: %w (check the addresses, TLS and SASL settings)", config.KeyKafkaBrokers, brokers, err)
	}
	return nil
}

// registerSchemas registers every entity's key and value schema (checking
// compatibility first) and returns the pipeline's view of the entities.
func registerSchemas(ctx context.Context, rcl *sr.Client, entities []*mapping.Entity) ([]pipeline.Entity, error) {
	out := make([]pipeline.Entity, len(entities))
	for i, e := range entities {
		keyID, err := registry.Register(ctx, rcl, e.KeySubject(), e.KeySchema())
		if err != nil {
			return nil, fmt.Errorf("entity %s: %w", e.Name(), err)
		}
		valueID, err := registry.Register(ctx, rcl, e.ValueSubject(), e.ValueSchema())
		if err != nil {
			return nil, fmt.Errorf("entity %s: %w", e.Name(), err)
		}
		out[i] = pipeline.Entity{Mapping: e, KeySchemaID: keyID, ValueSchemaID: valueID}
	}
	return out, nil
}
