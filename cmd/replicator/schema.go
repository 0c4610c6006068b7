package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/source"
)

// runSchema is `replicator schema`: the Avro schemas each entity would
// register, read from the live catalog. It needs PostgreSQL only.
func runSchema(ctx context.Context, cfg *config.Config, out io.Writer) error {
	// Bounded as check bounds it: a server that accepts the connection
	// and never answers would otherwise hold schema forever.
	cctx, cancel := context.WithTimeout(ctx, checkConnectTimeout)
	conn, err := source.Connect(cctx, cfg.Source.URL)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tables, entities, notes, err := loadEntities(ctx, cfg, conn)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(out, "# note: %s\n\n", n)
	}
	for i, e := range entities {
		for _, s := range []struct{ subject, schema string }{
			{e.KeySubject(), e.KeySchema()},
			{e.ValueSubject(), e.ValueSchema()},
		} {
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, []byte(s.schema), "", "  "); err != nil {
				return fmt.Errorf("format schema of %s: %w", s.subject, err)
			}
			fmt.Fprintf(out, "# subject %s (entity %s, table %s)\n%s\n\n", s.subject, e.Name(), tables[i].QualifiedName(), pretty.String())
		}
	}
	return nil
}
