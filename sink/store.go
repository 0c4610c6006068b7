package sink

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The sink's own tables, in the read-model database beside the read
// models: the consumed offsets (written in the same transaction as the
// rows) and the side table of non-owner sources (docs/ARCHITECTURE.md, "The
// sink").
const (
	offsetsTable = "replicator_sink_offsets"
	sideTable    = "replicator_sink_side"
	// failuresTable (failure.go) is the third.
)

// errFenced is returned by a batch whose offsets were moved by another sink
// process since this one read them: the batch is rolled back, and the
// offsets reloaded.
var errFenced = errors.New("the stored offsets moved since this batch began")

// store is a read-model database: one implementation over database/sql,
// with what differs per database in its dialect. Safe for concurrent use
// as *sql.DB is; a read model uses it from one goroutine.
type store struct {
	db *sql.DB
	d  dialect

	mu      sync.Mutex                   // protects pgTypes and stmts
	pgTypes map[string]map[string]string // table → column → SQL type, PostgreSQL only
	// stmts are the texts of the multi-row upserts built so far: the
	// steady state's batches repeat a few sizes, and building one is a
	// marker per value (upsertRows).
	stmts map[stmtKey]string

	// The batch transaction of begin (pg too on PostgreSQL, with its
	// connection, for COPY: copy.go), the temporary tables it has filled,
	// and its offsets' compare-and-set waiting for the first statements
	// on the read model's table (foldCAS); set between begin and end, by
	// the read model's one goroutine.
	txConn *sql.Conn
	tx     batchTx
	pg     *pgTx
	copied map[string]bool
	cas    *pendingCAS
	// copyText is the COPY text of the batch being written, kept between
	// batches so that it grows once, not in every batch; nil after a COPY
	// whose reader may still run (copyFrom), a new one is made then.
	copyText *bytes.Buffer
	// skipDirect is, per table, how many more batches go through the
	// temporary table before a direct COPY is tried again (copy.go).
	skipDirect map[string]int
	// statementBelow makes PostgreSQL batches of fewer rows go through
	// the multi-row statement instead of COPY (tests of that form; 0, the
	// sink's own setting: every batch through COPY, see upsertRows)
	statementBelow int
}

// tp is a topic partition.
type tp struct {
	topic string
	part  int32
}

// ensureSinkTables creates the offsets, side and failures tables when
// missing. Read
// models sharing a database start side by side, and CREATE … IF NOT EXISTS
// is not safe against a concurrent creation (PostgreSQL fails on its
// catalog's unique index, MySQL on a duplicate index): a failed attempt is
// retried, and the retry finds the tables there.
func (s *store) ensureSinkTables(ctx context.Context) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		if err = s.createSinkTables(ctx); err == nil {
			return nil
		}
		// The other creator's transaction may not have committed yet.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	return err
}

func (s *store) createSinkTables(ctx context.Context) error {
	q, key := s.d.quote, s.d.textKeyType
	stmts := []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (read_model %s NOT NULL, topic %s NOT NULL, part INTEGER NOT NULL,
			next_offset BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (read_model, topic, part))`,
			q(offsetsTable), key(modelNameLen), key(249)),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (read_model %s NOT NULL, topic %s NOT NULL, topic_key %s NOT NULL,
			row_key %s NOT NULL, seq BIGINT NOT NULL, key_bytes %s, value_bytes %s NOT NULL,
			PRIMARY KEY (read_model, topic, topic_key))`,
			q(sideTable), key(modelNameLen), key(249), key(64), key(64), s.d.blobType(), s.d.blobType()),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (read_model %s NOT NULL, failed_at BIGINT NOT NULL, %s %s NOT NULL,
			PRIMARY KEY (read_model))`,
			q(failuresTable), key(modelNameLen), q("error"), s.d.textType()),
	}
	for _, st := range stmts {
		if _, err := s.db.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("create the sink's tables: %w", err)
		}
	}
	// The row lookup of the side table. MySQL has no CREATE INDEX IF NOT
	// EXISTS before 8.0.29 (MariaDB has), so look first.
	idx := sideTable + "_row"
	var exists bool
	switch s.d.(type) {
	case mysqlDialect:
		var n int
		err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.statistics
			WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?`, sideTable, idx).Scan(&n)
		if err != nil {
			return fmt.Errorf("look up index %s: %w", idx, err)
		}
		exists = n > 0
	}
	if !exists {
		ine := "IF NOT EXISTS "
		if _, ok := s.d.(mysqlDialect); ok {
			ine = ""
		}
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`CREATE INDEX %s%s ON %s (read_model, row_key)`, ine, q(idx), q(sideTable))); err != nil {
			return fmt.Errorf("create index %s: %w", idx, err)
		}
	}
	return nil
}

// binaryNames moves the MySQL sink tables' name and hash columns made by
// versions before 2026-12-07 to utf8mb4_bin: in the database's default
// collation two read models whose names differ only in case shared their
// offset rows. A case-insensitive key held no two such rows (the names and
// hashes hold no trailing spaces, which utf8mb4_bin ignores), so the binary
// one takes the rows as they are. Once: afterwards none is listed.
//
// It never stops a start: the tables work as they are for names that do
// not differ only in case. What it could not do (the ALTER privilege
// missing, another read model's batch holding the table past a few
// seconds: an ALTER waiting for its lock would queue every read model's
// statements on the table behind it) is returned as warnings, with the
// statements to run by hand. One ALTER per table: a collation change
// copies the table.
func (s *store) binaryNames(ctx context.Context) (warnings []string) {
	if _, ok := s.d.(mysqlDialect); !ok {
		return nil
	}
	warn := func(what string, err error, stmts ...string) []string {
		w := fmt.Sprintf("the sink's tables: %s: %v; names of read models that differ only in case share their offsets until then", what, err)
		if len(stmts) > 0 {
			w += "; run: " + strings.Join(stmts, "; ")
		}
		return append(warnings, w)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return warn("read their collations", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT table_name, column_name, character_maximum_length FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name IN (?, ?, ?) AND data_type = 'varchar' AND collation_name <> 'utf8mb4_bin'
		ORDER BY table_name, ordinal_position`, offsetsTable, sideTable, failuresTable)
	if err != nil {
		return warn("read their collations", err)
	}
	var tables []string
	modify := map[string][]string{}
	for rows.Next() {
		var table, col string
		var n int
		if err := rows.Scan(&table, &col, &n); err != nil {
			rows.Close()
			return warn("read their collations", err)
		}
		if modify[table] == nil {
			tables = append(tables, table)
		}
		modify[table] = append(modify[table], fmt.Sprintf("MODIFY %s %s NOT NULL", s.d.quote(col), s.d.textKeyType(n)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return warn("read their collations", err)
	}
	if len(tables) == 0 {
		return nil
	}
	stmts := make([]string, len(tables))
	for i, t := range tables {
		stmts[i] = fmt.Sprintf("ALTER TABLE %s %s", s.d.quote(t), strings.Join(modify[t], ", "))
	}
	if _, err := conn.ExecContext(ctx, "SET SESSION lock_wait_timeout = 5"); err != nil {
		return warn("bound the wait for their locks", err, stmts...)
	}
	defer conn.Raw(func(any) error { return driver.ErrBadConn }) // the session's setting goes with it
	for i, stmt := range stmts {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return warn("make the read-model names compare as bytes (utf8mb4_bin)", err, stmts[i:]...)
		}
	}
	return nil
}

// ensureTable creates the read-model table from the plan when missing; an
// existing one must fit it (fitTable: it may have more columns); notes are
// the fit check's caveats on an existing table (a bounded type).
func (s *store) ensureTable(ctx context.Context, p *plan) (created bool, notes []string, err error) {
	have, err := s.d.columns(ctx, s.db, p.model.Table)
	if err != nil {
		return false, nil, fmt.Errorf("read the columns of table %s: %w", s.d.quote(p.model.Table), err)
	}
	if have != nil {
		desc, err := s.d.describe(ctx, s.db, p.model.Table)
		if err != nil {
			return false, nil, fmt.Errorf("read the columns and keys of table %s: %w", s.d.quote(p.model.Table), err)
		}
		if desc == nil {
			return false, nil, fmt.Errorf("table %s: the catalog lists its columns but describes none", s.d.quote(p.model.Table))
		}
		notes, problems := fitTable(s.d, p, desc)
		return false, notes, errors.Join(problems...)
	}
	keyCollation := ""
	if _, ok := s.d.(mysqlDialect); ok {
		if keyCollation, err = mysqlKeyCollation(ctx, s.db); err != nil {
			return false, nil, fmt.Errorf("create table %s: %w", s.d.quote(p.model.Table), err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (", s.d.quote(p.model.Table))
	for i, c := range p.columns {
		if i > 0 {
			b.WriteString(", ")
		}
		typ := c.override
		if typ == "" {
			typ = s.d.sqlType(c.typ, c.source < 0)
			if keyCollation != "" && c.source < 0 && strings.HasPrefix(typ, "varchar(") {
				typ += " CHARACTER SET utf8mb4 COLLATE " + keyCollation
			}
		} else if keyCollation != "" && c.source < 0 {
			typ = mysqlKeyType(typ, keyCollation)
		}
		b.WriteString(s.d.quote(c.name) + " " + typ)
		if c.source < 0 {
			b.WriteString(" NOT NULL")
		}
	}
	fmt.Fprintf(&b, ", PRIMARY KEY (%s))", quoteList(s.d, p.model.Key))
	if _, err := s.db.ExecContext(ctx, b.String()); err != nil {
		// Another process of the read model may have created it just now.
		if have, cerr := s.d.columns(ctx, s.db, p.model.Table); cerr == nil && have != nil {
			return s.ensureTable(ctx, p)
		}
		return false, nil, fmt.Errorf("create table %s: %w", s.d.quote(p.model.Table), err)
	}
	return true, nil, nil
}

// lostTable is the error of a read model whose table is missing while
// offsets are stored for it (dropped by hand, or to have the sink create
// it anew): a table created now would start at those offsets and lack
// every row applied before them, while status showed it caught up. Nil
// when the table exists or no offset is stored (a first start).
func (s *store) lostTable(ctx context.Context, model, table string) error {
	have, err := s.d.columns(ctx, s.db, table)
	if err != nil {
		return fmt.Errorf("read the columns of table %s: %w", s.d.quote(table), err)
	}
	if have != nil {
		return nil
	}
	if sink, err := s.d.columns(ctx, s.db, offsetsTable); err != nil || sink == nil {
		return err // no sink tables yet: a first start
	}
	stored, pending, err := s.loadOffsetsPending(ctx, model)
	if err != nil {
		return fmt.Errorf("read the stored offsets: %w", err)
	}
	if len(stored) == 0 || pending { // pending: a MySQL swap in progress brings the table
		return nil
	}
	return fmt.Errorf("table %s does not exist, but %s holds offsets of read model %s for %d partition(s): the records before them were applied to a table that is gone, and a table created now would lack their rows. Rebuild it: replicator rebuild --config <file> --read-model %s (it creates the table and reads the topics from the start); or start it over: DELETE FROM %s WHERE read_model = '%s'; DELETE FROM %s WHERE read_model = '%s'",
		s.d.quote(table), offsetsTable, model, len(stored), model, offsetsTable, model, sideTable, model)
}

// offsetRow is a stored position.
type offsetRow struct {
	next      int64
	updatedAt time.Time
}

// loadOffsets returns the read model's stored offsets, pending ones (a
// MySQL rebuild's swap in progress, rebuild_mysql.go) as they will be.
func (s *store) loadOffsets(ctx context.Context, model string) (map[tp]offsetRow, error) {
	out, _, err := s.loadOffsetsPending(ctx, model)
	return out, err
}

// loadOffsetsPending is loadOffsets, also reporting whether some were
// pending.
func (s *store) loadOffsetsPending(ctx context.Context, model string) (out map[tp]offsetRow, pending bool, err error) {
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT topic, part, next_offset, updated_at FROM %s WHERE read_model = %s`,
		s.d.quote(offsetsTable), s.d.param(1)), model)
	if err != nil {
		return nil, false, fmt.Errorf("read the stored offsets: %w", err)
	}
	defer rows.Close()
	out = map[tp]offsetRow{}
	for rows.Next() {
		var t tp
		var next, at int64
		if err := rows.Scan(&t.topic, &t.part, &next, &at); err != nil {
			return nil, false, fmt.Errorf("read the stored offsets: %w", err)
		}
		if next < 0 {
			pending = true
			if next == -1 { // pending: no position
				continue
			}
			next = -2 - next
		}
		out[t] = offsetRow{next: next, updatedAt: time.UnixMilli(at)}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read the stored offsets: %w", err)
	}
	return out, pending, nil
}

// casOffsets moves each partition's stored offset from expected (-1: no row
// yet) to next, failing with errFenced when one was not at expected; done
// already when a PostgreSQL batch's COPY sent it (foldCAS).
func (s *store) casOffsets(ctx context.Context, tx batchTx, model string, expected, next map[tp]int64) error {
	if c := s.cas; c != nil {
		s.cas = nil
		if c.sent {
			return nil // and checked: a fence failed the batch's write
		}
	}
	now := time.Now().UnixMilli()
	p := s.d.param
	upd := fmt.Sprintf(`UPDATE %s SET next_offset = %s, updated_at = %s WHERE read_model = %s AND topic = %s AND part = %s AND next_offset = %s`,
		s.d.quote(offsetsTable), p(1), p(2), p(3), p(4), p(5), p(6))
	ins := fmt.Sprintf(`INSERT INTO %s (read_model, topic, part, next_offset, updated_at) VALUES (%s, %s, %s, %s, %s)`,
		s.d.quote(offsetsTable), p(1), p(2), p(3), p(4), p(5))
	_, onePG := s.d.(postgresDialect)
	var moves []tp // the partitions PostgreSQL moves in one statement
	for t, n := range next {
		e, ok := expected[t]
		if !ok {
			return fmt.Errorf("%w (partition %s/%d is no longer assigned)", errFenced, t.topic, t.part)
		}
		if e >= 0 && onePG {
			moves = append(moves, t)
			continue
		}
		if e < 0 {
			if _, err := tx.ExecContext(ctx, ins, model, t.topic, t.part, n, now); err != nil {
				if isTransient(err) {
					// The store went away, not another process: a fence
					// would reload and let a batch decoded ahead (a
					// rebuild's) be applied past this one.
					return fmt.Errorf("store the first offset of %s/%d: %w", t.topic, t.part, err)
				}
				// A row inserted by another process meanwhile is a
				// fence; anything else shows again at the reload.
				return fmt.Errorf("%w (insert of partition %s/%d: %v)", errFenced, t.topic, t.part, err)
			}
			continue
		}
		res, err := tx.ExecContext(ctx, upd, n, now, model, t.topic, t.part, e)
		if err != nil {
			return fmt.Errorf("store offset of %s/%d: %w", t.topic, t.part, err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store offset of %s/%d: %w", t.topic, t.part, err)
		} else if k != 1 {
			return fmt.Errorf("%w (partition %s/%d is no longer at offset %d)", errFenced, t.topic, t.part, e)
		}
	}
	if len(moves) > 0 {
		return s.casOffsetsPG(ctx, tx, model, now, moves, expected, next)
	}
	return nil
}

// casOffsetsPG moves the stored offsets of partitions (each with a row
// already) from expected to next in one statement: one round trip per
// batch, not one per partition (a batch of the steady state spans most of
// a topic's partitions). Those it did not move (RETURNING names the
// others) were not at expected: a fence.
func (s *store) casOffsetsPG(ctx context.Context, tx batchTx, model string, now int64, parts []tp, expected, next map[tp]int64) error {
	topics, nums := make([]string, len(parts)), make([]int32, len(parts))
	exp, nxt := make([]int64, len(parts)), make([]int64, len(parts))
	for i, t := range parts {
		topics[i], nums[i], exp[i], nxt[i] = t.topic, t.part, expected[t], next[t]
	}
	rows, err := tx.QueryContext(ctx, fmt.Sprintf(`UPDATE %s AS o SET next_offset = v.next_offset, updated_at = $2
		FROM unnest($3::text[], $4::integer[], $5::bigint[], $6::bigint[]) AS v(topic, part, expected, next_offset)
		WHERE o.read_model = $1 AND o.topic = v.topic AND o.part = v.part AND o.next_offset = v.expected
		RETURNING o.topic, o.part`, s.d.quote(offsetsTable)), model, now, topics, nums, exp, nxt)
	if err != nil {
		return fmt.Errorf("store the offsets of %d partitions: %w", len(parts), err)
	}
	defer rows.Close()
	moved := make(map[tp]bool, len(parts))
	for rows.Next() {
		var t tp
		if err := rows.Scan(&t.topic, &t.part); err != nil {
			return fmt.Errorf("store the offsets of %d partitions: %w", len(parts), err)
		}
		moved[t] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store the offsets of %d partitions: %w", len(parts), err)
	}
	for _, t := range parts {
		if !moved[t] {
			return fmt.Errorf("%w (partition %s/%d is no longer at offset %d)", errFenced, t.topic, t.part, expected[t])
		}
	}
	return nil
}

// pendingCAS is the offsets' compare-and-set of a PostgreSQL batch, one
// statement of literals, waiting to be sent in the round trip of the
// batch's first statements on the read model's table (upsertCopy): after
// their lock, in the order a batch takes its locks (side table, read-model
// table, offsets rows; trySwap takes them in the same order), and a round
// trip less than a statement of its own. One that no COPY sent is sent by
// casOffsets as before.
type pendingCAS struct {
	table    string // the read model's table
	sql      string
	parts    []tp
	expected map[tp]int64
	sent     bool
}

// foldCAS prepares a PostgreSQL batch's compare-and-set (casOffsets) for
// upsertCopy to send when every partition of next has a stored row; else
// (a partition's first offset is inserted) casOffsets does all of it.
func (s *store) foldCAS(table, model string, expected, next map[tp]int64) {
	s.cas = nil
	if s.pg == nil || len(next) == 0 {
		return
	}
	c := &pendingCAS{table: table, expected: expected}
	var b strings.Builder
	fmt.Fprintf(&b, `UPDATE %s AS o SET next_offset = v.next_offset, updated_at = %d FROM (VALUES `, s.d.quote(offsetsTable), time.Now().UnixMilli())
	for t, n := range next {
		e, ok := expected[t]
		if !ok || e < 0 {
			return
		}
		if len(c.parts) > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s::text, %d::integer, %d::bigint, %d::bigint)", pgLiteral(t.topic), t.part, e, n)
		c.parts = append(c.parts, t)
	}
	fmt.Fprintf(&b, `) AS v(topic, part, expected, next_offset)
		WHERE o.read_model = %s AND o.topic = v.topic AND o.part = v.part AND o.next_offset = v.expected
		RETURNING o.topic, o.part`, pgLiteral(model))
	c.sql = b.String()
	s.cas = c
}

// takeCAS returns the compare-and-set waiting for table's statements,
// marked sent; nil when none waits.
func (s *store) takeCAS(table string) *pendingCAS {
	c := s.cas
	if c == nil || c.sent || c.table != table {
		return nil
	}
	c.sent = true
	return c
}

// check reads the partitions the compare-and-set moved (its RETURNING):
// one it did not move was not at its expected offset, a fence.
func (c *pendingCAS) check(r *pgconn.Result) error {
	moved := make(map[tp]bool, len(r.Rows))
	for _, row := range r.Rows {
		n, err := strconv.ParseInt(string(row[1]), 10, 32)
		if err != nil {
			return fmt.Errorf("store the offsets of %d partitions: partition %q: %w", len(c.parts), row[1], err)
		}
		moved[tp{string(row[0]), int32(n)}] = true
	}
	for _, t := range c.parts {
		if !moved[t] {
			return fmt.Errorf("%w (partition %s/%d is no longer at offset %d)", errFenced, t.topic, t.part, c.expected[t])
		}
	}
	return nil
}

// pgLiteral is s as a PostgreSQL string literal, whatever
// standard_conforming_strings says.
func pgLiteral(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, "'", "''").Replace(s) + "'"
}

// stmtKey names a multi-row upsert's text: its head and tail, and rows.
type stmtKey struct {
	head, tail string
	rows       int
}

// maxStmtTexts bounds the upsert texts kept (a few KiB each, up to a few
// tens at 500 rows of many columns): past it they are built again.
const maxStmtTexts = 64

// chunk is how many rows of width columns fit in one statement.
func (s *store) chunk(width int) int {
	n := s.d.maxParams() / max(width, 1)
	return max(1, min(n, 500))
}

// upsertRows writes rows (cols[:nkey] the key) in multi-row INSERTs that
// update every non-key column on conflict.
func (s *store) upsertRows(ctx context.Context, tx batchTx, table string, cols []string, nkey int, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	tail := s.d.onConflict(cols[:nkey], cols[nkey:])
	// On PostgreSQL every batch goes through COPY, small ones included:
	// the multi-row statement took fewer round trips for the steady
	// state's small batches, but more of the sink's CPU (parameters
	// encoded), showed no better latency on a quiet machine (p99 157 ms
	// against 166 ms, bench/analysis.md), and its prepared statements
	// keep the parameter types of their preparation, so a column's type
	// altered under a running sink went through the old type silently,
	// where COPY follows the type (TestUpsertCopyColumnTypeAltered).
	if _, ok := s.d.(postgresDialect); ok && len(rows) >= s.statementBelow {
		done, err := s.upsertCopy(ctx, tx, table, cols, tail, rows)
		if done || err != nil {
			return err
		}
		done, err = s.upsertUnnest(ctx, tx, table, cols, tail, rows)
		if done || err != nil {
			return err
		}
	}
	head := fmt.Sprintf("INSERT INTO %s (%s) VALUES ", s.d.quote(table), quoteList(s.d, cols))
	text := func(n int) string {
		k := stmtKey{head, tail, n}
		s.mu.Lock()
		defer s.mu.Unlock()
		if t, ok := s.stmts[k]; ok {
			return t
		}
		var b strings.Builder
		b.WriteString(head)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j := range cols {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(s.d.param(i*len(cols) + j + 1))
			}
			b.WriteByte(')')
		}
		b.WriteString(tail)
		if len(s.stmts) >= maxStmtTexts || s.stmts == nil {
			s.stmts = map[stmtKey]string{}
		}
		s.stmts[k] = b.String()
		return s.stmts[k]
	}
	step := s.chunk(len(cols))
	// Every full chunk is the same statement: prepared once per batch,
	// not parsed (SQLite) or prepared and closed (MySQL) per chunk.
	var full *sql.Stmt
	if len(rows) >= 2*step {
		var err error
		if full, err = tx.PrepareContext(ctx, text(step)); err != nil {
			return err
		}
		defer full.Close()
	}
	args := make([]any, 0, step*len(cols))
	for start := 0; start < len(rows); start += step {
		part := rows[start:min(len(rows), start+step)]
		args = args[:0]
		for _, r := range part {
			args = append(args, r...)
		}
		var err error
		if full != nil && len(part) == step {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, text(len(part)), args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// upsertEncoded is upsertRows of rows some of which were encoded ahead
// as COPY lines (lines[i] not nil, rows[i] nil) for the column types
// lineTypes: through COPY when the table's types are those still, else
// after expand has converted each such row i to driver values.
func (s *store) upsertEncoded(ctx context.Context, tx batchTx, table string, cols []string, nkey int, rows [][]any, lines [][]byte, lineTypes []string, expand func(i int) ([]any, error)) error {
	if _, ok := s.d.(postgresDialect); ok && len(rows) >= s.statementBelow && len(rows) > 0 {
		tail := s.d.onConflict(cols[:nkey], cols[nkey:])
		done, err := s.upsertCopyOf(ctx, tx, table, cols, tail, &copyRows{rows: rows, lines: lines, lineTypes: lineTypes})
		if done || err != nil {
			return err
		}
	}
	for i, l := range lines {
		if l == nil {
			continue
		}
		r, err := expand(i)
		if err != nil {
			return err
		}
		rows[i] = r
	}
	return s.upsertRows(ctx, tx, table, cols, nkey, rows)
}

// upsertUnnest is PostgreSQL's bulk upsert: one array parameter per
// column, unnested into rows, so a batch is one statement of len(cols)
// parameters whatever its size, and PostgreSQL plans it once (no text of
// 500 × width markers to build, send and parse). Not done (false) when a
// column is itself an array: unnest would flatten it.
func (s *store) upsertUnnest(ctx context.Context, tx batchTx, table string, cols []string, tail string, rows [][]any) (bool, error) {
	types, err := s.pgColumnTypes(ctx, tx, table, cols)
	if err != nil {
		return false, err
	}
	for _, t := range types {
		if strings.HasSuffix(t, "]") {
			return false, nil
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) SELECT * FROM unnest(", s.d.quote(table), quoteList(s.d, cols))
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "CAST(%s AS %s[])", s.d.param(i+1), t)
	}
	b.WriteString(")")
	b.WriteString(tail)
	args := make([]any, len(cols))
	for j := range cols {
		col := make([]any, len(rows))
		for i, r := range rows {
			col[i] = r[j]
		}
		args[j] = col
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		return false, err
	}
	return true, nil
}

// keyMatch is "(k1, k2) IN ((…), (…))" for n keys, parameters from first.
func (s *store) keyMatch(keyCols []string, n, first int) string {
	var b strings.Builder
	if len(keyCols) == 1 {
		b.WriteString(s.d.quote(keyCols[0]) + " IN (")
	} else {
		b.WriteString("(" + quoteList(s.d, keyCols) + ") IN (")
		if _, ok := s.d.(sqliteDialect); ok {
			b.WriteString("VALUES ") // SQLite takes row values from VALUES only
		}
	}
	p := first
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		if len(keyCols) > 1 {
			b.WriteByte('(')
		}
		for j := range keyCols {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(s.d.param(p))
			p++
		}
		if len(keyCols) > 1 {
			b.WriteByte(')')
		}
	}
	b.WriteByte(')')
	return b.String()
}

// deleteRows deletes the rows of keys in multi-row statements.
func (s *store) deleteRows(ctx context.Context, tx batchTx, table string, keyCols []string, keys [][]any) error {
	step := s.chunk(len(keyCols))
	for start := 0; start < len(keys); start += step {
		part := keys[start:min(len(keys), start+step)]
		args := make([]any, 0, len(part)*len(keyCols))
		for _, k := range part {
			args = append(args, k...)
		}
		q := fmt.Sprintf("DELETE FROM %s WHERE %s", s.d.quote(table), s.keyMatch(keyCols, len(part), 1))
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

// updateRows sets cols of existing rows only (rows are set values then key
// values): one UPDATE joined to the batch's rows per statement, never a
// round trip per row. Rows without a table row are left out, as a plain
// UPDATE … WHERE key would.
func (s *store) updateRows(ctx context.Context, tx batchTx, table string, keyCols, cols []string, rows [][]any) error {
	if len(rows) == 0 || len(cols) == 0 {
		return nil
	}
	all := append(append([]string{}, cols...), keyCols...)
	var types []string
	if _, ok := s.d.(postgresDialect); ok {
		// VALUES parameters have no type of their own in PostgreSQL (they
		// would be text, and text = bigint fails): each is cast to its
		// column's type, read from the catalog.
		var err error
		if types, err = s.pgColumnTypes(ctx, tx, table, all); err != nil {
			return err
		}
	}
	step := s.chunk(len(all))
	for start := 0; start < len(rows); start += step {
		part := rows[start:min(len(rows), start+step)]
		args := make([]any, 0, len(part)*len(all))
		for _, r := range part {
			args = append(args, r...)
		}
		if _, err := tx.ExecContext(ctx, s.updateJoin(table, keyCols, cols, types, len(part)), args...); err != nil {
			return err
		}
	}
	return nil
}

// updateJoin is the statement updating cols of n rows' keys from a derived
// table v of the rows (cols then keyCols, parameters in that order).
func (s *store) updateJoin(table string, keyCols, cols, types []string, n int) string {
	q := s.d.quote
	all := append(append([]string{}, cols...), keyCols...)
	// vcol names v's i-th column: SQLite's VALUES columns are column1…,
	// PostgreSQL's and MySQL's are named by the alias list / AS.
	vcol := func(i int) string { return "v." + q(all[i]) }
	var b strings.Builder
	p := 0
	switch s.d.(type) {
	case mysqlDialect:
		// MySQL 5.7 and MariaDB before 10.3 have no VALUES table
		// constructor: the rows are a UNION ALL of SELECTs.
		fmt.Fprintf(&b, "UPDATE %s AS t JOIN (", q(table))
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(" UNION ALL ")
			}
			b.WriteString("SELECT ")
			for j := range all {
				if j > 0 {
					b.WriteString(", ")
				}
				p++
				b.WriteString(s.d.param(p))
				if i == 0 {
					b.WriteString(" AS " + q(all[j]))
				}
			}
		}
		b.WriteString(") AS v ON ")
		for j, k := range keyCols {
			if j > 0 {
				b.WriteString(" AND ")
			}
			fmt.Fprintf(&b, "t.%s = %s", q(k), vcol(len(cols)+j))
		}
		b.WriteString(" SET ")
		for j, c := range cols {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "t.%s = %s", q(c), vcol(j))
		}
		return b.String()
	case sqliteDialect:
		vcol = func(i int) string { return fmt.Sprintf("v.column%d", i+1) }
	}
	fmt.Fprintf(&b, "UPDATE %s SET ", q(table))
	for j, c := range cols {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s = %s", q(c), vcol(j))
	}
	b.WriteString(" FROM (VALUES ")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := range all {
			if j > 0 {
				b.WriteString(", ")
			}
			p++
			if types != nil {
				fmt.Fprintf(&b, "CAST(%s AS %s)", s.d.param(p), types[j])
			} else {
				b.WriteString(s.d.param(p))
			}
		}
		b.WriteByte(')')
	}
	b.WriteString(") AS v")
	if types != nil {
		b.WriteString(" (" + quoteList(s.d, all) + ")")
	}
	b.WriteString(" WHERE ")
	for j, k := range keyCols {
		if j > 0 {
			b.WriteString(" AND ")
		}
		fmt.Fprintf(&b, "%s.%s = %s", q(table), q(k), vcol(len(cols)+j))
	}
	return b.String()
}

// pgColumnTypes returns the types to cast cols of table's parameters to:
// the type without its modifier, as format_type names it (numeric,
// timestamp with time zone, integer[]); cached per table, and read again
// by every batch's COPY (upsertCopy): a column's type may be altered
// under a running sink.
func (s *store) pgColumnTypes(ctx context.Context, tx batchTx, table string, cols []string) ([]string, error) {
	s.mu.Lock()
	known := s.pgTypes[table]
	s.mu.Unlock()
	if known == nil {
		rows, err := tx.QueryContext(ctx, pgTypesQuery(s.d.quote(table)))
		if err != nil {
			return nil, fmt.Errorf("read the column types of table %s: %w", s.d.quote(table), err)
		}
		known = map[string]string{}
		for rows.Next() {
			var n, t string
			if err := rows.Scan(&n, &t); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read the column types of table %s: %w", s.d.quote(table), err)
			}
			known[n] = t
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read the column types of table %s: %w", s.d.quote(table), err)
		}
		s.cacheTypes(table, known)
	}
	return typesOf(s.d, table, known, cols)
}

// cachedTypes returns the types of cols as last read for table (the
// PostgreSQL COPY's cache), or nil when none were read yet or the store
// is not PostgreSQL. Safe while another goroutine writes a batch.
func (s *store) cachedTypes(table string, cols []string) []string {
	if _, ok := s.d.(postgresDialect); !ok {
		return nil
	}
	s.mu.Lock()
	known := s.pgTypes[table]
	s.mu.Unlock()
	types, err := typesOf(s.d, table, known, cols)
	if known == nil || err != nil {
		return nil
	}
	return types
}

// cacheTypes keeps table's column types as last read (pgColumnTypes'
// cache, which every COPY batch refreshes).
func (s *store) cacheTypes(table string, known map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pgTypes == nil {
		s.pgTypes = map[string]map[string]string{}
	}
	s.pgTypes[table] = known
}

// pgTypesQuery selects the name and type of each column of the table
// quoted (a literal in the query: it also runs in a simple-protocol
// round trip of several statements, copy.go).
//
// The type is the column's type without its modifier (character varying,
// not character varying(16)): an explicit cast to varchar(n), char(n) or
// bit(n) silently truncates, where the INSERT's own assignment refuses a
// value too long, so the record is isolated as poison instead of stored
// cut short. format_type without a modifier keeps the names COPY's text
// form goes by ("timestamp with time zone", copy.go) and arrays' "[]".
func pgTypesQuery(quoted string) string {
	return `SELECT a.attname, format_type(a.atttypid, NULL)
			FROM pg_attribute a
			WHERE a.attrelid = to_regclass('` + strings.ReplaceAll(quoted, "'", "''") + `') AND a.attnum > 0 AND NOT a.attisdropped`
}

// errNoColumn is returned when a read model's column is not in its table's
// catalog (dropped under a running sink): a table fault (isTableFault).
var errNoColumn = errors.New("a column is missing")

// typesOf returns the types of cols among known, table's column types.
func typesOf(d dialect, table string, known map[string]string, cols []string) ([]string, error) {
	out := make([]string, len(cols))
	for i, c := range cols {
		t, ok := known[c]
		if !ok {
			return nil, fmt.Errorf("%w: table %s has no column %s", errNoColumn, d.quote(table), d.quote(c))
		}
		out[i] = t
	}
	return out, nil
}

// sideRow is a non-owner source's latest record for one topic key.
type sideRow struct {
	topic    string
	topicKey string // hash of the decoded topic key
	rowKey   string // hash of the decoded row key
	seq      int64
	key      []byte // the framed key record
	value    []byte // the framed value record
}

// sideByTopicKey returns the side rows of topic's topic keys.
func (s *store) sideByTopicKey(ctx context.Context, tx batchTx, model, topic string, hashes []string) (map[string]sideRow, error) {
	out := map[string]sideRow{}
	err := s.sideQuery(ctx, tx, "topic = "+s.d.param(2)+" AND topic_key", []any{model, topic}, hashes, func(r sideRow) { out[r.topicKey] = r })
	return out, err
}

// sideByRowKey returns every side row mapping to one of the row keys.
func (s *store) sideByRowKey(ctx context.Context, tx batchTx, model string, hashes []string) ([]sideRow, error) {
	var out []sideRow
	err := s.sideQuery(ctx, tx, "row_key", []any{model}, hashes, func(r sideRow) { out = append(out, r) })
	return out, err
}

func (s *store) sideQuery(ctx context.Context, tx batchTx, match string, fixed []any, hashes []string, f func(sideRow)) error {
	step := s.chunk(1) - len(fixed)
	for start := 0; start < len(hashes); start += step {
		part := hashes[start:min(len(hashes), start+step)]
		args := append([]any{}, fixed...)
		marks := make([]string, len(part))
		for i, h := range part {
			args = append(args, h)
			marks[i] = s.d.param(len(args))
		}
		q := fmt.Sprintf("SELECT topic, topic_key, row_key, seq, key_bytes, value_bytes FROM %s WHERE read_model = %s AND %s IN (%s)",
			s.d.quote(sideTable), s.d.param(1), match, strings.Join(marks, ", "))
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("read the side table: %w", err)
		}
		for rows.Next() {
			var r sideRow
			if err := rows.Scan(&r.topic, &r.topicKey, &r.rowKey, &r.seq, &r.key, &r.value); err != nil {
				rows.Close()
				return fmt.Errorf("read the side table: %w", err)
			}
			f(r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("read the side table: %w", err)
		}
	}
	return nil
}

// putSide upserts side rows.
func (s *store) putSide(ctx context.Context, tx batchTx, model string, rows []sideRow) error {
	vals := make([][]any, len(rows))
	for i, r := range rows {
		vals[i] = []any{model, r.topic, r.topicKey, r.rowKey, r.seq, r.key, r.value}
	}
	return s.upsertRows(ctx, tx, sideTable, []string{"read_model", "topic", "topic_key", "row_key", "seq", "key_bytes", "value_bytes"}, 3, vals)
}

// deleteSide removes topic keys of topic from the side table.
func (s *store) deleteSide(ctx context.Context, tx batchTx, model, topic string, hashes []string) error {
	keys := make([][]any, len(hashes))
	for i, h := range hashes {
		keys[i] = []any{model, topic, h}
	}
	return s.deleteRows(ctx, tx, sideTable, []string{"read_model", "topic", "topic_key"}, keys)
}
