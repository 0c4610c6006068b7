package sink

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// A rebuild creates its table from the live one (shadow.go), which keeps
// the live columns' types. The types the read model wants may have
// changed since the live table was created: a column's `type:` in the
// config, or a field's type in the schemas (an int widened to a long). A
// rebuild is when a user expects such a change to take effect, and the
// rebuilt table is empty until the load starts, so changing a column's
// type then costs nothing: retypes finds the columns to change, and the
// store's way applies it (shadowRetype, sqliteRetype).

// retype is a column of the read model whose live type the rebuilt table
// changes: from as the live table's catalog prints it, to as the rebuilt
// table gets it.
type retype struct {
	column, from, to string
}

// errTypeRefused marks a `type:` the store refuses as a column's type:
// `check` notes it (the running sink writes into the column whatever its
// type, only a rebuild fails on it), where any other failure to compare
// (the connection, the context) is a problem.
var errTypeRefused = errors.New("the store refuses it as a column's type")

// errProbeDenied is MySQL/MariaDB refusing the temporary table that
// mysqlTypeName creates for lack of a privilege.
var errProbeDenied = errors.New("no privilege to create a temporary table")

// retypes lists the columns the read model writes whose type in the live
// table (desc) is not the one it wants now (retypeColumn). A column the
// live table lacks is added with the wanted type (createShadow); one the
// read model does not write keeps its type.
func (s *store) retypes(ctx context.Context, p *plan, desc *tableDesc) ([]retype, error) {
	have := map[string]colDesc{}
	for _, c := range desc.cols {
		have[c.name] = c
	}
	var out []retype
	for _, c := range p.columns {
		found, ok := have[c.name]
		if !ok {
			continue
		}
		r, change, err := s.retypeColumn(ctx, c, found)
		if err != nil {
			return nil, err
		}
		if change {
			out = append(out, r)
		}
	}
	return out, nil
}

// retypeColumn reports whether column c, whose live type is found, gets
// another type in the rebuilt table, and which:
//   - one with a `type:` override whose type is another (sameType): on
//     PostgreSQL the type as the store names it (format_type of the probe)
//     with the collation the override names, on SQLite the override's
//     type words, on MySQL/MariaDB its data type with the character set
//     and collation it names (mysqlTypeWords), in each without the
//     constraints and attributes the override may carry: a rebuild takes
//     those from the live column, as for any column;
//   - one without whose live type does not hold its field (d.holds, the
//     fit check's rule: a wider type is kept): the sink's type for the
//     field, or on MySQL/MariaDB, when only the live text type's character
//     set fails, that type in utf8mb4 (its length, and so its indexes, as
//     they are).
func (s *store) retypeColumn(ctx context.Context, c column, found colDesc) (retype, bool, error) {
	r := retype{column: c.name, from: found.typ}
	if c.override != "" {
		same, to, err := s.sameType(ctx, found, c.override)
		if err != nil {
			return r, false, fmt.Errorf("column %s: compare its type %s with the config's type %q: %w", s.d.quote(c.name), found.typ, c.override, err)
		}
		r.to = to
		return r, !same, nil
	}
	if s.d.holds(c.typ, found).ok {
		return r, false, nil
	}
	if _, ok := s.d.(mysqlDialect); ok {
		utf8 := found
		utf8.charset = ""
		if found.charset != "" && s.d.holds(c.typ, utf8).ok {
			// The sink's text is utf8mb4 (holds refuses another
			// character set). sqlType's longtext would lose the
			// length: MariaDB then makes an index on the column a
			// prefix one (a UNIQUE one USING HASH), MySQL refuses it.
			r.to = found.typ + " CHARACTER SET utf8mb4"
			return r, true, nil
		}
	}
	r.to = s.d.sqlType(c.typ, c.source < 0)
	if _, ok := s.d.(mysqlDialect); ok && mysqlTextType(r.to) {
		r.to += " CHARACTER SET utf8mb4"
	}
	return r, true, nil
}

// sameType reports whether a column of type typ, as the config spells it,
// would have the type the catalog describes as found, and the type to
// give the rebuilt column when not. The catalog spells a type its own way
// (PostgreSQL "character varying(20)" for "varchar(20)", MariaDB
// "int(11)" for "int"), so a column of type typ is created where no one
// else sees it and the store's own spelling compared:
//   - PostgreSQL: format_type of the column of a temporary table created
//     in a transaction rolled back (postgresTypeName), the function the
//     catalog description uses (describe). It takes typ as CREATE TABLE
//     does (a constraint, a collation, serial, a domain: a domain column's
//     type is the domain), and is what the rebuilt column gets, with the
//     collation typ names: ALTER COLUMN TYPE takes a type, not the
//     constraints typ may carry;
//   - MySQL/MariaDB: the column_type of a column of that type in a
//     temporary table (mysqlTypeName), compared ignoring case; the
//     character set is not compared. The rebuilt column gets that type,
//     with the probe's collation when typ sets one (mysqlSetsCollation),
//     and the rest of the live column's definition (mysqlModify). Without
//     the privilege to create one, typ's data type as written
//     (mysqlTypeWords) is compared ignoring case and spaces (an equal
//     type spelled otherwise is then changed to itself, harmless on the
//     empty rebuilt table), and given;
//   - SQLite keeps the declared type as written, and its catalog
//     (pragma table_info) leaves the constraints out: the words of typ
//     before its first constraint (sqliteTypeWords) are compared ignoring
//     case and spaces, and only they are written into the rebuilt table's
//     statement, whose constraints are the live column's.
//
// An error wrapping errTypeRefused is typ refused by the store.
func (s *store) sameType(ctx context.Context, found colDesc, typ string) (same bool, to string, err error) {
	switch s.d.(type) {
	case postgresDialect:
		canon, collate, err := postgresTypeName(ctx, s.db, typ)
		if err != nil {
			return false, "", err
		}
		return canon == found.typ, canon + collate, nil
	case mysqlDialect:
		canon, collation, err := mysqlTypeName(ctx, s.db, typ)
		if errors.Is(err, errProbeDenied) {
			words := mysqlTypeWords(typ)
			return squeezeType(words) == squeezeType(found.typ), words, nil
		}
		if err != nil {
			return false, "", err
		}
		to := canon
		if collation != "" && mysqlSetsCollation(typ) {
			// Wherever typ names it (after NOT NULL too, quoted, or as
			// BINARY/ASCII): without, mysqlModify keeps the live one.
			to += " COLLATE " + collation
		}
		return strings.EqualFold(canon, found.typ), to, nil
	}
	declared := found.typ
	if declared == "(no type)" { // describe's stand-in for an empty one
		declared = ""
	}
	words := sqliteTypeWords(typ)
	return squeezeType(words) == squeezeType(declared), words, nil
}

// squeezeType is a type's spelling without case and spaces.
func squeezeType(typ string) string {
	return strings.ToLower(strings.Join(strings.Fields(typ), ""))
}

// postgresTypeProbe is the temporary table postgresTypeName creates, in a
// transaction it rolls back: no one else sees it, and it is gone after.
// A type: with a foreign key is probed in a table of that name with a
// random suffix, beside the sink's tables (a temporary table may not
// reference another), in the same transaction.
const postgresTypeProbe = "replicator_type_probe"

// postgresTypeName is format_type of the column PostgreSQL creates for a
// column declared typ: the type and its modifier, a domain's name for a
// domain; collate is the COLLATE clause of the collation typ gives it when
// that is not its type's own, else empty: ALTER COLUMN TYPE gives a
// column its new type's collation unless told another.
func postgresTypeName(ctx context.Context, db *sql.DB, typ string) (name, collate string, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return "", "", err
	}
	defer tx.Rollback()
	q := postgresDialect{}.quote(postgresTypeProbe)
	rel := "pg_temp." + q
	if _, err := tx.ExecContext(ctx, "SAVEPOINT probe"); err != nil {
		return "", "", err
	}
	_, err = tx.ExecContext(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (c %s)", q, typ))
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P16" {
		// A foreign key to a table of the database, which a temporary
		// table may not have: a table beside the sink's (it may create
		// one there), under a name no other probe takes at once, is
		// unseen by others too until the rollback drops it.
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT probe"); err != nil {
			return "", "", err
		}
		rel = postgresDialect{}.quote(fmt.Sprintf("%s_%d", postgresTypeProbe, rand.Uint64()))
		_, err = tx.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s (c %s)", rel, typ))
	}
	if err != nil {
		if errors.As(err, &pe) && pe.Code == "42501" {
			return "", "", fmt.Errorf("create a temporary table with a column of that type to compare it: %w (the sink's user needs TEMPORARY on the database, and for a type: with a foreign key CREATE on the schema)", err)
		}
		// A syntax error, an unknown type or collation, an invalid
		// modifier (classes 42, 22, 0A) is the type refused; anything
		// else (the connection, a timeout) says nothing of it.
		if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "42") || strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "0A")) {
			return "", "", fmt.Errorf("%w (CREATE TABLE refuses a column of it): %w", errTypeRefused, err)
		}
		return "", "", fmt.Errorf("create a temporary table with a column of that type to compare it: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT format_type(a.atttypid, a.atttypmod), coalesce((SELECT ' COLLATE ' || quote_ident(n.nspname) || '.' || quote_ident(c.collname)
			FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.oid = a.attcollation AND a.attcollation <> t.typcollation), '')
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = $1::regclass AND a.attname = 'c'`,
		rel).Scan(&name, &collate); err != nil {
		return "", "", fmt.Errorf("read the type of the probe column: %w", err)
	}
	return name, collate, nil
}

// mysqlTypeProbe is the temporary table mysqlTypeName creates: a
// session's own, invisible to others, dropped before the connection goes
// back to the pool. It has a primary key column besides the probed one:
// a server that requires one (sql_require_primary_key, MySQL 8;
// innodb_force_primary_key, MariaDB) refuses a table without.
const (
	mysqlTypeProbe    = "replicator_type_probe"
	mysqlTypeProbeKey = "replicator_probe_key"
)

// mysqlTypeName is the column_type MySQL/MariaDB gives a column declared
// typ, and its collation ("" for a type without one), read from a
// temporary table. An error wrapping errProbeDenied is the user lacking
// the privilege to create one; one wrapping errTypeRefused is the server
// refusing typ.
func mysqlTypeName(ctx context.Context, db *sql.DB, typ string) (name, collation string, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	q := mysqlDialect{}.quote(mysqlTypeProbe)
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE TEMPORARY TABLE %s (%s int PRIMARY KEY, c %s)", q, mysqlDialect{}.quote(mysqlTypeProbeKey), typ)); err != nil {
		var me *mysql.MySQLError
		if !errors.As(err, &me) {
			return "", "", fmt.Errorf("create a temporary table with a column of that type to compare it: %w", err)
		}
		switch me.Number {
		case 1044, 1142, 1227: // access denied to the database, the table, the operation
			return "", "", fmt.Errorf("%w: %w", errProbeDenied, err)
		}
		// The server answered about the statement, which is only the
		// type's: a syntax error, an unknown type or character set, a
		// length out of range.
		return "", "", fmt.Errorf("%w (CREATE TABLE refuses a column of it): %w", errTypeRefused, err)
	}
	defer func() {
		if _, derr := conn.ExecContext(context.WithoutCancel(ctx), "DROP TEMPORARY TABLE "+q); derr != nil {
			// The table would stay with the session: not back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	rows, err := conn.QueryContext(ctx, "SHOW FULL COLUMNS FROM "+q)
	if err != nil {
		return "", "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", "", err
	}
	if len(cols) < 3 { // Field, Type, Collation, …
		return "", "", fmt.Errorf("SHOW FULL COLUMNS lists %d fields, want Field, Type and Collation", len(cols))
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return "", "", err
		}
		if string(vals[0]) == "c" {
			return string(vals[1]), string(vals[2]), nil // a NULL collation scans as empty
		}
	}
	if err := rows.Err(); err != nil {
		return "", "", err
	}
	return "", "", errors.New("SHOW FULL COLUMNS of the probe table does not list its column c")
}

// mysqlTextType reports whether typ is a MySQL/MariaDB character type:
// one with a character set.
func mysqlTextType(typ string) bool {
	t := strings.ToLower(strings.TrimSpace(typ))
	return strings.Contains(t, "char") || strings.Contains(t, "text") || strings.HasPrefix(t, "enum") || strings.HasPrefix(t, "set")
}

// mysqlTypeWords is the data type a MySQL/MariaDB `type:` override starts
// with: its words, parenthesised lists and quoted names up to the first
// column attribute ("varchar(40) CHARACTER SET latin1" of "varchar(40)
// CHARACTER SET latin1 NOT NULL DEFAULT 'x'"; a character set and
// collation are part of the type there). An override it cannot read is
// taken whole.
func mysqlTypeWords(typ string) string {
	start, end, ok := mysqlTypeSpan(typ)
	if !ok {
		return typ
	}
	return typ[start:end]
}

// mysqlTypeSpan is where mysqlTypeWords's words are in typ; !ok when typ
// has none or a list or quote that does not close (a backslash escape,
// which the SQLite rules used here do not know, included).
func mysqlTypeSpan(typ string) (start, end int, ok bool) {
	start = -1
	for j := sqliteSkipSpace(typ, 0); j < len(typ); j = sqliteSkipSpace(typ, j) {
		switch c := typ[j]; {
		case c == '(' && start >= 0:
			close, err := sqliteSkipTo(typ, j+1, ')')
			if err != nil || strings.Contains(typ[j:close], `\`) {
				return 0, 0, false
			}
			j, end = close+1, close+1
			continue
		case (c == '`' || c == '\'' || c == '"') && start >= 0: // a quoted character set or collation
			n, err := sqliteIdentLen(typ[j:])
			if err != nil || strings.Contains(typ[j:j+n], `\`) {
				return 0, 0, false
			}
			j, end = j+n, j+n
			continue
		}
		w := 0
		for j+w < len(typ) && isIdentChar(typ[j+w]) {
			w++
		}
		word := strings.ToUpper(typ[j : j+w])
		if w == 0 || mysqlAttributeWord[word] || (word == "SERIAL" && start >= 0) {
			break
		}
		if start < 0 {
			start = j
		}
		j += w
		end = j
	}
	return start, end, start >= 0
}

// mysqlAttributeWord are the keywords that begin a column's attributes
// after its data type (MySQL 8 and MariaDB CREATE TABLE; SERIAL, which is
// also a type, only after the first word).
var mysqlAttributeWord = map[string]bool{
	"NOT": true, "NULL": true, "DEFAULT": true, "AUTO_INCREMENT": true, "UNIQUE": true, "PRIMARY": true,
	"KEY": true, "COMMENT": true, "COLUMN_FORMAT": true, "ENGINE_ATTRIBUTE": true, "SECONDARY_ENGINE_ATTRIBUTE": true,
	"STORAGE": true, "REFERENCES": true, "CHECK": true, "CONSTRAINT": true, "GENERATED": true, "AS": true,
	"VISIBLE": true, "INVISIBLE": true, "ON": true, "SRID": true, "COMPRESSED": true, "PERSISTENT": true,
	"VIRTUAL": true, "STORED": true, "WITH": true, "WITHOUT": true,
}

// mysqlSetsCollation reports whether a `type:` chooses its character set
// or collation, in any of MySQL's spellings: CHARACTER SET, CHARSET,
// COLLATE (after NOT NULL too), the BINARY, ASCII, UNICODE and BYTE
// attributes, NATIONAL, NCHAR and NVARCHAR. A word inside a quoted
// default counts too: the caller then leaves the collation to typ.
func mysqlSetsCollation(typ string) bool {
	if mysqlNamesCharset(typ) {
		return true
	}
	for _, w := range strings.FieldsFunc(strings.ToLower(typ), func(r rune) bool { return r > 0x7f || !isIdentChar(byte(r)) }) {
		switch w {
		case "binary", "ascii", "unicode", "byte", "national", "nchar", "nvarchar":
			return true
		}
	}
	return false
}

// mysqlKeyType is typ, a key column's `type:`, with the binary collation
// spliced after its data type when it is a character type that does not
// choose its own: the server's default would merge keys differing in case
// or accents. A typ not read whole is left as it is (check notes a key
// column's collation).
func mysqlKeyType(typ, collation string) string {
	_, end, ok := mysqlTypeSpan(typ)
	if !ok || !mysqlTextType(typ[:end]) || mysqlSetsCollation(typ) {
		return typ
	}
	return typ[:end] + " CHARACTER SET utf8mb4 COLLATE " + collation + " " + typ[end:]
}

// mysqlNamesCharset reports whether typ sets its own character set or
// collation.
func mysqlNamesCharset(typ string) bool {
	t := strings.ToLower(typ)
	return strings.Contains(t, "character set") || strings.Contains(t, "charset") || strings.Contains(t, "collate")
}

// overrideNotes are `replicator check`'s notes on the columns of an
// existing table whose type differs from their `type:` in the config:
// the fit check leaves such a column alone (the user chose its type), so
// a changed `type:` takes effect only when the table is created again,
// which a rebuild does. A `type:` the store refuses is a note too (the
// running sink writes into the column whatever its type: only a rebuild
// fails on it); any other failure to compare a column is a problem. Each
// column is reported.
func (s *store) overrideNotes(ctx context.Context, p *plan, desc *tableDesc) (notes []string, problems []error) {
	have := map[string]colDesc{}
	for _, c := range desc.cols {
		have[c.name] = c
	}
	table := s.d.quote(p.model.Table)
	for _, c := range p.columns {
		found, ok := have[c.name]
		if c.override == "" || !ok {
			continue
		}
		r, change, err := s.retypeColumn(ctx, c, found)
		switch {
		case errors.Is(err, errTypeRefused):
			notes = append(notes, fmt.Sprintf("table %s: a rebuild would fail: %v", table, err))
		case err != nil:
			problems = append(problems, fmt.Errorf("table %s: %w", table, err))
		case change:
			notes = append(notes, fmt.Sprintf("table %s column %s is %s, the config says %s: a rebuild applies it (replicator rebuild); the running sink writes into %s",
				table, s.d.quote(r.column), r.from, c.override, r.from))
		}
	}
	return notes, problems
}

// shadowRetype gives the columns rs of the rebuilt table (shadow, just
// created from the live table and still empty) their new type, on
// PostgreSQL and MySQL/MariaDB (SQLite cannot alter a column's type:
// shadowSQLite writes the new types into the table's CREATE statement).
//
// PostgreSQL: ALTER COLUMN … TYPE … USING NULL: the table has no row to
// convert, and NULL converts to any type, where the column's own value
// needs a cast that may not exist (date to integer). PostgreSQL rebuilds
// the column's indexes and converts its default and constraints on the
// new type, and refuses when one does not apply to it (an expression
// index or a CHECK calling a function of the old type, an operator class
// of it, a generated column using it): the error names the column and the
// fix. No view can depend on the shadow (a view on the live table is
// refused before, shadowPostgres).
//
// MySQL/MariaDB: MODIFY COLUMN restates the whole column, so the rest of
// its definition is taken from SHOW CREATE TABLE (nullability, default,
// comment, …) and kept, and its character set and collation too when
// the new type is a text type that does not name its own.
func (s *store) shadowRetype(ctx context.Context, shadow string, rs []retype) error {
	q := s.d.quote
	fix := func(r retype, stmt string, err error) error {
		return fmt.Errorf("give column %s of the rebuilt table the type %s (the live table has %s): %s: %w: something of the table on the column does not take the new type (an index, a constraint, a default, a generated column): drop or change it on the live table, rebuild, and create it again (or keep the type the column has)",
			q(r.column), r.to, r.from, stmt, err)
	}
	for _, r := range rs {
		var stmt string
		switch s.d.(type) {
		case postgresDialect:
			stmt = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING NULL", q(shadow), q(r.column), r.to)
		case mysqlDialect:
			var err error
			if stmt, err = s.mysqlModify(ctx, shadow, r); err != nil {
				return fmt.Errorf("column %s: %w", q(r.column), err)
			}
		default:
			return fmt.Errorf("change the type of column %s: no way known for store %s", q(r.column), s.d.name())
		}
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			return fix(r, stmt, err)
		}
	}
	return nil
}

// mysqlColumnCharset matches the character set and collation SHOW CREATE
// TABLE prints after a column's type.
var mysqlColumnCharset = regexp.MustCompile(`^( CHARACTER SET \w+)?( COLLATE \w+)?`)

// mysqlModify is the MODIFY COLUMN giving r's column of table its new
// type, the rest of its definition as SHOW CREATE TABLE prints it.
func (s *store) mysqlModify(ctx context.Context, table string, r retype) (string, error) {
	q := s.d.quote
	var name, create string
	if err := s.db.QueryRowContext(ctx, "SHOW CREATE TABLE "+q(table)).Scan(&name, &create); err != nil {
		return "", fmt.Errorf("read the definition of table %s: %w", q(table), err)
	}
	prefix := q(r.column) + " "
	for _, line := range strings.Split(create, "\n") {
		line = strings.TrimLeft(line, " ")
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		def := strings.TrimSuffix(strings.TrimPrefix(line, prefix), ",")
		if len(def) < len(r.from) || !strings.EqualFold(def[:len(r.from)], r.from) {
			return "", fmt.Errorf("its definition in SHOW CREATE TABLE %s does not start with its type %s: %q", q(table), r.from, def)
		}
		rest := def[len(r.from):]
		charset := mysqlColumnCharset.FindString(rest)
		rest = rest[len(charset):]
		if !mysqlTextType(r.to) || mysqlNamesCharset(r.to) {
			charset = ""
		}
		return fmt.Sprintf("ALTER TABLE %s MODIFY COLUMN %s %s%s%s", q(table), q(r.column), r.to, charset, rest), nil
	}
	return "", fmt.Errorf("SHOW CREATE TABLE %s does not list it", q(table))
}

// sqliteRetype rewrites the declared types of the columns of a CREATE
// TABLE statement as sqlite_master keeps it: types maps a column's name,
// lower-case (SQLite ignores the case of names), to its new type. SQLite
// cannot alter a column's type, and building the rebuilt table from the
// schemas instead would lose what the user wrote (constraints, defaults,
// collations, the other columns' declarations), so the statement that
// creates it says the new type: the type name is the words after the
// column's name up to a constraint's keyword, with its (n) or (p,s).
// String literals, quoted names and comments are skipped. A column of
// types the statement does not declare is an error.
func sqliteRetype(stmt string, types map[string]string) (string, error) {
	const head = "CREATE TABLE"
	if len(stmt) <= len(head) || !strings.EqualFold(stmt[:len(head)], head) {
		return "", fmt.Errorf("its definition does not start with %s: %.60q", head, stmt)
	}
	i := sqliteSkipSpace(stmt, len(head))
	n, err := sqliteIdentLen(stmt[i:])
	if err != nil {
		return "", err
	}
	i = sqliteSkipSpace(stmt, i+n)
	if i >= len(stmt) || stmt[i] != '(' {
		return "", fmt.Errorf("no column list after the table's name: %.60q", stmt)
	}
	i++
	var out strings.Builder
	last := 0
	done := map[string]bool{}
	for {
		i = sqliteSkipSpace(stmt, i)
		n := sqliteWordLen(stmt[i:])
		if n == 0 {
			return "", fmt.Errorf("a column's name is missing at %.40q", stmt[i:])
		}
		name := sqliteUnquote(stmt[i : i+n])
		bare := isIdentChar(stmt[i])
		i += n
		switch up := strings.ToUpper(name); {
		case bare && (up == "CONSTRAINT" || up == "PRIMARY" || up == "UNIQUE" || up == "CHECK" || up == "FOREIGN"):
			// A table constraint.
		default:
			to, ok := types[strings.ToLower(name)]
			if !ok || done[strings.ToLower(name)] {
				break
			}
			done[strings.ToLower(name)] = true
			start, end, err := sqliteTypeName(stmt, i)
			if err != nil {
				return "", err
			}
			out.WriteString(stmt[last:start])
			if start == end {
				out.WriteString(" ")
			}
			out.WriteString(to)
			last = end
			i = end
		}
		// On to the next definition, or the end of the list.
		j, err := sqliteSkipTo(stmt, i, ',')
		if err != nil {
			return "", err
		}
		if stmt[j] == ')' {
			break
		}
		i = j + 1
	}
	for name := range types {
		if !done[name] {
			return "", fmt.Errorf("column %q is not in its definition: %.60q", name, stmt)
		}
	}
	out.WriteString(stmt[last:])
	return out.String(), nil
}

// sqliteTypeName is where the type name starts and ends in s from i (a
// column's definition after its name): the words up to a constraint's
// keyword, with its (n) or (p,s); start == end when there is none.
func sqliteTypeName(s string, i int) (start, end int, err error) {
	start, end = i, i
	for j := sqliteSkipSpace(s, i); j < len(s); j = sqliteSkipSpace(s, j) {
		w := 0
		for j+w < len(s) && isIdentChar(s[j+w]) {
			w++
		}
		if w == 0 || sqliteConstraintWord[strings.ToUpper(s[j:j+w])] {
			if w == 0 && s[j] == '(' && end > start {
				close, err := sqliteSkipTo(s, j+1, ')')
				if err != nil {
					return 0, 0, err
				}
				end = close + 1
			}
			break
		}
		if start == end {
			start = j
		}
		j += w
		end = j
	}
	return start, end, nil
}

// sqliteTypeWords is the type name a `type:` override starts with, as
// SQLite's catalog (pragma table_info) shows a column declared so: the
// words before its first constraint ("TEXT" of "TEXT COLLATE NOCASE").
// An override whose parentheses do not close is taken whole.
func sqliteTypeWords(typ string) string {
	start, end, err := sqliteTypeName(typ, 0)
	if err != nil {
		return typ
	}
	return typ[start:end]
}

// sqliteConstraintWord are the keywords that end a column's type name
// (https://sqlite.org/lang_createtable.html, column-constraint).
var sqliteConstraintWord = map[string]bool{
	"CONSTRAINT": true, "PRIMARY": true, "NOT": true, "NULL": true, "UNIQUE": true, "CHECK": true,
	"DEFAULT": true, "COLLATE": true, "REFERENCES": true, "GENERATED": true, "AS": true,
}

// sqliteWordLen is the length of the name s starts with, quoted or bare
// (up to a character no bare name has).
func sqliteWordLen(s string) int {
	if s == "" {
		return 0
	}
	switch s[0] {
	case '"', '`', '\'', '[':
		n, err := sqliteIdentLen(s)
		if err != nil {
			return 0
		}
		return n
	}
	n := 0
	for n < len(s) && isIdentChar(s[n]) {
		n++
	}
	return n
}

// sqliteSkipSpace skips spaces and comments from i.
func sqliteSkipSpace(s string, i int) int {
	for i < len(s) {
		switch {
		case isSpace(s[i]):
			i++
		case strings.HasPrefix(s[i:], "--"):
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(s)
			}
		case strings.HasPrefix(s[i:], "/*"):
			if j := strings.Index(s[i+2:], "*/"); j >= 0 {
				i += 2 + j + 2
			} else {
				i = len(s)
			}
		default:
			return i
		}
	}
	return i
}

// sqliteSkipTo is the index of the first stop (or of a closing
// parenthesis) from i outside parentheses opened after i, string
// literals, quoted names and comments.
func sqliteSkipTo(s string, i int, stop byte) (int, error) {
	depth := 0
	for i < len(s) {
		switch c := s[i]; {
		case c == '\'' || c == '"' || c == '`' || c == '[':
			n, err := sqliteIdentLen(s[i:])
			if err != nil {
				return 0, err
			}
			i += n
			continue
		case c == '-' && strings.HasPrefix(s[i:], "--"), c == '/' && strings.HasPrefix(s[i:], "/*"):
			i = sqliteSkipSpace(s, i)
			continue
		case c == '(':
			depth++
		case c == ')':
			if depth == 0 {
				return i, nil
			}
			depth--
		case c == stop && depth == 0:
			return i, nil
		}
		i++
	}
	return 0, fmt.Errorf("unterminated definition: %.60q", s)
}
