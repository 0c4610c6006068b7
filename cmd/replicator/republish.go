package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
	"github.com/spf13/cobra"
)

func newRepublishCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "republish",
		Short: "Publish every current row of entities again while replicator run streams",
		Long: `republish asks the replicator streaming the configured slot to publish every
current row of the given entities again (op r, with a republish header), in
key-ordered chunks, without stopping the stream and without an older state ever
landing after a newer one (docs/OPERATIONS.md, "Republish").

The request is a message written to PostgreSQL's WAL: a running replicator acts
on it within moments, a stopped one when it starts. Progress is in its log and
state file; a crash continues from the last completed chunk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(path, cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			var req republishRequest
			req.entities, _ = cmd.Flags().GetStringArray("entity")
			req.all, _ = cmd.Flags().GetBool("all")
			req.cancel, _ = cmd.Flags().GetBool("cancel")
			req.id, _ = cmd.Flags().GetString("id")
			req.opts.Rate, _ = cmd.Flags().GetInt("rate")
			req.opts.ChunkRows, _ = cmd.Flags().GetInt("chunk-rows")
			req.opts.Reconcile, _ = cmd.Flags().GetBool("reconcile")
			return runRepublish(cmd.Context(), cfg, req, stdout)
		},
	}
	cmd.Flags().StringArray("entity", nil, "entity name to republish (repeatable)")
	cmd.Flags().Bool("all", false, "republish every configured entity")
	cmd.Flags().Bool("cancel", false, "cancel the republish --id, or every one")
	cmd.Flags().String("id", "", "with --cancel: the republish to cancel (as printed when requested)")
	cmd.Flags().Int("rate", 0, "at most this many rows per second, chunks of at most as many rows (0: as fast as Kafka takes them)")
	cmd.Flags().Bool("reconcile", false, "also tombstone keys live on the topic but absent from the table (after a lost slot, a manual produce)")
	cmd.Flags().Int("chunk-rows", 0, fmt.Sprintf("rows per chunk, at most %d (default: as many as make about %d MB of rows, at most 10,000)", source.MaxRepublishChunkRows, source.RepublishChunkBytes>>20))
	return cmd
}

type republishRequest struct {
	entities []string
	all      bool
	cancel   bool
	id       string
	opts     source.RepublishOptions
}

func runRepublish(ctx context.Context, cfg *config.Config, req republishRequest, out io.Writer) error {
	n := 0
	for _, set := range []bool{len(req.entities) > 0, req.all, req.cancel} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("republish: give --entity NAME (repeatable), --all or --cancel")
	}
	if req.cancel {
		// A cancel carries no options: they would be taken and ignored.
		for _, o := range []struct {
			flag string
			set  bool
		}{{"--reconcile", req.opts.Reconcile}, {"--rate", req.opts.Rate != 0}, {"--chunk-rows", req.opts.ChunkRows != 0}} {
			if o.set {
				return fmt.Errorf("republish: %s goes with --entity or --all, not --cancel", o.flag)
			}
		}
	}
	if req.id != "" && !req.cancel {
		return errors.New("republish: --id goes with --cancel")
	}
	if err := req.opts.Validate(); err != nil {
		return fmt.Errorf("republish: %w", err)
	}
	var tables []string
	if !req.cancel {
		var err error
		if tables, err = republishTables(cfg, req.entities, req.all); err != nil {
			return err
		}
	}
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return fmt.Errorf("republish: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if req.cancel {
		if err := source.CancelRepublish(ctx, conn, cfg.Source.Slot, req.id); err != nil {
			return err
		}
		what := "every republish"
		if req.id != "" {
			what = "republish " + req.id
		}
		fmt.Fprintf(out, "cancel of %s requested on slot %s\n", what, cfg.Source.Slot)
		return nil
	}
	id, err := source.RequestRepublish(ctx, conn, cfg.Source.Slot, tables, req.opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "republish %s requested on slot %s: %s\n", id, cfg.Source.Slot, strings.Join(tables, ", "))
	fmt.Fprintf(out, "the replicator streaming the slot runs it (now, or when it next starts); cancel with: replicator republish --cancel --id %s\n", id)
	return nil
}

// republishTables maps entity names to their tables' qualified names, as
// the source names them.
func republishTables(cfg *config.Config, names []string, all bool) ([]string, error) {
	var tables, known []string
	byName := map[string]string{}
	for i, e := range cfg.Entities {
		schema, name, err := relation.ParseQualifiedName(e.Table)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].table: %w", config.KeyEntities, i, err)
		}
		t := relation.Table{Schema: schema, Name: name}
		byName[e.Name] = t.QualifiedName()
		known = append(known, e.Name)
		if all {
			tables = append(tables, t.QualifiedName())
		}
	}
	for _, n := range names {
		t, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("republish: no entity named %q in the configuration (entities: %s)", n, strings.Join(known, ", "))
		}
		if !slices.Contains(tables, t) {
			tables = append(tables, t)
		}
	}
	if len(tables) == 0 {
		return nil, errors.New("republish: no entity is configured")
	}
	return tables, nil
}
