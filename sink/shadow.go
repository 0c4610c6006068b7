package sink

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// The table a rebuild builds beside the live one (the shadow) is swapped
// in for it: whatever the live table has that the shadow lacks is gone
// after the swap. A user may have added to the table the sink created, or
// created it (docs/OPERATIONS.md, "Your own table"): extra columns,
// indexes for the queries it serves, grants. So when the live table
// exists the shadow is created from it, not from the schemas, and the
// columns the read model needs that it lacks (a column added to the
// config, the reason for many a rebuild) are added. The columns the read
// model writes get the types it wants now where the live ones differ (a
// changed `type:`, a field widened in the schemas: retype.go), while the
// shadow is still empty. What cannot be carried
// over is said before anything is built: refused when it would break the
// swap or what depends on the table (a view, another table's foreign
// key), warned about otherwise (triggers; see each store below).

// createShadow creates p's table (the shadow) from the live table when
// live exists, gives the columns of p it has the type p wants now where
// the live one is another (retypes: the shadow is empty, so this is when
// a changed type takes effect), and adds the columns of p it lacks;
// created is false when live does not exist (the shadow is then created
// from the schemas, as any new table). retyped are the columns whose type
// changed, and warnings what the shadow does not keep of the live table,
// for the log.
func (s *store) createShadow(ctx context.Context, p *plan, live string) (created bool, retyped []retype, warnings []string, err error) {
	have, err := s.d.columns(ctx, s.db, live)
	if err != nil {
		return false, nil, nil, fmt.Errorf("read the columns of table %s: %w", s.d.quote(live), err)
	}
	if have == nil {
		return false, nil, nil, nil
	}
	desc, err := s.d.describe(ctx, s.db, live)
	if err != nil {
		return false, nil, nil, fmt.Errorf("read the columns and keys of table %s: %w", s.d.quote(live), err)
	}
	if desc != nil {
		if retyped, err = s.retypes(ctx, p, desc); err != nil {
			return false, nil, nil, fmt.Errorf("table %s: %w", s.d.quote(live), err)
		}
	}
	shadow := p.model.Table
	switch s.d.(type) {
	case postgresDialect:
		warnings, err = s.shadowPostgres(ctx, live, shadow)
	case mysqlDialect:
		warnings, err = s.shadowMySQL(ctx, live, shadow)
	case sqliteDialect:
		warnings, err = s.shadowSQLite(ctx, live, shadow, retyped)
	default:
		return false, nil, nil, fmt.Errorf("create table %s like %s: no way known for store %s", s.d.quote(shadow), s.d.quote(live), s.d.name())
	}
	if err == nil && len(retyped) > 0 {
		if _, ok := s.d.(sqliteDialect); !ok {
			err = s.shadowRetype(ctx, shadow, retyped)
		}
	}
	if err != nil {
		return false, nil, nil, fmt.Errorf("rebuild table %s as table %s is: %w", s.d.quote(shadow), s.d.quote(live), err)
	}
	got := map[string]bool{}
	for _, c := range have {
		got[c] = true
	}
	for _, c := range p.columns {
		// A key column the live table lacks is not added: the table's
		// key is then another, which the fit check reports.
		if got[c.name] || c.source < 0 {
			continue
		}
		typ := c.override
		if typ == "" {
			typ = s.d.sqlType(c.typ, false)
		}
		q := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", s.d.quote(shadow), s.d.quote(c.name), typ)
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return false, nil, nil, fmt.Errorf("add column %s, which table %s lacks, to the rebuilt table: %s: %w", s.d.quote(c.name), s.d.quote(live), q, err)
		}
	}
	return true, retyped, warnings, nil
}

// dependents is the refusal of a rebuild whose swap would break objects
// that depend on the live table.
// names are what depends, each with its kind ("view v").
func dependents(d dialect, live string, names []string) error {
	return fmt.Errorf("table %s: %s depend(s) on it, and a rebuild replaces the table with a new one (the old one is dropped at the swap, at its end): drop them, rebuild, and create them again on the new table",
		d.quote(live), strings.Join(names, ", "))
}

// shadowPostgres: CREATE TABLE … (LIKE … INCLUDING ALL) copies the
// columns with their defaults, identity and generation, CHECK and NOT NULL
// constraints, the primary key and every index (named by PostgreSQL after
// the new table), comments, storage and statistics settings; the grants
// (table and column) are copied from the ACL, and the owner set when it is
// another role. A serial column's default draws from the live column's
// sequence, which the swap gives to the new table (moveOwnedSequences).
// Triggers are not copied: on the shadow they would fire for every row the
// rebuild loads. A view, another table's foreign key on the live table or
// a child of it (inheritance, partition) would make the swap's DROP fail
// (after the whole load): refused now.
func (s *store) shadowPostgres(ctx context.Context, live, shadow string) ([]string, error) {
	q := s.d.quote
	rel := q(live) // to_regclass's argument: the name as the sink's queries write it
	views, err := queryColumns(ctx, s.db, `SELECT DISTINCT format('view %s', v.oid::regclass::text) FROM pg_depend d
		JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
		WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
			AND d.refobjid = to_regclass($1) AND v.oid <> d.refobjid ORDER BY 1`, rel)
	if err != nil {
		return nil, fmt.Errorf("look up the views on it: %w", err)
	}
	if len(views) > 0 {
		return nil, dependents(s.d, live, views)
	}
	fks, err := queryColumns(ctx, s.db, `SELECT format('foreign key %s of table %s', quote_ident(conname), conrelid::regclass::text)
		FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass($1) AND conrelid <> confrelid ORDER BY 1`, rel)
	if err != nil {
		return nil, fmt.Errorf("look up the foreign keys referencing it: %w", err)
	}
	if len(fks) > 0 {
		return nil, dependents(s.d, live, fks)
	}
	// A child (inheritance, or a partition) would make the drop fail;
	// LIKE copies neither the children nor the partitioning.
	children, err := queryColumns(ctx, s.db, `SELECT format('table %s (a child: inheritance or partition)', inhrelid::regclass::text)
		FROM pg_inherits WHERE inhparent = to_regclass($1) ORDER BY 1`, rel)
	if err != nil {
		return nil, fmt.Errorf("look up the tables inheriting from it: %w", err)
	}
	if len(children) > 0 {
		return nil, dependents(s.d, live, children)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s (LIKE %s INCLUDING ALL)", q(shadow), q(live))); err != nil {
		return nil, err
	}
	// Grants to the owner are the owner's own, given with the table.
	grants, err := queryColumns(ctx, s.db, `SELECT format('GRANT %s%s ON %s TO %s%s', a.privilege_type, col,
			$2::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
			CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
		FROM (SELECT c.relacl AS acl, '' AS col, c.relowner FROM pg_class c WHERE c.oid = to_regclass($1)
			UNION ALL SELECT t.attacl, format(' (%s)', quote_ident(t.attname)), c.relowner FROM pg_attribute t
				JOIN pg_class c ON c.oid = t.attrelid
				WHERE t.attrelid = to_regclass($1) AND t.attnum > 0 AND NOT t.attisdropped AND t.attacl IS NOT NULL) x
		CROSS JOIN LATERAL aclexplode(x.acl) a
		WHERE a.grantee <> x.relowner ORDER BY 1`, rel, q(shadow))
	if err != nil {
		return nil, fmt.Errorf("read the grants: %w", err)
	}
	for _, g := range grants {
		if _, err := s.db.ExecContext(ctx, g); err != nil {
			return nil, fmt.Errorf("copy a grant: %s: %w", g, err)
		}
	}
	var warnings []string
	var owner string
	var other bool
	if err := s.db.QueryRowContext(ctx, `SELECT quote_ident(pg_get_userbyid(relowner)), relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
		FROM pg_class WHERE oid = to_regclass($1)`, rel).Scan(&owner, &other); err != nil {
		return nil, fmt.Errorf("read the owner: %w", err)
	}
	if other {
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s OWNER TO %s", q(shadow), owner)); err != nil {
			warnings = append(warnings, fmt.Sprintf("table %s is owned by %s, but the rebuilt table could not be given to it (%v): the rebuild's role owns it after the swap", q(live), owner, err))
		}
	}
	triggers, err := queryColumns(ctx, s.db, `SELECT quote_ident(tgname) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal ORDER BY 1`, rel)
	if err != nil {
		return nil, fmt.Errorf("look up the triggers: %w", err)
	}
	if len(triggers) > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has trigger(s) %s, which the rebuilt table does not get (they would fire for every row the rebuild loads): create them again on it after the rebuild", q(live), strings.Join(triggers, ", ")))
	}
	var fksOut, policies int
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = to_regclass($1)),
		(SELECT count(*) FROM pg_policy WHERE polrelid = to_regclass($1))`, rel).Scan(&fksOut, &policies); err != nil {
		return nil, fmt.Errorf("look up the foreign keys and policies: %w", err)
	}
	if fksOut > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has %d foreign key(s) to other tables, which the rebuilt table does not get: add them to it again after the rebuild", q(live), fksOut))
	}
	if policies > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has %d row security policy(ies), which the rebuilt table does not get: create them again on it after the rebuild", q(live), policies))
	}
	return warnings, nil
}

// shadowMySQL: CREATE TABLE … LIKE copies the columns, the primary key and
// every index (and the table's options). Grants in MySQL/MariaDB are kept
// by table name, so they apply to the table that has the name after the
// swap; so do views, which name their tables. Triggers stay with the old
// table (their names are unique in the database, so the shadow cannot
// have them too) and are dropped with it; foreign keys are not copied
// (LIKE's rule). Another table's foreign key on the live table would
// follow it to the old name and make the drop fail: refused now.
func (s *store) shadowMySQL(ctx context.Context, live, shadow string) ([]string, error) {
	q := s.d.quote
	fks, err := queryColumns(ctx, s.db, `SELECT DISTINCT CONCAT('foreign key ', constraint_name, ' of table ', table_name) FROM information_schema.key_column_usage
		WHERE referenced_table_schema = DATABASE() AND referenced_table_name = ? AND table_name <> referenced_table_name ORDER BY 1`, live)
	if err != nil {
		return nil, fmt.Errorf("look up the foreign keys referencing it: %w", err)
	}
	if len(fks) > 0 {
		return nil, dependents(s.d, live, fks)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s LIKE %s", q(shadow), q(live))); err != nil {
		return nil, err
	}
	var warnings []string
	triggers, err := queryColumns(ctx, s.db, `SELECT trigger_name FROM information_schema.triggers
		WHERE event_object_schema = DATABASE() AND event_object_table = ? ORDER BY 1`, live)
	if err != nil {
		return nil, fmt.Errorf("look up the triggers: %w", err)
	}
	if len(triggers) > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has trigger(s) %s, which are dropped with it at the swap (a trigger's name is unique in the database, so the rebuilt table cannot have them meanwhile): create them again on it after the rebuild", q(live), strings.Join(triggers, ", ")))
	}
	fksOut, err := queryColumns(ctx, s.db, `SELECT constraint_name FROM information_schema.referential_constraints
		WHERE constraint_schema = DATABASE() AND table_name = ? ORDER BY 1`, live)
	if err != nil {
		return nil, fmt.Errorf("look up the foreign keys: %w", err)
	}
	if len(fksOut) > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has foreign key(s) %s, which the rebuilt table does not get: add them to it again after the rebuild", q(live), strings.Join(fksOut, ", ")))
	}
	return warnings, nil
}

// shadowSQLite: SQLite keeps each table's and index's CREATE statement
// (sqlite_master), which are run again with the new names: the columns,
// constraints and foreign keys as the user wrote them, and every index.
// An index's name is unique in the database, so the shadow's carries the
// suffix __rebuild (or loses it, when the live one has it: a name
// alternates between rebuilds, never growing). SQLite's rename of the
// live table at the swap rewrites the views, triggers and foreign keys of
// other tables that name it to the old name, which is then dropped: they
// are found by a rename rolled back at once, and refused. It rewrites the
// table's own foreign keys to itself too: the shadow's copy references the
// shadow (sqliteSelfReferences), which the swap renames with it. Triggers
// on the table are dropped with it (their names are unique too). Names are
// compared as SQLite does, ignoring case. The columns of retyped get their
// new type in the table's statement (sqliteRetype).
func (s *store) shadowSQLite(ctx context.Context, live, shadow string, retyped []retype) ([]string, error) {
	q := s.d.quote
	broken, err := s.sqliteDependents(ctx, live)
	if err != nil {
		return nil, err
	}
	if len(broken) > 0 {
		return nil, dependents(s.d, live, broken)
	}
	type object struct{ typ, name, sql string }
	rows, err := s.db.QueryContext(ctx, `SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? COLLATE NOCASE AND sql IS NOT NULL ORDER BY type = 'index', name`, live)
	if err != nil {
		return nil, fmt.Errorf("read its definition: %w", err)
	}
	var objs []object
	for rows.Next() {
		var o object
		if err := rows.Scan(&o.typ, &o.name, &o.sql); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read its definition: %w", err)
		}
		objs = append(objs, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read its definition: %w", err)
	}
	var warnings, triggers []string
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	for _, o := range objs {
		var stmt string
		var err error
		switch o.typ {
		case "table":
			if stmt, err = sqliteRename(o.sql, []string{"CREATE TABLE"}, q(shadow), ""); err == nil {
				stmt, err = sqliteSelfReferences(stmt, live, q(shadow))
			}
			if err == nil && len(retyped) > 0 {
				types := map[string]string{}
				for _, r := range retyped {
					types[strings.ToLower(r.column)] = r.to
				}
				stmt, err = sqliteRetype(stmt, types)
			}
		case "index":
			name := strings.TrimSuffix(o.name, rebuildSuffix)
			if name == o.name {
				name += rebuildSuffix
			}
			stmt, err = sqliteRename(o.sql, []string{"CREATE INDEX", "CREATE UNIQUE INDEX"}, q(name), q(shadow))
		case "trigger":
			triggers = append(triggers, q(o.name))
			continue
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.typ, q(o.name), err)
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	if len(triggers) > 0 {
		warnings = append(warnings, fmt.Sprintf("table %s has trigger(s) %s, which are dropped with it at the swap (a trigger's name is unique in the database, and on the rebuilt table it would fire for every row loaded): create them again after the rebuild", q(live), strings.Join(triggers, ", ")))
	}
	return warnings, nil
}

// sqliteDependents lists the views, triggers and tables of other tables
// whose definition names table: those that SQLite's ALTER TABLE … RENAME
// rewrites. It renames the table in a transaction it rolls back, and
// compares.
func (s *store) sqliteDependents(ctx context.Context, table string) ([]string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("look up what depends on it: %w", err)
	}
	defer tx.Rollback()
	read := func() (map[string]string, error) {
		rows, err := tx.QueryContext(ctx, `SELECT type || ' ' || name, sql FROM sqlite_master WHERE tbl_name <> ? COLLATE NOCASE AND sql IS NOT NULL`, table)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, rows.Err()
	}
	before, err := read()
	if err != nil {
		return nil, fmt.Errorf("look up what depends on it: %w", err)
	}
	probe := table + oldSuffix + "_probe"
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s RENAME TO %s", s.d.quote(table), s.d.quote(probe))); err != nil {
		return nil, fmt.Errorf("look up what depends on it (a rename, rolled back): %w", err)
	}
	after, err := read()
	if err != nil {
		return nil, fmt.Errorf("look up what depends on it: %w", err)
	}
	var out []string
	for k, v := range before {
		if after[k] != v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// sqliteRename rewrites a CREATE statement as sqlite_master keeps it
// (its leading keywords in upper case, no IF NOT EXISTS, no schema name):
// the name after one of prefixes becomes name and, when on is not empty,
// the table after the ON that follows becomes on.
func sqliteRename(stmt string, prefixes []string, name, on string) (string, error) {
	rest := ""
	for _, p := range prefixes {
		if len(stmt) > len(p) && strings.EqualFold(stmt[:len(p)], p) && isSpace(stmt[len(p)]) {
			rest = strings.TrimLeft(stmt[len(p):], " \t\r\n")
			break
		}
	}
	if rest == "" {
		return "", fmt.Errorf("its definition does not start with %s: %.60q", strings.Join(prefixes, " or "), stmt)
	}
	head := stmt[:len(stmt)-len(rest)]
	n, err := sqliteIdentLen(rest)
	if err != nil {
		return "", err
	}
	out := head + name
	rest = rest[n:]
	if on == "" {
		return out + rest, nil
	}
	trimmed := strings.TrimLeft(rest, " \t\r\n")
	if len(trimmed) < 3 || !strings.EqualFold(trimmed[:2], "ON") || !isSpace(trimmed[2]) {
		return "", fmt.Errorf("no ON after the index's name: %.60q", stmt)
	}
	afterOn := strings.TrimLeft(trimmed[2:], " \t\r\n")
	out += rest[:len(rest)-len(trimmed)] + trimmed[:len(trimmed)-len(afterOn)]
	if n, err = sqliteIdentLen(afterOn); err != nil {
		return "", err
	}
	return out + on + afterOn[n:], nil
}

// sqliteSelfReferences rewrites the foreign keys of a CREATE TABLE
// statement that reference table (REFERENCES table, the name in any
// quoting or case, as SQLite compares names) to reference name instead.
// The rebuilt table's copy of a foreign key from the live table to itself
// must reference the rebuilt table: left naming the live one, the swap's
// rename would rewrite it to the old table's name, which is then dropped.
// String literals, quoted names and comments are skipped.
func sqliteSelfReferences(stmt, table, name string) (string, error) {
	const kw = "REFERENCES"
	var out strings.Builder
	last := 0
	for i := 0; i < len(stmt); {
		switch c := stmt[i]; {
		case c == '\'' || c == '"' || c == '`' || c == '[':
			n, err := sqliteIdentLen(stmt[i:])
			if err != nil {
				return "", err
			}
			i += n
		case c == '-' && strings.HasPrefix(stmt[i:], "--"):
			if j := strings.IndexByte(stmt[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(stmt)
			}
		case c == '/' && strings.HasPrefix(stmt[i:], "/*"):
			if j := strings.Index(stmt[i+2:], "*/"); j >= 0 {
				i += 2 + j + 2
			} else {
				i = len(stmt)
			}
		case len(stmt)-i > len(kw) && strings.EqualFold(stmt[i:i+len(kw)], kw) &&
			(i == 0 || !isIdentChar(stmt[i-1])) && !isIdentChar(stmt[i+len(kw)]):
			i += len(kw)
			at := i + len(stmt[i:]) - len(strings.TrimLeft(stmt[i:], " \t\r\n"))
			n := 0
			for at+n < len(stmt) && isIdentChar(stmt[at+n]) {
				n++ // a bare name ends at anything else: "REFERENCES t," is one
			}
			if n == 0 {
				var err error
				if n, err = sqliteIdentLen(stmt[at:]); err != nil {
					return "", fmt.Errorf("a foreign key's table: %w", err)
				}
			}
			if strings.EqualFold(sqliteUnquote(stmt[at:at+n]), table) {
				out.WriteString(stmt[last:at])
				out.WriteString(name)
				last = at + n
			}
			i = at + n
		default:
			i++
		}
	}
	out.WriteString(stmt[last:])
	return out.String(), nil
}

// sqliteUnquote is the name a (possibly quoted) identifier stands for.
func sqliteUnquote(ident string) string {
	if len(ident) < 2 {
		return ident
	}
	switch c := ident[0]; c {
	case '"', '`', '\'':
		return strings.ReplaceAll(ident[1:len(ident)-1], string([]byte{c, c}), string(c))
	case '[':
		return ident[1 : len(ident)-1]
	}
	return ident
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// sqliteIdentLen is the length of the identifier s starts with: quoted
// ("…", `…`, '…' with the quote doubled inside, or […]) or bare (up to a
// space or a parenthesis).
func sqliteIdentLen(s string) (int, error) {
	if s == "" {
		return 0, errors.New("a name is missing")
	}
	switch c := s[0]; c {
	case '"', '`', '\'':
		for i := 1; i < len(s); i++ {
			if s[i] == c {
				if i+1 < len(s) && s[i+1] == c {
					i++
					continue
				}
				return i + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated name: %.60q", s)
	case '[':
		if i := strings.IndexByte(s, ']'); i > 0 {
			return i + 1, nil
		}
		return 0, fmt.Errorf("unterminated name: %.60q", s)
	}
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) || s[i] == '(' {
			return i, nil
		}
	}
	return len(s), nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
