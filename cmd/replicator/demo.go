package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/source"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

// demoSchema is the sample database: three related tables covering the
// common types (numeric, arrays, enum, jsonb, timestamptz).
const demoSchema = `
CREATE TYPE order_status AS ENUM ('placed', 'paid', 'shipped', 'cancelled');
CREATE TABLE customers (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text,
	tags       text[],
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
	id          bigint PRIMARY KEY,
	customer_id bigint NOT NULL REFERENCES customers (id),
	total       numeric(12,2) NOT NULL,
	status      order_status NOT NULL DEFAULT 'placed',
	details     jsonb,
	placed_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (id, name, email, tags)
	SELECT g, 'customer ' || g, 'c' || g || '@example.com', ARRAY['demo', 'batch-' || (g % 3)]
	FROM generate_series(1, 50) g;
INSERT INTO orders (id, customer_id, total, details)
	SELECT g, 1 + g % 50, round((g * 7.31)::numeric, 2), jsonb_build_object('items', g % 5 + 1)
	FROM generate_series(1, 200) g;
-- One loyalty account per customer at most, keyed by its own id: the
-- customer_profile read model joins it to customers by partial writes.
CREATE TABLE loyalty_accounts (
	account_id  bigint PRIMARY KEY,
	customer_id bigint NOT NULL UNIQUE,
	points      bigint NOT NULL
);
INSERT INTO loyalty_accounts SELECT 1000 + g, g * 2, g * 10 FROM generate_series(1, 25) g;
`

// demoChanges run while the replicator streams: inserts, updates, deletes
// and a primary-key change, each in its own transaction.
var demoChanges = []string{
	`INSERT INTO customers (id, name, email) SELECT g, 'late customer ' || g, NULL FROM generate_series(51, 60) g`,
	`UPDATE customers SET email = 'vip' || id || '@example.com', tags = ARRAY['vip'] WHERE id <= 5`,
	`UPDATE orders SET status = 'paid' WHERE id % 4 = 0`,
	`INSERT INTO orders (id, customer_id, total, status) VALUES (201, 51, 99.99, 'placed'), (202, 52, 0.01, 'placed')`,
	`DELETE FROM orders WHERE id IN (3, 7, 11)`,
	`UPDATE orders SET id = 1003 WHERE id = 13`,
	`UPDATE orders SET status = 'shipped' WHERE id = 1003`,
	`INSERT INTO loyalty_accounts VALUES (2001, 57, 5)`,
	`UPDATE loyalty_accounts SET points = points + 100 WHERE customer_id <= 10`,
	`DELETE FROM loyalty_accounts WHERE account_id = 1003`,
}

func newDemoCommand(stdout, stderr io.Writer) *cobra.Command {
	var keep bool
	var kafkaListen, registryListen string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run everything locally: a throwaway PostgreSQL, the embedded broker and registry, sample writes, the sink",
		Long: `demo starts a throwaway PostgreSQL cluster from this machine's PostgreSQL
binaries, the embedded Kafka broker and schema registry, creates three sample
tables with rows (customers, orders, loyalty_accounts), starts the replicator,
writes inserts, updates, deletes and a primary-key change, and shows what
landed on the topics. It then runs the sink into two SQLite read models
(read.db in its data directory): orders_read, and customer_profile, which
joins customers and loyalty_accounts by partial writes; it waits until each
equals its projection computed on the source tables, and prints the first
rows of customer_profile. Nothing but PostgreSQL needs to be installed. It removes everything it
created when it ends (after the summary, or on Ctrl-C with --keep-running).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The global flags configure run, sink and the others; demo
			// builds its own config, so one given here would be ignored.
			var given []string
			cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) {
				if f.Changed {
					given = append(given, "--"+f.Name)
				}
			})
			if len(given) > 0 {
				return fmt.Errorf("demo runs on a throwaway cluster with embedded defaults and takes no %s: use `replicator run --config F` for your own setup", strings.Join(given, ", "))
			}
			return runDemo(cmd.Context(), demoOptions{keep: keep, kafkaListen: kafkaListen, registryListen: registryListen}, stdout, stderr)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-running", false, "keep streaming after the summary until interrupted (connect any Kafka client to the broker)")
	cmd.Flags().StringVar(&kafkaListen, "kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker")
	cmd.Flags().StringVar(&registryListen, "registry-listen", "127.0.0.1:8081", "address of the embedded schema registry")
	return cmd
}

type demoOptions struct {
	keep                        bool
	kafkaListen, registryListen string
}

func runDemo(ctx context.Context, opts demoOptions, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Fprintln(stdout, "==> starting a throwaway PostgreSQL cluster")
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return fmt.Errorf("demo needs PostgreSQL server binaries: %w", err)
	}
	defer pg.Close()
	fmt.Fprintf(stdout, "    PostgreSQL %d on 127.0.0.1:%d (data in %s)\n", pg.Version()/10000, pg.Port(), pg.Dir())
	if err := pg.Exec(ctx, demoSchema); err != nil {
		return fmt.Errorf("create demo tables: %w", err)
	}
	fmt.Fprintln(stdout, "    created tables customers (50 rows), orders (200 rows) and loyalty_accounts (25 rows)")

	dataDir, err := os.MkdirTemp("", "replicator-demo-*")
	if err != nil {
		return fmt.Errorf("demo data dir: %w", err)
	}
	defer os.RemoveAll(dataDir)
	cfg, err := demoConfig(dataDir, pg.DSN("postgres"), opts)
	if err != nil {
		return err
	}

	runCtx, stopReplicator := context.WithCancel(ctx)
	defer stopReplicator()
	g, gctx := errgroup.WithContext(runCtx)
	readyCh := make(chan endpoints, 1)
	fmt.Fprintln(stdout, "==> starting replicator (embedded Kafka broker and schema registry)")
	g.Go(func() error {
		return runObserved(gctx, cfg, log, nil, func(e endpoints) { readyCh <- e })
	})
	var ep endpoints
	select {
	case ep = <-readyCh:
	case <-gctx.Done():
		return demoError(g, ctx)
	}
	fmt.Fprintf(stdout, "    broker %s, registry %s\n", strings.Join(ep.Brokers, ","), ep.RegistryURL)

	if err := waitSlot(gctx, cfg); err != nil {
		return errors.Join(err, demoError(g, ctx))
	}
	fmt.Fprintln(stdout, "==> slot created, existing rows published from its snapshot; writing changes while it streams")
	for _, sql := range demoChanges {
		if err := pg.Exec(ctx, sql); err != nil {
			return fmt.Errorf("demo write %q: %w", sql, err)
		}
		fmt.Fprintf(stdout, "    %s\n", sql)
	}
	if err := waitConfirmed(gctx, cfg); err != nil {
		return errors.Join(err, demoError(g, ctx))
	}
	fmt.Fprintln(stdout, "==> every change is acknowledged by the broker and confirmed to PostgreSQL")
	if err := showTopics(ctx, ep, stdout); err != nil {
		return err
	}
	if err := demoSink(gctx, cfg, ep, pg, log, stdout); err != nil {
		return errors.Join(err, demoError(g, ctx))
	}
	if opts.keep {
		fmt.Fprintf(stdout, "==> still streaming; write to postgres://postgres@127.0.0.1:%d/postgres, read topics from %s; Ctrl-C to stop\n", pg.Port(), strings.Join(ep.Brokers, ","))
		<-ctx.Done()
	}
	stopReplicator()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Fprintln(stdout, "==> done; the throwaway cluster and data directory are removed")
	return nil
}

// demoError returns why the replicator stopped early.
func demoError(g *errgroup.Group, ctx context.Context) error {
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func demoConfig(dataDir, dsn string, opts demoOptions) (*config.Config, error) {
	yaml := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  status_interval: 200ms
kafka:
  listen: %q
  partitions: 3
registry:
  listen: %q
entities:
  - table: public.customers
  - table: public.orders
  - table: public.loyalty_accounts
read_models:
  - name: orders_read
    store: %q
    key: id
    sources:
      - entity: orders
        key: id
        columns: {customer_id: customer_id, total: total, status: status}
  - name: customer_profile
    store: %q
    key: customer_id
    sources:
      - entity: customers
        key: id
        owner: true
        columns: {customer_id: id, name: name, email: email}
      - entity: loyalty_accounts
        key: customer_id
        columns: {points: points}
`, dataDir, dsn, opts.kafkaListen, opts.registryListen, demoStore(dataDir), demoStore(dataDir))
	path := dataDir + "/replicator.yaml"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("write demo config: %w", err)
	}
	return config.Load(path, nil)
}

// waitSlot polls until the replication slot exists and has found its
// consistent point (confirmed_flush_lsn is set then; the slot is listed
// before): changes committed after that arrive through the stream rather
// than the snapshot.
func waitSlot(ctx context.Context, cfg *config.Config) error {
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL`, cfg.Source.Slot).Scan(&n); err != nil {
			return fmt.Errorf("look up slot: %w", err)
		}
		if n > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication slot %s not created within 60s", cfg.Source.Slot)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitConfirmed polls until the slot's confirmed LSN reaches the WAL
// position of the last demo write.
func waitConfirmed(ctx context.Context, cfg *config.Config) error {
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var target pglogrepl.LSN
	var text string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		return fmt.Errorf("read WAL position: %w", err)
	}
	if target, err = pglogrepl.ParseLSN(text); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var confirmed *string
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Source.Slot).Scan(&confirmed)
		if err == nil && confirmed != nil {
			if lsn, err := pglogrepl.ParseLSN(*confirmed); err == nil && lsn >= target {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication did not catch up with %s within 60s", target)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
