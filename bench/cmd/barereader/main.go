// Command barereader runs [barereader.Run] as its own process, so that the
// benchmark measures its CPU time and memory the way it measures
// replicator's. It logs "streaming" to stderr once replication has started,
// reads until SIGTERM or SIGINT, then prints its [barereader.Result] as JSON
// on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/replicator/replicator/bench/barereader"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "barereader:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("barereader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg barereader.Config
	fs.StringVar(&cfg.URL, "url", "", "PostgreSQL connection URL")
	fs.StringVar(&cfg.Slot, "slot", "", "existing pgoutput replication slot")
	fs.StringVar(&cfg.Publication, "publication", "", "publication")
	fs.StringVar(&cfg.AppName, "app", "barereader", "application_name")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", 10*time.Second, "how often to confirm the LSN")
	fs.BoolVar(&cfg.Latency, "latency", false, "record commit→receive latency per row")
	fs.Int64Var(&cfg.LatencySkip, "latency-skip", 0, "leave the first n rows out of the latencies (warm-up)")
	fs.BoolVar(&cfg.Lean, "lean", false, "read as cheaply as possible: count row changes without parsing or decoding them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.URL == "" || cfg.Slot == "" || cfg.Publication == "" {
		return fmt.Errorf("-url, -slot and -publication are required")
	}
	cfg.Started = func() {
		fmt.Fprintf(stderr, "time=%s msg=streaming slot=%s\n", time.Now().UTC().Format(time.RFC3339Nano), cfg.Slot)
	}
	res, err := barereader.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}
