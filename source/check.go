package source

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/relation"
)

// CheckServer reports every server-side prerequisite that is not met, each
// saying how to fix it: wal_level, the role's REPLICATION attribute, free
// replication slots and WAL senders, and whether the publication can be
// created or already exists.
func CheckServer(ctx context.Context, conn *pgx.Conn, slot, publication string) []error {
	var problems []error
	var walLevel string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&walLevel); err != nil {
		return append(problems, fmt.Errorf("read wal_level: %w", err))
	}
	if walLevel != "logical" {
		problems = append(problems, fmt.Errorf("wal_level is %q, logical decoding needs 'logical': ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL", walLevel))
	}
	var role string
	var replication, super, canCreate bool
	err := conn.QueryRow(ctx, `
		SELECT current_user, r.rolreplication, r.rolsuper, has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &replication, &super, &canCreate)
	if err != nil {
		return append(problems, fmt.Errorf("read role attributes: %w", err))
	}
	if !replication && !super {
		problems = append(problems, fmt.Errorf("role %s lacks the REPLICATION attribute: ALTER ROLE %s REPLICATION", role, pgx.Identifier{role}.Sanitize()))
	}
	var pubExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).Scan(&pubExists); err != nil {
		return append(problems, fmt.Errorf("look up publication %s: %w", publication, err))
	}
	if !pubExists && !canCreate && !super {
		problems = append(problems, fmt.Errorf("publication %s does not exist and role %s may not create it: GRANT CREATE ON DATABASE to the role, or have the owner of the tables run CREATE PUBLICATION %s FOR TABLE ...", publication, role, publication))
	}
	slotInfo, err := lookupSlot(ctx, conn, slot)
	if err != nil {
		return append(problems, err)
	}
	if slotInfo.exists && slotInfo.plugin != "pgoutput" {
		problems = append(problems, fmt.Errorf("replication slot %s exists with plugin %s, not pgoutput: choose another source.slot", slot, slotInfo.plugin))
	}
	if slotInfo.exists && slotInfo.active {
		problems = append(problems, slotInUse(fmt.Errorf("replication slot %s is in use by another process", slot)))
	}
	if !slotInfo.exists {
		var maxSlots, used int
		var maxSlotsText string
		if err := conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots'), (SELECT count(*) FROM pg_replication_slots)`).Scan(&maxSlotsText, &used); err != nil {
			return append(problems, fmt.Errorf("read max_replication_slots: %w", err))
		}
		maxSlots, _ = strconv.Atoi(maxSlotsText)
		if used >= maxSlots {
			problems = append(problems, fmt.Errorf("all %d replication slots are in use: raise max_replication_slots (restart needed) or drop an unused slot", maxSlots))
		}
	}
	return problems
}

// CheckTable reports whether the role can read the table. The table's
// shape (key, types) is checked by the mapping.
func CheckTable(ctx context.Context, conn *pgx.Conn, t *relation.Table) []error {
	var canSelect bool
	ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege(to_regclass($1), 'SELECT')`, ident).Scan(&canSelect); err != nil {
		return []error{fmt.Errorf("table %s: check SELECT privilege: %w", ident, err)}
	}
	if !canSelect {
		return []error{fmt.Errorf("table %s: role lacks SELECT: GRANT SELECT ON %s TO the replicator role", ident, ident)}
	}
	return nil
}
