package sink

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"               // also registers the "sqlite" database/sql driver
)

// dialect is what differs between the SQL stores. The store code is one
// implementation over database/sql; a dialect supplies quoting, parameter
// markers, types, the upsert clause and catalog lookups.
type dialect interface {
	// name is "postgres", "mysql" or "sqlite", for messages.
	name() string
	// quote quotes an identifier, whatever characters it holds.
	quote(ident string) string
	// param is the marker of the n-th (1-based) statement parameter.
	param(n int) string
	// sqlType is the column type created for t; key columns must be
	// indexable.
	sqlType(t fieldType, key bool) string
	// value converts a decoded, non-nil Avro value into a driver value
	// for a column of type t, or of the configured SQL type override when
	// not empty (the column holds that type, not the one t would create).
	value(t fieldType, override string, v any) (any, error)
	// onConflict is the clause making an INSERT of all columns an upsert on
	// the key columns, updating update (may be empty).
	onConflict(keys, update []string) string
	// columns lists the columns of table; nil when it does not exist.
	columns(ctx context.Context, db *sql.DB, table string) ([]string, error)
	// blobType, textKeyType and textType are the types of the sink's own
	// tables.
	blobType() string
	textKeyType(n int) string
	textType() string
	// maxParams bounds the parameters of one statement.
	maxParams() int
	// identLimit is the longest identifier the store keeps as given.
	identLimit() identLimit

	// The fit check of an existing table (fit.go):
	// describe reads table's columns and unique indexes from the catalog.
	describe(ctx context.Context, db *sql.DB, table string) (*tableDesc, error)
	// holds says whether column c holds every value of t exactly.
	holds(t fieldType, c colDesc) typeFit
	// fixType and fixNull are the statements (or advice) that change c to
	// type typ, or make it nullable.
	fixType(table string, c colDesc, typ string) string
	fixNull(table string, c colDesc) string
	// upsertOnAnyUnique: the upsert updates the row of whichever unique
	// index an insert collides in (MySQL), not only the key's.
	upsertOnAnyUnique() bool
}

// identLimit is the longest identifier a store keeps as given: n bytes,
// or n characters when chars; n == 0 is no limit. PostgreSQL cuts a
// longer name to 63 bytes with only a notice (two names could become one,
// and lookups by the full name find nothing); MySQL refuses one over 64
// characters.
type identLimit struct {
	n     int
	chars bool
}

// fits says whether name is within the limit.
func (l identLimit) fits(name string) bool {
	if l.chars {
		return l.n == 0 || utf8.RuneCountInString(name) <= l.n
	}
	return l.n == 0 || len(name) <= l.n
}

// size is name's length in the limit's unit.
func (l identLimit) size(name string) string {
	if l.chars {
		return fmt.Sprintf("%d characters", utf8.RuneCountInString(name))
	}
	return fmt.Sprintf("%d bytes", len(name))
}

func (l identLimit) String() string {
	if l.chars {
		return fmt.Sprintf("%d characters", l.n)
	}
	return fmt.Sprintf("%d bytes", l.n)
}

// dialectOf is the dialect of a store URL's scheme.
func dialectOf(raw string) (dialect, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("store URL does not parse")
	}
	switch u.Scheme {
	case "postgres", "postgresql":
		return postgresDialect{}, nil
	case "sqlite":
		return sqliteDialect{}, nil
	case "mysql":
		return mysqlDialect{}, nil
	}
	return nil, fmt.Errorf("store URL scheme %q is not one of postgres, sqlite, mysql", u.Scheme)
}

// sqlitePath is the file path of a sqlite:// store URL (":memory:" for
// an in-memory database).
func sqlitePath(raw string) string {
	path := strings.TrimPrefix(raw, "sqlite://")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return path
}

// openStore opens the store at a read model's URL: postgres://…,
// sqlite://path, sqlite:///abs/path, mysql://user:pass@host:port/db.
// Nothing is connected yet (database/sql connects on first use).
func openStore(raw string) (*sql.DB, dialect, error) {
	d, err := dialectOf(raw)
	if err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse(raw)
	switch d.(type) {
	case postgresDialect:
		db, err := sql.Open("pgx", raw)
		if err != nil {
			return nil, nil, err
		}
		return db, d, nil
	case sqliteDialect:
		path := sqlitePath(raw)
		// SQLite creates the file but not its directory, and says only
		// "unable to open database file" when that is missing.
		if dir := filepath.Dir(path); path != "" && path != ":memory:" {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				abs, _ := filepath.Abs(dir)
				return nil, nil, fmt.Errorf("the directory of SQLite file %s does not exist (%s): SQLite creates the file, not its directory; create it (mkdir -p %s) or point the read model's store at an existing directory", path, abs, dir)
			}
		}
		// busy_timeout rides out another writer (a read model sharing the
		// file, a query tool); WAL lets readers query while the sink
		// writes; BEGIN IMMEDIATE takes the write lock up front, since a
		// transaction that read first and then writes after another
		// writer's commit fails at once (SQLITE_BUSY_SNAPSHOT) whatever the
		// timeout.
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
		if err != nil {
			return nil, nil, err
		}
		// One writer connection: SQLite serialises writers anyway, and a
		// second connection would only meet SQLITE_BUSY.
		db.SetMaxOpenConns(1)
		return db, d, nil
	case mysqlDialect:
		cfg := mysql.NewConfig()
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.Net = "tcp"
		cfg.Addr = u.Host
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		cfg.ParseTime = true
		cfg.Loc = time.UTC
		for k, v := range u.Query() {
			if cfg.Params == nil {
				cfg.Params = map[string]string{}
			}
			cfg.Params[k] = v[0]
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, nil, err
		}
		return sql.OpenDB(conn), d, nil
	}
	return nil, nil, fmt.Errorf("store URL scheme %q has no driver", u.Scheme)
}

// quoteWith doubles q inside ident and wraps it in q.
func quoteWith(q, ident string) string {
	return q + strings.ReplaceAll(ident, q, q+q) + q
}

// queryColumns runs query, which selects one text column, on db (a pool,
// a connection or a transaction) and returns its values.
func queryColumns(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// isTransient reports whether a store error is worth retrying the batch
// for rather than a verdict on the records (those are never poison): lock
// contention, deadlock, serialization failure, and a store that is out of
// reach or restarting (connection refused, reset or lost, server shutting
// down or starting up, too many connections). The batch's transaction did
// not commit, or its outcome is unknown: the offsets' compare-and-set
// sorts that out on the retry.
func isTransient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01", "55P03", // serialization failure, deadlock, lock not available
			"57P01", "57P02", "57P03", // admin or crash shutdown, cannot connect now (starting up, shutting down)
			"53300": // too many connections
			return true
		}
		// Class 08: connection exception. Any other server verdict
		// (authentication, a constraint, a missing table) is not transient.
		return strings.HasPrefix(pe.Code, "08")
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1205, 1213, // lock wait timeout, deadlock
			1040, 1053, // too many connections, server shutdown in progress
			1927: // MariaDB: connection was killed
			return true
		}
		return false
	}
	if connectionLost(err) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "SQLITE_LOCKED")
}

// connectionEnded reports a failure that ended the store's connection: the
// connection broke, or the server ended the session (terminated, shutting
// down, killed). Lock contention, the other transient kind, leaves the
// connection up.
func connectionEnded(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" || strings.HasPrefix(pe.Code, "08")
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1927 || me.Number == 1053
	}
	return connectionLost(err)
}

// connectionLost reports an error of the connection rather than of a
// statement: the store could not be reached, or the connection broke.
func connectionLost(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || pgconn.SafeToRetry(err) {
		return true
	}
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, driver.ErrBadConn, mysql.ErrInvalidConn, net.ErrClosed} {
		if errors.Is(err, e) {
			return true
		}
	}
	// pgx reports a connection it closed after a failure as "conn closed"
	// without a type to match.
	return strings.Contains(err.Error(), "conn closed")
}

// isTableFault reports whether the store refused the statement itself,
// whatever the values: the table does not fit the read model (no primary
// key or unique constraint on the key columns for the upsert, a column
// gone, no privilege). No record is at fault, so none may be dead-lettered
// for it: every record would be. PostgreSQL and MySQL SQLSTATE classes 42
// (syntax error or access rule violation) and 0A (feature not supported);
// SQLite's generic SQLITE_ERROR ("SQL logic error"), whereas the values'
// faults have codes of their own (constraint, too big, mismatch). A
// column found missing by the store's own catalog read (errNoColumn) is
// one too.
func isTableFault(err error) bool {
	if errors.Is(err, errNoColumn) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "42") || strings.HasPrefix(pe.Code, "0A")
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		state := string(me.SQLState[:])
		return strings.HasPrefix(state, "42") || strings.HasPrefix(state, "0A")
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == 1 // SQLITE_ERROR, extended codes included
	}
	return false
}
