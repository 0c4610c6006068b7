// Command replicator streams PostgreSQL tables into compacted Kafka entity
// topics. This package is the composition root: it parses flags, loads the
// config and wires the components; the logic lives in the packages it
// imports.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/config"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var exit exitError
		if !errors.As(err, &exit) {
			fmt.Fprintln(os.Stderr, "replicator:", err)
		}
		os.Exit(1)
	}
}

// exitError is a failure already reported to the user (check's list of
// problems): main exits non-zero without printing it again.
type exitError struct{ msg string }

func (e exitError) Error() string { return e.msg }

// run executes the command line args. It returns nil on success and on a
// clean stop by signal.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "replicator",
		Short:         "Stream PostgreSQL tables into compacted Kafka entity topics",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       currentVersion().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("config", "", "path to replicator.yaml (env REPLICATOR_* and flags override it)")
	config.AddFlags(root.PersistentFlags())

	load := func(cmd *cobra.Command) (*config.Config, *slog.Logger, error) {
		path, _ := cmd.Flags().GetString("config")
		cfg, err := config.Load(path, cmd.Flags())
		if err != nil {
			return nil, nil, fmt.Errorf("invalid configuration:\n%w", err)
		}
		return cfg, newLogger(stderr, cfg.Log), nil
	}

	runCmd := &cobra.Command{
		Use:   "run",
		Short: "Stream PostgreSQL changes to entity topics (daemon)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			return reportFatal(cfg.Log, log, runObserved(cmd.Context(), cfg, log, terminal(stderr), nil))
		},
	}
	root.AddCommand(
		withProfile(runCmd),
		&cobra.Command{
			Use:   "check",
			Short: "Validate the config and the PostgreSQL and Kafka prerequisites",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				path, _ := cmd.Flags().GetString("config")
				return runCheck(cmd.Context(), path, cmd.Flags(), stdout)
			},
		},
		&cobra.Command{
			Use:   "schema",
			Short: "Print the Avro key and value schemas each entity would register",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, _, err := load(cmd)
				if err != nil {
					return err
				}
				return runSchema(cmd.Context(), cfg, stdout)
			},
		},
		withProfile(newSinkCommand(stderr)),
		withProfile(newRebuildCommand(stderr)),
		newDemoCommand(stdout, stderr),
		newVersionCommand(stdout),
		newStatusCommand(stdout),
		newRepublishCommand(stdout),
	)
	err := root.ExecuteContext(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// reportFatal logs the error that ends a long-running command when the log
// is JSON, so that every line the process writes is JSON, and returns it as
// already reported; in text format main prints it as before.
func reportFatal(c config.LogConfig, log *slog.Logger, err error) error {
	if err == nil || c.Format != "json" || errors.Is(err, context.Canceled) {
		return err
	}
	log.Error("replicator stopped", "error", err.Error())
	return exitError{msg: err.Error()}
}

func newLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: lsnAsText}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// lsnAsText prints every LSN in PostgreSQL's X/Y form: the text handler
// would (LSN is a Stringer), the JSON handler would print the number.
func lsnAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindAny {
		if lsn, ok := a.Value.Any().(pglogrepl.LSN); ok {
			a.Value = slog.StringValue(lsn.String())
		}
	}
	return a
}

// terminal returns w when it is a terminal (a character device), for
// progress bars; nil otherwise, and then progress goes to the log.
func terminal(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}
