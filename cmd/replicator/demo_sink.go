package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the demo computes the projections on the source
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/pgcluster"
	_ "modernc.org/sqlite" // the demo reads its SQLite read model back
)

// demoStore is the demo's SQLite read-model file.
func demoStore(dataDir string) string {
	return "sqlite://" + filepath.Join(dataDir, "read.db")
}

// demoProjections are, per read model, the SQL on the source tables that
// the read model must equal, and the same columns in the read model.
var demoProjections = []struct {
	table, source, read string
}{
	{"orders_read",
		`SELECT id::text || '|' || customer_id || '|' || to_char(total, 'FM999999990.00') || '|' || status FROM orders`,
		`SELECT id || '|' || customer_id || '|' || total || '|' || status FROM orders_read`},
	{"customer_profile",
		`SELECT c.id::text || '|' || c.name || '|' || coalesce(c.email, 'NULL') || '|' || coalesce(l.points::text, 'NULL') FROM customers c LEFT JOIN loyalty_accounts l ON l.customer_id = c.id`,
		`SELECT customer_id || '|' || name || '|' || coalesce(email, 'NULL') || '|' || coalesce(points, 'NULL') FROM customer_profile`},
}

// demoSink runs `replicator sink` in-process into the SQLite read models
// until they equal their projections of the source tables, then prints
// them.
func demoSink(ctx context.Context, cfg *config.Config, ep endpoints, pg *pgcluster.Cluster, log *slog.Logger, out io.Writer) error {
	// The broker and registry as they listen (the configured addresses
	// may have port 0).
	scfg := *cfg
	scfg.Kafka.Brokers, scfg.Registry.URL = ep.Brokers, ep.RegistryURL
	cfg = &scfg
	fmt.Fprintln(out, "==> starting the sink: read models orders_read and customer_profile (customers + loyalty_accounts by partial writes) in SQLite")
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- runSinks(sctx, cfg, log, nil, false) }()
	finish := func() error {
		stop()
		return <-done
	}

	db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(demoStore(cfg.DataDir), "sqlite://")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return errors.Join(err, finish())
	}
	defer db.Close()
	src, err := sql.Open("pgx", pg.DSN("postgres"))
	if err != nil {
		return errors.Join(err, finish())
	}
	defer src.Close()
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range demoProjections {
		want, err := demoRows(ctx, src, p.source)
		if err != nil {
			return errors.Join(fmt.Errorf("project %s from the source: %w", p.table, err), finish())
		}
		for {
			got, err := demoRows(ctx, db, p.read)
			if err == nil && strings.Join(got, "\n") == strings.Join(want, "\n") {
				fmt.Fprintf(out, "    %s: %d rows, equal to the source tables' projection\n", p.table, len(got))
				break
			}
			if time.Now().After(deadline) {
				return errors.Join(fmt.Errorf("read model %s did not match its projection within 60s (%d rows, want %d; last error %v)", p.table, len(got), len(want), err), finish())
			}
			select {
			case err := <-done:
				return fmt.Errorf("the sink stopped: %w", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err := finish(); err != nil {
		return err
	}
	fmt.Fprintf(out, "--- read model customer_profile (%s), first rows:\n", demoStore(cfg.DataDir))
	rows, err := demoRows(ctx, db, `SELECT customer_id || ' | ' || name || ' | ' || coalesce(email, 'NULL') || ' | points=' || coalesce(points, 'NULL') FROM customer_profile ORDER BY customer_id LIMIT 6`)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "    customer_id | name | email | points")
	for _, r := range rows {
		fmt.Fprintf(out, "    %s\n", r)
	}
	return nil
}

func demoRows(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if !strings.Contains(query, "ORDER BY") {
		sort.Strings(out)
	}
	return out, rows.Err()
}
