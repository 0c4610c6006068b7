package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/relation"
)

// CheckPrivileges reports each privilege the role lacks to replicate
// tables through publication, with the statement that grants it. The least
// a role needs is the REPLICATION attribute ([CheckServer]), USAGE on each
// table's schema and SELECT on each table ([CheckTable]); the publication
// is either created by an administrator beforehand, covering the tables, or
// created by the role itself, which PostgreSQL allows only with CREATE on
// the database and ownership of every table (no GRANT gives that).
func CheckPrivileges(ctx context.Context, conn *pgx.Conn, publication string, tables []relation.Table) []error {
	var role, database string
	var super, canCreate bool
	err := conn.QueryRow(ctx, `
		SELECT current_user, current_database(), r.rolsuper, has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &database, &super, &canCreate)
	if err != nil {
		return []error{fmt.Errorf("read role privileges: %w", err)}
	}
	if super {
		return nil
	}
	roleIdent := pgx.Identifier{role}.Sanitize()
	var problems []error
	var schemas []string
	for _, t := range tables {
		if !slices.Contains(schemas, t.Schema) {
			schemas = append(schemas, t.Schema)
		}
	}
	for _, s := range schemas {
		var usage bool
		err := conn.QueryRow(ctx, `SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = $1`, s).Scan(&usage)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // LoadTable reports a missing schema
		}
		if err != nil {
			return append(problems, fmt.Errorf("check USAGE on schema %s: %w", s, err))
		}
		if !usage {
			problems = append(problems, fmt.Errorf("role %s lacks USAGE on schema %s: GRANT USAGE ON SCHEMA %s TO %s", role, s, pgx.Identifier{s}.Sanitize(), roleIdent))
		}
	}

	// Which tables the role owns and which the publication covers.
	owned := map[string]bool{}
	for _, t := range tables {
		var own bool
		err := conn.QueryRow(ctx, `
			SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&own)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return append(problems, fmt.Errorf("check owner of table %s.%s: %w", t.Schema, t.Name, err))
		}
		owned[t.Schema+"."+t.Name] = own
	}
	idents := func(ts []relation.Table) string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		}
		return strings.Join(out, ", ")
	}
	notOwned := func(ts []relation.Table) []string {
		var out []string
		for _, t := range ts {
			if !owned[t.Schema+"."+t.Name] {
				out = append(out, t.Schema+"."+t.Name)
			}
		}
		return out
	}
	pubIdent := pgx.Identifier{publication}.Sanitize()
	var allTables, ownsPub bool
	err = conn.QueryRow(ctx, `SELECT puballtables, pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1`, publication).Scan(&allTables, &ownsPub)
	if errors.Is(err, pgx.ErrNoRows) {
		var why []string
		if !canCreate {
			why = append(why, fmt.Sprintf("CREATE on the database (GRANT CREATE ON DATABASE %s TO %s)", pgx.Identifier{database}.Sanitize(), roleIdent))
		}
		if others := notOwned(tables); len(others) > 0 {
			why = append(why, "ownership of "+strings.Join(others, ", ")+" (which no GRANT of privileges gives)")
		}
		if len(why) > 0 {
			problems = append(problems, fmt.Errorf("publication %s does not exist and role %s may not create it: that needs %s; or have an administrator create it: CREATE PUBLICATION %s FOR TABLE %s",
				publication, role, strings.Join(why, " and "), pubIdent, idents(tables)))
		}
		return problems
	}
	if err != nil {
		return append(problems, fmt.Errorf("look up publication %s: %w", publication, err))
	}
	if allTables {
		return problems
	}
	published := map[string]bool{}
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1`, publication)
	if err != nil {
		return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
	}
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
		}
		published[s+"."+n] = true
	}
	if err := rows.Err(); err != nil {
		return append(problems, fmt.Errorf("list tables of publication %s: %w", publication, err))
	}
	var missing []relation.Table
	for _, t := range tables {
		if !published[t.Schema+"."+t.Name] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 && (!ownsPub || len(notOwned(missing)) > 0) {
		problems = append(problems, fmt.Errorf("publication %s lacks table(s) %s and role %s may not add them (that needs ownership of the publication and of the tables): have an administrator run ALTER PUBLICATION %s ADD TABLE %s",
			publication, idents(missing), role, pubIdent, idents(missing)))
	}
	return problems
}
