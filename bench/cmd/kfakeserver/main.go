// Command kfakeserver runs replicator's embedded Kafka-protocol broker
// ([broker.StartEmbedded]) as a process of its own, for benchmarks that
// measure replicator against a broker it does not share a process with.
// It logs "listening" to stderr once it accepts connections and stops
// cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/replicator/replicator/broker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakeserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("kfakeserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg broker.EmbeddedConfig
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "address to listen on (loopback)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "persist topics here (empty: in memory)")
	fs.DurationVar(&cfg.CompactionInterval, "compaction-interval", broker.DefaultCompactionInterval, "how often compacted topics are checked for a compaction pass")
	fs.Int64Var(&cfg.CompactionMinDirtyBytes, "compaction-min-dirty", broker.DefaultCompactionMinDirtyBytes, "growth of the compacted topics that makes a pass due (the soak may lower it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.CompactionMinDirtyBytes <= 0 {
		return fmt.Errorf("-compaction-min-dirty %d: want a positive number of bytes", cfg.CompactionMinDirtyBytes)
	}
	// Info and above: the compaction passes ("compacted its topics", with
	// their duration), which the soak reads back; kfake's chatter is debug.
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	b, err := broker.StartEmbedded(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stderr, "msg=listening addr=%s\n", b.Addr())
	<-ctx.Done()
	return nil
}
