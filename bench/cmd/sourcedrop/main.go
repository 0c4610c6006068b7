// Command sourcedrop runs replicator's source ([source.Source]) with a
// handler that drops every change and acknowledges it at once: the WAL is
// read, parsed and decoded, and the LSN confirmed, exactly as `replicator
// run` does, but nothing is mapped to Avro or produced. The stream
// benchmarks time it on the same backlog as the bare reader and
// replicator, to tell the source's cost from mapping and produce.
//
// It streams an existing slot (source.snapshot never) until SIGTERM or
// SIGINT, logging "streaming" to stderr once replication has started (the
// source's own log line), then prints the number of changes it dropped as
// JSON on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sourcedrop:", err)
		os.Exit(1)
	}
}

// Result is what sourcedrop prints when it stops.
type Result struct {
	Rows int64 `json:"rows"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sourcedrop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg source.Config
	var tables, app string
	fs.StringVar(&cfg.URL, "url", "", "PostgreSQL connection URL")
	fs.StringVar(&cfg.Slot, "slot", "", "existing pgoutput replication slot")
	fs.StringVar(&cfg.Publication, "publication", "", "existing publication")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "the source's state directory")
	fs.StringVar(&tables, "tables", "", "comma-separated schema.table list: the entities")
	fs.StringVar(&app, "app", "sourcedrop", "application_name (how the benchmark finds the walsender)")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", 10*time.Second, "how often to confirm the LSN")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.URL == "" || cfg.Slot == "" || cfg.Publication == "" || cfg.StateDir == "" || tables == "" {
		return errors.New("-url, -slot, -publication, -state-dir and -tables are required")
	}
	// The source keeps an application_name given in the URL.
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return fmt.Errorf("-url: want a postgres:// URL (application_name is added to its query)")
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	cfg.URL = u.String()
	cfg.Snapshot = source.SnapshotNever
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))

	conn, err := source.Connect(ctx, cfg.URL)
	if err != nil {
		return err
	}
	var ts []relation.Table
	for _, name := range strings.Split(tables, ",") {
		schema, table, ok := strings.Cut(name, ".")
		if !ok {
			conn.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("-tables %q: want schema.table", name)
		}
		t, err := source.LoadTable(ctx, conn, schema, table)
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("load table %s: %w", name, err)
		}
		ts = append(ts, t)
	}
	if err := conn.Close(ctx); err != nil {
		return err
	}
	src, err := source.New(cfg, ts)
	if err != nil {
		return err
	}
	var h dropHandler
	if err := src.Run(ctx, &h); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(Result{Rows: h.rows.Load()})
}

// dropHandler acknowledges every change as it is handed over and keeps
// nothing but a count: everything after the source costs nothing.
type dropHandler struct {
	rows atomic.Int64
}

func (h *dropHandler) Handle(_ context.Context, c *source.Change) error {
	h.rows.Add(1)
	c.Ack.Done()
	return nil
}

// Flush has nothing to wait for: every change was acknowledged in Handle.
func (h *dropHandler) Flush(context.Context) error { return nil }
