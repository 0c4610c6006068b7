package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/relation"
)

// CheckServer reports every server-side prerequisite that is not met, each
// saying how to fix it: wal_level, the role's REPLICATION attribute, free
// replication slots and WAL senders. Privileges on the tables and the
// publication are [CheckPrivileges]'s.
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
	var replication, super bool
	err := conn.QueryRow(ctx, `
		SELECT current_user, r.rolreplication, r.rolsuper
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &replication, &super)
	if err != nil {
		return append(problems, fmt.Errorf("read role attributes: %w", err))
	}
	if !replication && !super {
		problems = append(problems, fmt.Errorf("role %s lacks the REPLICATION attribute: ALTER ROLE %s REPLICATION", role, pgx.Identifier{role}.Sanitize()))
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
	var role string
	ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	// By name through the catalog: to_regclass needs USAGE on the schema,
	// which CheckPrivileges reports on its own.
	err := conn.QueryRow(ctx, `
		SELECT has_table_privilege(c.oid, 'SELECT'), current_user FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&canSelect, &role)
	if errors.Is(err, pgx.ErrNoRows) {
		return []error{fmt.Errorf("table %s does not exist", ident)}
	}
	if err != nil {
		return []error{fmt.Errorf("table %s: check SELECT privilege: %w", ident, err)}
	}
	if !canSelect {
		return []error{fmt.Errorf("table %s: role %s lacks SELECT: GRANT SELECT ON %s TO %s", ident, role, ident, pgx.Identifier{role}.Sanitize())}
	}
	return nil
}

// publishedActions are the changes a publication must publish: without
// one of them, changes of that kind never reach the topic and it silently
// drifts from the table (a DELETE that is not published leaves the row's
// record live forever).
var publishedActions = []string{"insert", "update", "delete", "truncate"}

// CheckPublication reports why an existing publication would lose changes
// of the configured tables: actions it does not publish and, on PostgreSQL
// 15 or later, a row filter or a column list on one of the tables. Each
// problem names the publication (and table) and says how to fix it. A
// publication that does not exist yet is no problem: it is created for
// the tables, publishing everything.
func CheckPublication(ctx context.Context, conn *pgx.Conn, publication string, tables []relation.Table) []error {
	var flags [4]bool
	err := conn.QueryRow(ctx, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1`, publication).
		Scan(&flags[0], &flags[1], &flags[2], &flags[3])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("look up publication %s: %w", publication, err)}
	}
	var problems []error
	var missing []string
	for i, published := range flags {
		if !published {
			missing = append(missing, publishedActions[i])
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Errorf("publication %s does not publish %s: those changes would never reach the topics; ALTER PUBLICATION %s SET (publish = '%s')",
			publication, strings.Join(missing, ", "), pgx.Identifier{publication}.Sanitize(), strings.Join(publishedActions, ", ")))
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return append(problems, fmt.Errorf("read server_version_num: %w", err))
	}
	if version < 150000 {
		return problems // no row filters or column lists before 15
	}
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename, rowfilter, attnames FROM pg_publication_tables WHERE pubname = $1`, publication)
	if err != nil {
		return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
	}
	type published struct {
		filter  *string
		columns []string
	}
	have := map[string]published{}
	for rows.Next() {
		var schema, name string
		var p published
		if err := rows.Scan(&schema, &name, &p.filter, &p.columns); err != nil {
			return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
		}
		have[schema+"."+name] = p
	}
	if err := rows.Err(); err != nil {
		return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
	}
	for i := range tables {
		t := &tables[i]
		p, ok := have[t.Schema+"."+t.Name]
		if !ok {
			continue // added by the source with neither
		}
		// Dropped and added back in one transaction, so that no change
		// commits while the table is out of the publication.
		readd := fmt.Sprintf("BEGIN; ALTER PUBLICATION %[1]s DROP TABLE %[2]s; ALTER PUBLICATION %[1]s ADD TABLE %[2]s; COMMIT;",
			pgx.Identifier{publication}.Sanitize(), pgx.Identifier{t.Schema, t.Name}.Sanitize())
		if p.filter != nil {
			problems = append(problems, fmt.Errorf("publication %s filters the rows of table %s (WHERE %s): the topics would miss the other rows, and the snapshot would disagree with the stream; publish the whole table (%s) or use another source.publication",
				publication, t.QualifiedName(), *p.filter, readd))
		}
		var left []string
		for _, c := range t.Columns {
			if !slices.Contains(p.columns, c.Name) {
				left = append(left, c.Name)
			}
		}
		if len(left) > 0 {
			problems = append(problems, fmt.Errorf("publication %s leaves column(s) %s of table %s out of its column list, and every record carries the whole row; publish every column (%s) or use another source.publication",
				publication, strings.Join(left, ", "), t.QualifiedName(), readd))
		}
	}
	return problems
}
