package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
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
// mapping, reporting every problem at once. notes are warnings: as_string:
// names the table lacks (a column dropped while its older changes may
// still be to stream must stay listed for them).
func loadEntities(ctx context.Context, cfg *config.Config, conn *pgx.Conn) (tables []relation.Table, entities []*mapping.Entity, notes []string, err error) {
	opts := mappingOptions(cfg)
	var errs []error
	tables = make([]relation.Table, len(cfg.Entities))
	entities = make([]*mapping.Entity, len(cfg.Entities))
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
		spec := entitySpec(e)
		var missing []string
		spec.AsString, missing = mapping.PresentColumns(&t, e.AsString)
		for _, name := range missing {
			notes = append(notes, fmt.Sprintf("%s.as_string: %s", key, mapping.AsStringNotInTable(&t, name)))
		}
		if t, err = mapping.ApplyOverrides(t, spec.AsString); err != nil {
			errs = append(errs, fmt.Errorf("%s.as_string: %w", key, err))
			continue
		}
		tables[i] = t
		ent, err := mapping.NewEntity(spec, &tables[i], opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", key, e.Name, err))
			continue
		}
		ent.MarkUnused(&tables[i]) // the source skips columns no entity reads
		entities[i] = ent
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, notes, err
	}
	return tables, entities, notes, nil
}

func mappingOptions(cfg *config.Config) mapping.Options {
	opts := mapping.Options{UnconstrainedNumeric: mapping.NumericAsString}
	if cfg.Source.UnconstrainedNumeric == "double" {
		opts.UnconstrainedNumeric = mapping.NumericAsDouble
	}
	return opts
}

// entitySpec is the mapping of a configured entity. AsString is included:
// NewEntity applies it to a table that already has it applied, which
// changes nothing, and a table rebuilt after a schema change needs it.
func entitySpec(e config.Entity) mapping.Spec {
	return mapping.Spec{Name: e.Name, Topic: e.Topic, Key: e.Key, Columns: e.Columns, AsString: e.AsString}
}

// entitySpecFor is entitySpec for table t's shape: as_string: names t
// lacks are left out (see loadEntities).
func entitySpecFor(e config.Entity, t *relation.Table) mapping.Spec {
	spec := entitySpec(e)
	spec.AsString, _ = mapping.PresentColumns(t, e.AsString)
	return spec
}

// runReplicator is `replicator run`: it starts the embedded broker and
// registry when configured so, prepares topics and schemas, and streams
// until ctx ends. ready, if set, is called once streaming can begin.
//
// progress, when not nil (a terminal), gets the snapshot's progress bar
// instead of periodic log lines.
func runReplicator(ctx context.Context, cfg *config.Config, log *slog.Logger, progress io.Writer, ready func(endpoints), obs *observed) error {
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return err
	}
	var problems []error
	for _, p := range source.CheckServer(ctx, conn, cfg.Source.Slot, cfg.Source.Publication) {
		// Right after a crash the slot is still held by the dead process's
		// walsender for a moment; the source waits that out and reports a
		// slot that stays in use itself.
		if !source.IsSlotInUse(p) {
			problems = append(problems, p)
		}
	}
	var tables []relation.Table
	var entities []*mapping.Entity
	if len(problems) == 0 {
		var notes []string
		tables, entities, notes, err = loadEntities(ctx, cfg, conn)
		problems = append(problems, err)
		for _, n := range notes {
			log.Warn(n)
		}
		if err == nil {
			for i := range tables {
				problems = append(problems, source.CheckTable(ctx, conn, &tables[i])...)
			}
			problems = append(problems, source.CheckPrivileges(ctx, conn, cfg.Source.Publication, tables)...)
			problems = append(problems, source.CheckPublication(ctx, conn, cfg.Source.Publication, tables)...)
		}
	}
	conn.Close(ctx)
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("source %s is not ready:\n%w", config.RedactSourceURL(cfg.Source.URL), err)
	}

	brokers := cfg.Kafka.Brokers
	var dial broker.DialFunc // the embedded broker is dialed in memory
	if cfg.EmbeddedKafka() {
		emb, err := broker.StartEmbedded(ctx, broker.EmbeddedConfig{
			Listen:  cfg.Kafka.Listen,
			DataDir: filepath.Join(cfg.DataDir, "kafka"),
			SASL:    broker.SASLConfig{Mechanism: cfg.Kafka.SASL.Mechanism, Username: cfg.Kafka.SASL.Username, Password: cfg.Kafka.SASL.Password},
			// kafka.tls.cert_file and key_file are the embedded broker's own
			// certificate (config.Validate requires both with TLS enabled).
			CertFile: embeddedTLSFile(cfg, cfg.Kafka.TLS.CertFile),
			KeyFile:  embeddedTLSFile(cfg, cfg.Kafka.TLS.KeyFile),
			Logger:   log,
		})
		if err != nil {
			return fmt.Errorf("start embedded broker (%s): %w", config.KeyKafkaListen, err)
		}
		defer emb.Close()
		brokers, dial = []string{emb.Addr()}, emb.DialContext
		log.Info("embedded Kafka broker listening", "addr", emb.Addr(), "data_dir", filepath.Join(cfg.DataDir, "kafka"))
	}
	kopts, err := kafkaOptions(cfg, brokers, dial)
	if err != nil {
		return err
	}
	registryURL := cfg.Registry.URL
	if cfg.EmbeddedRegistry() {
		// The registry keeps its schemas on the broker it serves: a lost
		// data_dir must not number them again (an id would then mean two
		// schemas for the topics' lifetime).
		topic, err := registry.OpenTopicLog(ctx, int16(cfg.Kafka.ReplicationFactor), kopts...)
		if err != nil {
			return fmt.Errorf("start embedded registry: %w (check %s)", err, config.KeyKafkaBrokers)
		}
		reg, err := registry.StartEmbedded(ctx, registry.EmbeddedConfig{
			Listen:   cfg.Registry.Listen,
			DataDir:  filepath.Join(cfg.DataDir, "registry"),
			Username: cfg.Registry.Username,
			Password: cfg.Registry.Password,
			CertFile: cfg.Registry.CertFile,
			KeyFile:  cfg.Registry.KeyFile,
			Topic:    topic,
		})
		if err != nil {
			return fmt.Errorf("start embedded registry (%s): %w", config.KeyRegistryListen, err)
		}
		defer reg.Close(context.WithoutCancel(ctx))
		registryURL = reg.URL()
		log.Info("embedded schema registry listening", "url", registryURL, "schemas_topic", registry.SchemasTopic)
	}
	kcl, err := newKafkaClient(cfg, brokers, dial, log)
	if err != nil {
		return err
	}
	defer kcl.Close()
	if err := pingKafka(ctx, kcl, brokers); err != nil {
		return err
	}
	res, err := broker.EnsureTopics(ctx, kadm.NewClient(kcl), topicSpecs(cfg, entities))
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
	pents, err := registerSchemas(ctx, cfg, rcl, tables, entities)
	if err != nil {
		return fmt.Errorf("schema registry %s (%s): %w", config.RedactRegistryURL(registryURL), config.KeyRegistryURL, err)
	}
	obs.schemas.Add(2 * len(pents)) // a key and a value schema each
	keys := pipeline.NewTopicKeys(kopts...)
	for i, e := range pents {
		// A registry that moved or lost its data gives the same key
		// schema another id (every key's bytes would change) and may not
		// know, or mean another schema by, the ids the values carry.
		if err := keys.CheckSchemaIDs(ctx, e.Mapping.Topic(), e.KeySchemaID, e.Mapping.ValueSubject(), registry.NewSchemas(rcl)); err != nil {
			return fmt.Errorf("%s[%d] (%s), schema registry %s: %w", config.KeyEntities, i, e.Mapping.Name(), config.RedactRegistryURL(registryURL), err)
		}
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
		SnapshotGCPercent: gcPercent(config.KeySnapshotGCPercent, cfg.Source.SnapshotGCPercent, os.Getenv("GOGC"), log),
		ProgressInterval:  cfg.Source.SnapshotProgressInterval,
		Progress:          progress,
		Reconnect: source.Reconnect{
			InitialBackoff: cfg.Source.Reconnect.InitialBackoff,
			MaxBackoff:     cfg.Source.Reconnect.MaxBackoff,
			GiveUpAfter:    cfg.Source.Reconnect.GiveUpAfter,
		},
	}, tables)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(endpoints{Brokers: brokers, RegistryURL: registryURL, Entities: entities})
	}
	// A record the producer fails (the broker refused it) stops the run at
	// once: otherwise later transactions keep flowing, the confirmed
	// position freezes behind the failed one and nothing says why until
	// the next change of that table or a stop.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	pipe := pipeline.New(pents, kcl,
		pipeline.WithSchemas(obs.schemas.Wrap(registry.NewSchemas(rcl))),
		pipeline.WithLiveKeys(keys),
		pipeline.WithSpillDir(filepath.Join(cfg.DataDir, "spill")),
		pipeline.WithBufferLimit(cfg.Kafka.MaxBufferedRecords),
		pipeline.WithMaxMessageBytes(cfg.Kafka.MaxMessageBytes),
		pipeline.OnFailure(stop))
	obs.attach(src, pipe, entities)
	err = src.Run(runCtx, pipe)
	if perr := pipe.Err(); perr != nil {
		// The source stopped because of it (or saw it while flushing):
		// this is the error to report, not the stop it caused.
		return perr
	}
	return err
}

// topicSpecs are the entities' topics as run creates and checks them.
func topicSpecs(cfg *config.Config, entities []*mapping.Entity) []broker.TopicSpec {
	specs := make([]broker.TopicSpec, len(entities))
	for i, e := range entities {
		specs[i] = broker.TopicSpec{
			Name:              e.Topic(),
			Partitions:        int32(cfg.Entities[i].Partitions),
			ReplicationFactor: int16(cfg.Kafka.ReplicationFactor),
			MaxMessageBytes:   int32(cfg.Kafka.MaxMessageBytes),
		}
	}
	return specs
}

// kafkaOptions are the connection options (brokers, TLS, SASL) without
// producer settings: what a short-lived consumer needs.
// embeddedTLSFile is f when the embedded broker serves TLS, "" otherwise.
func embeddedTLSFile(cfg *config.Config, f string) string {
	if !cfg.Kafka.TLS.Enabled {
		return ""
	}
	return f
}

func kafkaOptions(cfg *config.Config, brokers []string, dial broker.DialFunc) ([]kgo.Opt, error) {
	bc := broker.Config{
		Brokers:  brokers,
		Dial:     dial,
		ClientID: cfg.Kafka.ClientID,
		TLS: broker.TLSConfig{
			Enabled: cfg.Kafka.TLS.Enabled, CAFile: cfg.Kafka.TLS.CAFile, CertFile: cfg.Kafka.TLS.CertFile,
			KeyFile: cfg.Kafka.TLS.KeyFile, InsecureSkipVerify: cfg.Kafka.TLS.InsecureSkipVerify,
		},
		SASL: broker.SASLConfig{Mechanism: cfg.Kafka.SASL.Mechanism, Username: cfg.Kafka.SASL.Username, Password: cfg.Kafka.SASL.Password},
	}
	if dial != nil {
		// The embedded broker's in-process dialer speaks TLS itself when
		// the broker serves it.
		bc.TLS = broker.TLSConfig{}
	}
	return bc.ClientOptions()
}

func newKafkaClient(cfg *config.Config, brokers []string, dial broker.DialFunc, log *slog.Logger) (*kgo.Client, error) {
	opts, err := kafkaOptions(cfg, brokers, dial)
	if err != nil {
		return nil, err
	}
	opts = append(opts, broker.ProducerOptions(broker.ProducerConfig{
		MaxBufferedRecords: cfg.Kafka.MaxBufferedRecords,
		Linger:             cfg.Kafka.Linger,
		Compression:        cfg.Kafka.Compression,
		BatchMaxBytes:      int32(cfg.Kafka.MaxMessageBytes),
	})...)
	if log != nil {
		opts = append(opts, broker.ClientLogger(log))
	}
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

// registerSchemas registers every entity's key and value schema, checked
// locally under the entity's compatibility level against the subject's
// latest version and then by the registry (the table may have changed while
// replicator was stopped), and returns the pipeline's view of the entities.
// An entity whose latest registered value schema has a nullable field for a
// column now NOT NULL (a column added while streaming) is rebuilt to keep
// it nullable; entities[i] is replaced then.
func registerSchemas(ctx context.Context, cfg *config.Config, rcl *sr.Client, tables []relation.Table, entities []*mapping.Entity) ([]pipeline.Entity, error) {
	out := make([]pipeline.Entity, len(entities))
	for i, e := range entities {
		ce := cfg.Entities[i]
		level, err := registry.ParseLevel(ce.Compatibility)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].compatibility: %w", config.KeyEntities, i, err)
		}
		spec := entitySpecFor(ce, &tables[i])
		if spec.Nullable, err = keptNullable(ctx, rcl, e.ValueSubject(), &tables[i]); err != nil {
			return nil, fmt.Errorf("entity %s: %w", e.Name(), err)
		}
		if len(spec.Nullable) > 0 {
			if e, err = mapping.NewEntity(spec, &tables[i], mappingOptions(cfg)); err != nil {
				return nil, fmt.Errorf("%s[%d] (%s): %w", config.KeyEntities, i, ce.Name, err)
			}
			entities[i] = e
		}
		keyID, err := registry.RegisterKey(ctx, rcl, e.KeySubject(), e.KeySchema())
		if err != nil {
			return nil, startupRefused(i, e, err)
		}
		valueID, err := registry.Evolve(ctx, rcl, e.ValueSubject(), e.ValueSchema(), level)
		if err != nil {
			return nil, startupRefused(i, e, err)
		}
		onTruncate := pipeline.TruncateTombstone
		if ce.OnTruncate == config.OnTruncateFail {
			onTruncate = pipeline.TruncateFail
		}
		// The stream's shapes get every as_string: name: an older shape
		// may still have a column the catalog has dropped since.
		spec.AsString = ce.AsString
		out[i] = pipeline.Entity{
			Mapping: e, KeySchemaID: keyID, ValueSchemaID: valueID,
			Spec: spec, Options: mappingOptions(cfg),
			Compatibility: level, OnTruncate: onTruncate,
		}
	}
	return out, nil
}

// keptNullable returns the columns that are NOT NULL in t but nullable in
// the subject's latest registered version: they stay nullable, or the new
// version would be incompatible for no reason.
func keptNullable(ctx context.Context, rcl *sr.Client, subject string, t *relation.Table) ([]string, error) {
	latest, err := rcl.SchemaByVersion(ctx, subject, -1)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && (re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrVersionNotFound.Code) {
			return nil, nil
		}
		return nil, fmt.Errorf("read latest schema of subject %q: %w", subject, err)
	}
	cols, err := mapping.NullableColumns(latest.Schema.Schema)
	if err != nil {
		return nil, fmt.Errorf("subject %q version %d: %w", subject, latest.Version, err)
	}
	var keep []string
	for _, name := range cols {
		if c, _, ok := t.Column(name); ok && !c.Nullable {
			keep = append(keep, name)
		}
	}
	return keep, nil
}

func startupRefused(i int, e *mapping.Entity, err error) error {
	var kc *registry.KeyChangeError
	if errors.As(err, &kc) {
		return fmt.Errorf("%s[%d] (%s): the table's key changed since its key schema was registered: %w", config.KeyEntities, i, e.Name(), err)
	}
	var inc *registry.IncompatibleError
	if errors.As(err, &inc) {
		return fmt.Errorf("entity %s: the table changed incompatibly since its schema was registered: %w. Once the topic's consumers can read the new shape, set %s[%d].compatibility: none (and the subject's compatibility in an external registry to NONE), restart, then set it back; or start the entity over on a new topic (docs/OPERATIONS.md, Incompatible schema changes)",
			e.Name(), err, config.KeyEntities, i)
	}
	return fmt.Errorf("entity %s: %w", e.Name(), err)
}

// gcPercent is the GC target configured at key (source.snapshot_gc_percent,
// a read model's rebuild_gc_percent), unless the operator set GOGC: the
// environment variable is their explicit choice for the whole process.
func gcPercent(key string, configured int, gogc string, log *slog.Logger) int {
	if gogc != "" && configured != 0 {
		log.Info("GOGC is set: "+key+" is left unused", "GOGC", gogc)
		return 0
	}
	return configured
}
