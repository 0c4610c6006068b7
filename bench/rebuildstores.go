package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", as the sink's
	"github.com/replicator/replicator/pgcluster"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", as the sink's
)

// ceilingTable is the table a ceiling loads.
const ceilingTable = "bench_ceiling"

func quotePG(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteMySQL(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// readModelSettings tune the read model's cluster as clusterSettings do
// the source's (no checkpoint or autovacuum of its own during a run), at
// the default wal_level (replica), as a read model's database would be.
var readModelSettings = map[string]string{
	"shared_buffers":     "512MB",
	"max_wal_size":       "4GB",
	"checkpoint_timeout": "30min",
	"autovacuum":         "off",
}

// pgStore is a PostgreSQL read model: a database of a cluster of its own.
type pgStore struct {
	cl   *pgcluster.Cluster
	sdb  *sql.DB
	cols []storeColumn
	copy []byte // the read model's rows, COPY text format
}

func (*pgStore) name() string { return "pg" }

func (p *pgStore) start(ctx context.Context, _ *harness) error {
	var err error
	if p.cl, err = pgcluster.Start(ctx, pgcluster.Options{Settings: readModelSettings}); err != nil {
		return err
	}
	p.sdb, err = sql.Open("pgx", p.cl.DSN(""))
	return err
}

func (p *pgStore) url() string  { return p.cl.DSN("") }
func (p *pgStore) db() *sql.DB  { return p.sdb }
func (p *pgStore) close() error { return errors.Join(p.closeDB(), p.closeCluster()) }

func (p *pgStore) closeDB() error {
	if p.sdb == nil {
		return nil
	}
	return p.sdb.Close()
}

func (p *pgStore) closeCluster() error {
	if p.cl == nil {
		return nil
	}
	return p.cl.Close()
}

func (p *pgStore) reset(ctx context.Context) error {
	_, err := p.sdb.ExecContext(ctx, "DROP TABLE IF EXISTS "+readModel+", "+readModel+"__rebuild, "+ceilingTable+
		", replicator_sink_offsets, replicator_sink_side")
	return err
}

func (p *pgStore) capture(ctx context.Context) error {
	rows, err := p.sdb.QueryContext(ctx, `SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, readModel)
	if err != nil {
		return err
	}
	p.cols, err = scanColumns(rows)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, p.cl.DSN(""))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var b bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &b, "COPY (SELECT "+columns+" FROM "+readModel+") TO STDOUT"); err != nil {
		return err
	}
	p.copy = b.Bytes()
	return nil
}

// ceiling: COPY … FROM STDIN of the captured rows into a new table.
func (p *pgStore) ceiling(ctx context.Context, rows int64) (sample, error) {
	conn, err := pgx.Connect(ctx, p.cl.DSN(""))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	for _, q := range []string{"DROP TABLE IF EXISTS " + ceilingTable, createTableSQL(ceilingTable, p.cols, quotePG)} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	t := time.Now()
	tag, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(p.copy), "COPY "+ceilingTable+" ("+columns+") FROM STDIN")
	if err != nil {
		return nil, fmt.Errorf("copy from: %w", err)
	}
	d := time.Since(t)
	if tag.RowsAffected() != rows {
		return nil, fmt.Errorf("copy from: %d rows, want %d", tag.RowsAffected(), rows)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE "+ceilingTable); err != nil {
		return nil, err
	}
	return sample{"rows_per_s": float64(rows) / d.Seconds(), "seconds": d.Seconds()}, nil
}

// scanColumns reads (name, type, not null) rows.
func scanColumns(rows *sql.Rows) ([]storeColumn, error) {
	defer rows.Close()
	var out []storeColumn
	for rows.Next() {
		var c storeColumn
		if err := rows.Scan(&c.name, &c.typ, &c.notNull); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("table %s has no columns", readModel)
	}
	return out, nil
}

// sqliteStore is a SQLite read model: a file, removed before each run.
type sqliteStore struct {
	dir  string
	sdb  *sql.DB
	cols []storeColumn
	rows [][]any
}

func (*sqliteStore) name() string { return "sqlite" }

// sqlitePragmas are the sink's own (sink/dialect.go), for the ceiling's
// file too.
const sqlitePragmas = "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"

func (s *sqliteStore) path() string { return filepath.Join(s.dir, "read.db") }

func (s *sqliteStore) start(_ context.Context, h *harness) error {
	var err error
	if s.dir, err = h.dir("rebuild-sqlite-store"); err != nil {
		return err
	}
	s.sdb, err = sql.Open("sqlite", "file:"+s.path()+sqlitePragmas)
	return err
}

func (s *sqliteStore) url() string { return "sqlite://" + s.path() }
func (s *sqliteStore) db() *sql.DB { return s.sdb }

func (s *sqliteStore) close() error {
	if s.sdb == nil {
		return nil
	}
	return s.sdb.Close()
}

func removeSQLite(path string) error {
	var errs []error
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reset starts from a new file: a dropped table would leave its pages on
// the file's free list for the next run to reuse.
func (s *sqliteStore) reset(context.Context) error {
	if err := s.sdb.Close(); err != nil {
		return err
	}
	if err := removeSQLite(s.path()); err != nil {
		return err
	}
	var err error
	s.sdb, err = sql.Open("sqlite", "file:"+s.path()+sqlitePragmas)
	return err
}

func (s *sqliteStore) capture(ctx context.Context) error {
	rows, err := s.sdb.QueryContext(ctx, `SELECT name, type, "notnull" FROM pragma_table_info(?) ORDER BY cid`, readModel)
	if err != nil {
		return err
	}
	if s.cols, err = scanColumns(rows); err != nil {
		return err
	}
	s.rows, err = selectRows(ctx, s.sdb)
	return err
}

// ceiling: prepared INSERTs of the captured rows in one transaction, into
// a new file.
func (s *sqliteStore) ceiling(ctx context.Context, rows int64) (sample, error) {
	path := filepath.Join(s.dir, "ceiling.db")
	if err := removeSQLite(path); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", "file:"+path+sqlitePragmas)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	defer removeSQLite(path)
	if _, err := db.ExecContext(ctx, createTableSQL(ceilingTable, s.cols, quotePG)); err != nil {
		return nil, err
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(readModelColumns)), ", ")
	t := time.Now()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+ceilingTable+" ("+columns+") VALUES ("+marks+")")
	if err != nil {
		return nil, err
	}
	for _, r := range s.rows {
		if _, err := stmt.ExecContext(ctx, r...); err != nil {
			return nil, err
		}
	}
	if err := errors.Join(stmt.Close(), tx.Commit()); err != nil {
		return nil, err
	}
	d := time.Since(t)
	if int64(len(s.rows)) != rows {
		return nil, fmt.Errorf("inserted %d rows, want %d", len(s.rows), rows)
	}
	return sample{"rows_per_s": float64(rows) / d.Seconds(), "seconds": d.Seconds()}, nil
}

// mysqlStore is a MariaDB/MySQL read model: a database of its own on the
// server at mysqlAddr, dropped and created again before each run.
type mysqlStore struct {
	database string
	sdb      *sql.DB
	cols     []storeColumn
	rows     [][]any
	tsv      []byte // the rows as LOAD DATA's default format
}

// mysqlAddr is the server the MySQL benchmarks use, as the tests do.
const mysqlAddr = "127.0.0.1:3306"

func (*mysqlStore) name() string { return "mysql" }

// mysqlConfig is the connection the sink makes (sink/dialect.go): UTC,
// DATETIME as time.Time.
func (m *mysqlStore) mysqlConfig(database string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", mysqlAddr, database
	cfg.ParseTime, cfg.Loc = true, time.UTC
	return cfg
}

func (m *mysqlStore) open(database string, tune func(*mysql.Config)) (*sql.DB, error) {
	cfg := m.mysqlConfig(database)
	if tune != nil {
		tune(cfg)
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

func (m *mysqlStore) start(ctx context.Context, _ *harness) error {
	m.database = fmt.Sprintf("replicator_bench_%d", os.Getpid())
	return m.reset(ctx)
}

func (m *mysqlStore) reset(ctx context.Context) error {
	if m.sdb != nil {
		if err := m.sdb.Close(); err != nil {
			return err
		}
		m.sdb = nil
	}
	admin, err := m.open("", nil)
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + quoteMySQL(m.database), "CREATE DATABASE " + quoteMySQL(m.database)} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s (is MariaDB running on %s? the tests need it too): %w", q, mysqlAddr, err)
		}
	}
	m.sdb, err = m.open(m.database, nil)
	return err
}

func (m *mysqlStore) url() string { return "mysql://root@" + mysqlAddr + "/" + m.database }
func (m *mysqlStore) db() *sql.DB { return m.sdb }

func (m *mysqlStore) close() error {
	if m.sdb == nil {
		return nil
	}
	_, err := m.sdb.Exec("DROP DATABASE IF EXISTS " + quoteMySQL(m.database))
	return errors.Join(err, m.sdb.Close())
}

func (m *mysqlStore) capture(ctx context.Context) error {
	rows, err := m.sdb.QueryContext(ctx, `SELECT column_name, column_type, is_nullable = 'NO' FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position`, readModel)
	if err != nil {
		return err
	}
	if m.cols, err = scanColumns(rows); err != nil {
		return err
	}
	if m.rows, err = selectRows(ctx, m.sdb); err != nil {
		return err
	}
	var b bytes.Buffer
	for _, r := range m.rows {
		for i, v := range r {
			if i > 0 {
				b.WriteByte('\t')
			}
			if err := writeTSV(&b, v); err != nil {
				return err
			}
		}
		b.WriteByte('\n')
	}
	m.tsv = b.Bytes()
	return nil
}

// writeTSV writes v as a field of LOAD DATA's default format (tab
// separated, backslash escapes, \N for NULL).
func writeTSV(b *bytes.Buffer, v any) error {
	var s string
	switch v := v.(type) {
	case nil:
		b.WriteString(`\N`)
		return nil
	case []byte:
		s = string(v)
	case string:
		s = v
	case int64:
		s = fmt.Sprint(v)
	case float64:
		s = fmt.Sprint(v)
	case time.Time:
		s = v.UTC().Format("2006-01-02 15:04:05.999999")
	default:
		return fmt.Errorf("LOAD DATA of a %T", v)
	}
	b.WriteString(strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`).Replace(s))
	return nil
}

// ceiling: both bulk loads MariaDB has, each into a new table: LOAD DATA
// LOCAL INFILE of the rows as text, and multi-row INSERTs of 1,000 rows
// (parameters interpolated by the client, so one round trip each) in one
// transaction. The faster is the ceiling; both are reported.
func (m *mysqlStore) ceiling(ctx context.Context, rows int64) (sample, error) {
	if int64(len(m.rows)) != rows {
		return nil, fmt.Errorf("captured %d rows, want %d", len(m.rows), rows)
	}
	load, err := m.timed(ctx, rows, m.loadData)
	if err != nil {
		return nil, fmt.Errorf("load data: %w", err)
	}
	insert, err := m.timed(ctx, rows, m.insertRows)
	if err != nil {
		return nil, fmt.Errorf("multi-row insert: %w", err)
	}
	best := min(load, insert)
	return sample{"rows_per_s": float64(rows) / best.Seconds(), "seconds": best.Seconds(),
		"load_data_rows_per_s": float64(rows) / load.Seconds(), "insert_rows_per_s": float64(rows) / insert.Seconds()}, nil
}

// timed creates the ceiling table, times load into it, checks it holds
// rows rows and drops it.
func (m *mysqlStore) timed(ctx context.Context, rows int64, load func(context.Context, *sql.DB) error) (time.Duration, error) {
	db, err := m.open(m.database, func(c *mysql.Config) { c.InterpolateParams = true })
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{"DROP TABLE IF EXISTS " + ceilingTable, createTableSQL(ceilingTable, m.cols, quoteMySQL)} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("%s: %w", q, err)
		}
	}
	settle()
	t := time.Now()
	if err := load(ctx, db); err != nil {
		return 0, err
	}
	d := time.Since(t)
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+ceilingTable).Scan(&n); err != nil {
		return 0, err
	}
	if n != rows {
		return 0, fmt.Errorf("%s holds %d rows, want %d", ceilingTable, n, rows)
	}
	_, err = db.ExecContext(ctx, "DROP TABLE "+ceilingTable)
	return d, err
}

func (m *mysqlStore) loadData(ctx context.Context, db *sql.DB) error {
	name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	mysql.RegisterReaderHandler(name, func() io.Reader { return bytes.NewReader(m.tsv) })
	defer mysql.DeregisterReaderHandler(name)
	_, err := db.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::"+name+"' INTO TABLE "+ceilingTable+" ("+columns+")")
	return err
}

func (m *mysqlStore) insertRows(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(readModelColumns)), ", ") + ")"
	const per = 1000
	for start := 0; start < len(m.rows); start += per {
		part := m.rows[start:min(len(m.rows), start+per)]
		args := make([]any, 0, len(part)*len(readModelColumns))
		for _, r := range part {
			args = append(args, r...)
		}
		q := "INSERT INTO " + ceilingTable + " (" + columns + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+", ", len(part)), ", ")
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}
