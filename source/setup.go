package source

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
)

// ensurePublication creates the publication for exactly the configured
// tables, or adds the configured tables an existing publication lacks
// once it is known not to lose their changes ([CheckPublication]).
// Tables it holds beyond ours are left alone (their changes are skipped).
// A role without CREATE on the database can still run when a DBA has
// created the publication beforehand.
func ensurePublication(ctx context.Context, conn *pgx.Conn, name string, tables []relation.Table) (created bool, err error) {
	var allTables bool
	err = conn.QueryRow(ctx, `SELECT puballtables FROM pg_publication WHERE pubname = $1`, name).Scan(&allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		idents := make([]string, len(tables))
		for i, t := range tables {
			idents[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		}
		sql := fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s`, pgx.Identifier{name}.Sanitize(), strings.Join(idents, ", "))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return false, fmt.Errorf("create publication %s: %w%s", name, err, privilegeHint(err, "CREATE on the database (or have a DBA run: "+sql+")"))
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up publication %s: %w", name, err)
	}
	// Refused before anything is added to it: a publication that would
	// lose changes is an operator's decision to undo, not ours.
	if err := errors.Join(CheckPublication(ctx, conn, name, tables)...); err != nil {
		return false, err
	}
	if allTables {
		return false, nil
	}
	have := map[string]bool{}
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1`, name)
	if err != nil {
		return false, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return false, fmt.Errorf("list tables of publication %s: %w", name, err)
		}
		have[s+"."+t] = true
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	var missing []string
	for _, t := range tables {
		if !have[t.Schema+"."+t.Name] {
			missing = append(missing, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	sort.Strings(missing)
	sql := fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE %s`, pgx.Identifier{name}.Sanitize(), strings.Join(missing, ", "))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return false, fmt.Errorf("add %s to publication %s: %w%s", strings.Join(missing, ", "), name, err, privilegeHint(err, "ownership of the publication (or have a DBA run: "+sql+")"))
	}
	return false, nil
}

func privilegeHint(err error, need string) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return " (the role needs " + need + ")"
	}
	return ""
}

// slotInfo is what pg_replication_slots says about our slot.
type slotInfo struct {
	exists    bool
	plugin    string
	database  string
	active    bool
	confirmed pglogrepl.LSN
}

func lookupSlot(ctx context.Context, conn *pgx.Conn, name string) (slotInfo, error) {
	var s slotInfo
	var confirmed *string
	var db *string
	err := conn.QueryRow(ctx, `
		SELECT plugin, database, active, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'`, name).
		Scan(&s.plugin, &db, &s.active, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("look up replication slot %s: %w", name, err)
	}
	s.exists = true
	if db != nil {
		s.database = *db
	}
	if confirmed != nil {
		if s.confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, fmt.Errorf("slot %s confirmed_flush_lsn %q: %w", name, *confirmed, err)
		}
	}
	return s, nil
}

// createSlot creates the logical slot on the replication connection. With
// exportSnapshot, the returned snapshot name stays valid only until the next
// command on repl, so the caller reads the snapshot on another connection
// before it starts replication.
func createSlot(ctx context.Context, repl *pgconn.PgConn, name string, exportSnapshot bool) (pglogrepl.CreateReplicationSlotResult, error) {
	action := "NOEXPORT_SNAPSHOT"
	if exportSnapshot {
		action = "EXPORT_SNAPSHOT"
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
	if err != nil {
		return res, fmt.Errorf("create replication slot %s: %w%s", name, err, privilegeHint(err, "the REPLICATION attribute: ALTER ROLE name REPLICATION"))
	}
	return res, nil
}

func dropSlot(ctx context.Context, repl *pgconn.PgConn, name string) error {
	if err := pglogrepl.DropReplicationSlot(ctx, repl, name, pglogrepl.DropReplicationSlotOptions{Wait: true}); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", name, err)
	}
	return nil
}
