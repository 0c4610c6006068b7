package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL's bulk upsert of a batch larger than one statement takes
// (smaller ones are one multi-row INSERT, upsertRows: fewer round trips):
// the batch is sent with COPY … FROM STDIN (text
// format) into a temporary table of the target's columns, then moved with
// one INSERT … SELECT … ON CONFLICT. Measured against the unnest form
// (one array parameter per column) it needs no parameter encoding by pgx
// nor array decoding by the server, and it takes array columns, which
// unnest would flatten (docs/ARCHITECTURE.md, "The sink"; the figures in
// docs/bench-runs). COPY needs the driver's own connection, which
// database/sql hands out only through Conn.Raw: the batch's transaction
// therefore runs on a *sql.Conn the store holds while it lasts (begin).

// begin starts a batch's transaction. On PostgreSQL it is a [pgTx] on a
// connection of its own held until end, so that upsertCopy can reach the
// driver connection for COPY and send its statements in as few round trips
// as it can. The store is used by one goroutine.
func (s *store) begin(ctx context.Context) (batchTx, error) {
	if _, ok := s.d.(postgresDialect); !ok {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		s.tx = tx
		return tx, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	t := &pgTx{conn: conn}
	s.txConn, s.tx, s.pg, s.copied = conn, t, t, map[string]bool{}
	return t, nil
}

// end releases what begin held, once the transaction has ended: one still
// open is rolled back.
func (s *store) end() {
	if s.tx != nil {
		s.tx.Rollback() // ErrTxDone after a commit
	}
	if s.txConn != nil {
		s.txConn.Close() // back to the pool; one left in a transaction or broken is discarded (stdlib's ResetSession)
	}
	s.txConn, s.tx, s.pg, s.copied, s.cas = nil, nil, nil, nil, nil
}

// batchTx is a batch's transaction: a *sql.Tx, or a *pgTx on PostgreSQL.
type batchTx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	Commit() error
	Rollback() error
}

// pgTx is a PostgreSQL batch's transaction, run on its connection rather
// than through database/sql's Tx: its BEGIN is not a round trip of its own
// but sent with the batch's first statements (upsertCopy), or just before
// the first statement sent through database/sql; and the COPY of a batch
// through the temporary table waits (pending) to be sent with the COMMIT.
// A batch of the steady state is then two round trips (bench/analysis.md,
// "sinklat2"): BEGIN with the lock, the column types, the offsets'
// compare-and-set and the temporary table's preparation; COPY with the
// INSERT … SELECT and the COMMIT. Not safe for concurrent use.
type pgTx struct {
	conn  *sql.Conn
	begun bool // BEGIN sent (it may have failed: the status says)
	done  bool // COMMIT or ROLLBACK sent
	// pending sends the last COPY of upsertCopy, followed by then: with
	// the COMMIT, or on its own before any other statement (open); a
	// rollback drops it.
	pending func(pg *pgconn.PgConn, then string) error
}

// errNotPgx is returned when the PostgreSQL store's driver connection is
// not pgx's (it always is: openStore registers it).
var errNotPgx = errors.New("the PostgreSQL store's driver connection is not pgx's")

// raw runs f on the driver connection.
func (t *pgTx) raw(f func(pg *pgconn.PgConn) error) error {
	return t.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("%w: a %T", errNotPgx, dc)
		}
		return f(c.Conn().PgConn())
	})
}

// prefix is what a statement sent on the driver connection starts with:
// the BEGIN not sent yet (marked sent).
func (t *pgTx) prefix() string {
	if t.begun {
		return ""
	}
	t.begun = true
	return "BEGIN; "
}

// open sends BEGIN if nothing was sent yet, and the pending COPY: before
// a statement sent through database/sql, or another COPY.
func (t *pgTx) open(ctx context.Context) error {
	if t.done {
		return sql.ErrTxDone
	}
	if t.begun && t.pending == nil {
		return nil
	}
	return t.raw(func(pg *pgconn.PgConn) error {
		if !t.begun {
			if _, err := pg.Exec(ctx, t.prefix()).ReadAll(); err != nil {
				return err
			}
		}
		if p := t.pending; p != nil {
			t.pending = nil
			return p(pg, "")
		}
		return nil
	})
}

func (t *pgTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := t.open(ctx); err != nil {
		return nil, err
	}
	return t.conn.ExecContext(ctx, query, args...)
}

func (t *pgTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.open(ctx); err != nil {
		return nil, err
	}
	return t.conn.QueryContext(ctx, query, args...)
}

func (t *pgTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if err := t.open(ctx); err != nil {
		return nil, err
	}
	return t.conn.PrepareContext(ctx, query)
}

// Commit commits the transaction; a transaction the server had already
// failed (its COMMIT answered ROLLBACK) is an error, as pgx's Tx says.
func (t *pgTx) Commit() error {
	if t.done {
		return sql.ErrTxDone
	}
	t.done = true
	if !t.begun {
		return nil // nothing sent
	}
	return t.raw(func(pg *pgconn.PgConn) error {
		if p := t.pending; p != nil {
			// A failed statement skips the rest of the query: the
			// COMMIT runs only after the COPY and the INSERT went
			// through.
			t.pending = nil
			if err := p(pg, "; COMMIT"); err != nil {
				return err
			}
			if st := pg.TxStatus(); st != 'I' {
				return fmt.Errorf("the transaction is still open after its COMMIT (status %c)", st)
			}
			return nil
		}
		res := pg.Exec(context.Background(), "COMMIT")
		rs, err := res.ReadAll()
		if err != nil {
			return err
		}
		if len(rs) == 1 && rs[0].CommandTag.String() == "ROLLBACK" {
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
}

// Rollback rolls the transaction back unless it has ended; sql.ErrTxDone
// once it has.
// A COMMIT that failed (a statement sent with it failed first, so the
// server skipped it) leaves the transaction open, aborted: it is rolled
// back here all the same, so that the connection goes back to the pool
// idle with its temporary tables and prepared statements, instead of
// being discarded at its next use (stdlib's ResetSession) and the batch's
// retry paying for a new session.
func (t *pgTx) Rollback() error {
	done := t.done
	t.done, t.pending = true, nil
	if !t.begun {
		if done {
			return sql.ErrTxDone
		}
		return nil
	}
	err := t.raw(func(pg *pgconn.PgConn) error {
		if pg.IsClosed() || pg.TxStatus() == 'I' {
			return nil
		}
		_, err := pg.Exec(context.Background(), "ROLLBACK").ReadAll()
		return err
	})
	if done && err == nil {
		return sql.ErrTxDone
	}
	return err
}

// upsertCopy upserts rows through COPY into a temporary table. Not done
// (false) outside a transaction of begin, or when a value has no COPY
// text form here (the caller falls back to the statement forms).
func (s *store) upsertCopy(ctx context.Context, tx batchTx, table string, cols []string, tail string, rows [][]any) (bool, error) {
	return s.upsertCopyOf(ctx, tx, table, cols, tail, &copyRows{rows: rows})
}

// upsertCopyOf is upsertCopy of data's rows, some of them perhaps encoded
// ahead: not done (false) also when those were encoded for other column
// types than the table's.
func (s *store) upsertCopyOf(ctx context.Context, tx batchTx, table string, cols []string, tail string, data *copyRows) (bool, error) {
	t, ok := tx.(*pgTx)
	if !ok || t != s.pg {
		return false, nil
	}
	if t.pending != nil { // before its text's buffer is reused
		if err := t.open(ctx); err != nil {
			return false, err
		}
	}
	if s.skipDirect == nil {
		s.skipDirect = map[string]int{}
	}
	types, err := s.pgColumnTypes(ctx, tx, table, cols)
	if err != nil {
		return false, err
	}
	if s.copyText == nil {
		s.copyText = new(bytes.Buffer)
	}
	s.copyText.Reset()
	data.types, data.buf = types, s.copyText
	noText := false // a value without a COPY text form: the statement forms
	q := s.d.quote
	// The column types are checked in every batch, in the round trip of
	// the savepoint or of the temporary table's preparation, after a lock
	// that keeps them until the commit (ALTER TABLE waits for it): a
	// column's type altered under a running sink is read before this
	// batch's text is encoded (a date column become a timestamp keeps
	// its times), and names a new temporary table, so that no pooled
	// connection's older one (the types of its creation) converts the
	// values first (a double through a real's rounding, a bigint refused
	// by an integer).
	check := fmt.Sprintf("LOCK TABLE %s IN ROW EXCLUSIVE MODE; %s", q(table), pgTypesQuery(q(table)))
	list := quoteList(s.d, cols)
	err = t.raw(func(pg *pgconn.PgConn) error {
		// first runs the check, then then, in one round trip: with the
		// transaction's BEGIN when nothing was sent yet, and the offsets'
		// compare-and-set when it waits for this table (foldCAS), after
		// the lock as every batch takes them (trySwap). It returns the
		// results of the LOCK, the types query and then.
		first := func(then string) ([]*pgconn.Result, error) {
			pre := t.prefix()
			cas := s.takeCAS(table)
			text := pre + check
			if cas != nil {
				text += "; " + cas.sql
			}
			rs, err := pg.Exec(ctx, text+"; "+then).ReadAll()
			if err != nil {
				return nil, err
			}
			if pre != "" {
				rs = rs[1:]
			}
			if cas != nil {
				if err := cas.check(rs[2]); err != nil {
					return nil, err
				}
				rs = append(rs[:2:2], rs[3:]...)
			}
			return rs, nil
		}
		if s.skipDirect[table] > 0 {
			s.skipDirect[table]--
		} else {
			// Straight into the table when none of the batch's keys is
			// there yet (a rebuild, a catch-up of a compacted topic: every
			// key once): half the server's work of the temporary table's
			// round. A key already there fails the COPY, which is undone
			// to the savepoint; the temporary table then takes this batch
			// and the next ones (updates come in runs) before a retry.
			rs, err := first("SAVEPOINT replicator_copy")
			if errors.Is(err, errFenced) {
				return err // as casOffsets says it
			}
			if err != nil {
				return fmt.Errorf("check the column types: %w", err)
			}
			if data.types, err = s.checkedTypes(table, cols, rs[1]); err != nil {
				return err
			}
			if !data.linesFit() {
				noText = true // the caller converts the lines' rows
				return nil
			}
			direct, err := s.copyDirect(ctx, pg, table, list, data)
			if err != nil || direct {
				return err
			}
			if data.bad {
				noText = true
				return nil
			}
			s.skipDirect[table] = skipDirectBatches
		}
		// CREATE … IF NOT EXISTS says so in a notice each time; a notice
		// costs nothing but a few bytes.
		tmp, prep := s.copyTemp(table, cols, data.types)
		rs, err := first(prep)
		if errors.Is(err, errFenced) {
			return err
		}
		if err != nil {
			return fmt.Errorf("prepare the batch's temporary table: %w", err)
		}
		types, err := s.checkedTypes(table, cols, rs[1])
		if err != nil {
			return err
		}
		if !slices.Equal(types, data.types) {
			// Altered since the last batch (the lock now keeps the types):
			// the text is encoded with the new ones, into a temporary
			// table of theirs. A direct COPY's text was encoded under the
			// lock, which a rollback to its savepoint does not release.
			if data.off > 0 || data.next > 0 {
				return fmt.Errorf("the column types of table %s changed during a batch", q(table))
			}
			data.types = types
			tmp, prep = s.copyTemp(table, cols, types)
			if _, err := pg.Exec(ctx, prep).ReadAll(); err != nil {
				return fmt.Errorf("prepare the batch's temporary table: %w", err)
			}
		}
		s.copied[tmp] = true
		if !data.linesFit() || !data.encodeAll() {
			noText = true
			return nil
		}
		// The INSERT goes in the COPY's round trip: a statement after a
		// COPY in one query runs once the COPY's data is in, and is
		// skipped when the COPY fails. Both wait for the COMMIT to go
		// with them (pgTx.pending), or for the next statement.
		stmt := fmt.Sprintf("COPY pg_temp.%s (%s) FROM STDIN; INSERT INTO %s (%s) SELECT %s FROM pg_temp.%s%s",
			q(tmp), list, q(table), list, list, q(tmp), tail)
		text := data.buf.Bytes()
		t.pending = func(pg *pgconn.PgConn, then string) error {
			if err := s.copyFrom(ctx, pg, bytes.NewReader(text), stmt+then); err != nil {
				return fmt.Errorf("copy the batch: %w", err)
			}
			return nil
		}
		return nil
	})
	if noText && err == nil {
		return false, nil
	}
	return err == nil, err
}

// copyFrom runs a COPY … FROM STDIN of r on pg. pgconn (v5.12) reads r in
// a goroutine of its own and, when the connection breaks during the COPY
// (the backend terminated, a network error, ctx done: its
// bufferingReceiveErr and fatal-error returns), returns without waiting
// for that goroutine, which may still be in r.Read, encoding into the
// store's buffer (copyRows) or reading it (bytes.Reader). The buffer is
// then left to it: the next batch encodes into a new one, and the caller
// must not touch r again (TestUpsertCopyConnectionBroken). Those returns
// all close the connection: one that leaves it open has waited for its
// reader.
func (s *store) copyFrom(ctx context.Context, pg *pgconn.PgConn, r io.Reader, sql string) error {
	_, err := pg.CopyFrom(ctx, r, sql)
	if err != nil && pg.IsClosed() {
		s.copyText = nil
	}
	return err
}

// copyTemp names the session temporary table of a batch of table's cols
// of types (a change of a type names another table: its types are those
// of its creation) and returns the statement that prepares it: created
// once per connection, emptied by every commit, or emptied now if this
// transaction filled it already (the side table of a second source).
func (s *store) copyTemp(table string, cols, types []string) (tmp, prep string) {
	q := s.d.quote
	sum := sha256.Sum256([]byte(table + "\x00" + strings.Join(cols, "\x00") + "\x00\x00" + strings.Join(types, "\x00")))
	tmp = "replicator_copy_" + hex.EncodeToString(sum[:8])
	if s.copied[tmp] {
		return tmp, fmt.Sprintf("TRUNCATE pg_temp.%s", q(tmp))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TEMP TABLE IF NOT EXISTS %s (", q(tmp))
	for j, c := range cols {
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q(c) + " " + types[j])
	}
	b.WriteString(") ON COMMIT DELETE ROWS")
	return tmp, b.String()
}

// checkedTypes takes the result of pgTypesQuery as table's column types
// (pgColumnTypes' cache) and returns those of cols.
func (s *store) checkedTypes(table string, cols []string, r *pgconn.Result) ([]string, error) {
	known := make(map[string]string, len(r.Rows))
	for _, row := range r.Rows {
		known[string(row[0])] = string(row[1])
	}
	s.cacheTypes(table, known)
	return typesOf(s.d, table, known, cols)
}

// skipDirectBatches is how many batches of a table go through the
// temporary table after a direct COPY met a key already there.
const skipDirectBatches = 16

// copyDirect copies data straight into table under the savepoint
// replicator_copy (set by the caller) and reports whether that went
// through (the savepoint is left to the COMMIT to release: a round trip
// less); a key already in the table (unique violation) or a value
// without a COPY text form (data.bad) rolls back to the savepoint and
// reports false.
func (s *store) copyDirect(ctx context.Context, pg *pgconn.PgConn, table, list string, data *copyRows) (bool, error) {
	err := s.copyFrom(ctx, pg, data, fmt.Sprintf("COPY %s (%s) FROM STDIN", s.d.quote(table), list))
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return true, nil
	case pg.IsClosed():
		// data may still be read (copyFrom): not even data.bad is looked at.
		return false, fmt.Errorf("copy the batch: %w", err)
	case data.bad, errors.As(err, &pe) && pe.Code == "23505": // no COPY text; unique_violation
		_, err = pg.Exec(ctx, "ROLLBACK TO SAVEPOINT replicator_copy").ReadAll()
		return false, err
	}
	return false, fmt.Errorf("copy the batch: %w", err)
}

// copyRows is a batch's rows as COPY text, encoded as the COPY reads it:
// the server takes in the first rows while the later ones are encoded
// (pgconn reads in a goroutine of its own, 64 KiB at a time), instead of
// waiting for the whole batch's text. The text stays in buf for a second
// COPY of the same rows (the temporary table's, after a direct COPY met a
// key already there).
type copyRows struct {
	rows [][]any
	// lines are rows encoded ahead as COPY text (copyline.go), with the
	// column types lineTypes: lines[i], when not nil, is row i (rows[i]
	// is then nil). nil when none was.
	lines     [][]byte
	lineTypes []string
	types     []string
	buf       *bytes.Buffer
	next      int  // the first row not encoded yet
	off       int  // bytes of buf read already
	bad       bool // a value without a COPY text form: the COPY fails
}

// linesFit reports whether the lines encoded ahead are text for types,
// the column types checked under the table's lock.
func (c *copyRows) linesFit() bool {
	return c.lines == nil || slices.Equal(c.lineTypes, c.types)
}

// errNoCopyText fails a COPY whose rows hold a value without a COPY text
// form.
var errNoCopyText = errors.New("a value has no COPY text form")

func (c *copyRows) Read(p []byte) (int, error) {
	for c.off == c.buf.Len() {
		if c.next == len(c.rows) {
			return 0, io.EOF
		}
		for c.next < len(c.rows) && c.buf.Len()-c.off < len(p) {
			if !c.encode(c.next) {
				c.bad = true
				return 0, errNoCopyText
			}
			c.next++
		}
	}
	n := copy(p, c.buf.Bytes()[c.off:])
	c.off += n
	return n, nil
}

// encodeAll encodes the rows not encoded yet; false when a value has no
// COPY text form.
func (c *copyRows) encodeAll() bool {
	for ; c.next < len(c.rows); c.next++ {
		if !c.encode(c.next) {
			c.bad = true
			return false
		}
	}
	return !c.bad
}

// encode writes row i's text.
func (c *copyRows) encode(i int) bool {
	if c.lines != nil && c.lines[i] != nil {
		c.buf.Write(c.lines[i])
		return true
	}
	for j, v := range c.rows[i] {
		if j > 0 {
			c.buf.WriteByte('\t')
		}
		if !appendCopyText(c.buf, v, c.types[j]) {
			return false
		}
	}
	c.buf.WriteByte('\n')
	return true
}

// copyEscaper escapes text for COPY's text format, elemEscaper an
// element of an array literal (quoted).
var (
	copyEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)
	elemEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
)

// appendCopyText writes v, a driver value of a column of SQL type typ (as
// format_type names it), in COPY's text format, and reports whether it
// knows v's type.
func appendCopyText(b *bytes.Buffer, v any, typ string) bool {
	switch x := v.(type) {
	case nil:
		b.WriteString(`\N`)
	case string:
		appendCopyEscaped(b, x)
	case int:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(x), 10))
	case int32:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(x), 10))
	case int64:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), x, 10))
	case float32:
		// As the statement forms send it: exact in a real or a double column.
		b.WriteString(floatText(float64(x), 64))
	case float64:
		b.WriteString(floatText(x, 64))
	case bool:
		if x {
			b.WriteByte('t')
		} else {
			b.WriteByte('f')
		}
	case []byte:
		b.WriteString(`\\x`)
		b.WriteString(hex.EncodeToString(x))
	case time.Time:
		return appendTimeCopyText(b, x, typ)
	case []*string:
		appendArray(b, x, func(b *bytes.Buffer, s string) { appendElemEscaped(b, s) })
	case []*int64:
		appendArray(b, x, func(b *bytes.Buffer, n int64) { b.Write(strconv.AppendInt(b.AvailableBuffer(), n, 10)) })
	case []*float64:
		appendArray(b, x, func(b *bytes.Buffer, f float64) { b.WriteString(floatText(f, 64)) })
	case []*bool:
		appendArray(b, x, func(b *bytes.Buffer, v bool) { b.WriteString(strconv.FormatBool(v)) })
	default:
		return false
	}
	return true
}

// appendTimeCopyText writes t in COPY text for a column of type typ (as
// format_type names it); false for a year COPY's text cannot take or a
// type without a time text here.
func appendTimeCopyText(b *bytes.Buffer, x time.Time, typ string) bool {
	// Go prints years outside 1–9999 in a form PostgreSQL refuses
	// ("-005" for 6 BC): those go through the statement forms.
	if y := x.UTC().Year(); y < 1 || y > 9999 {
		return false
	}
	if y := x.Year(); y < 1 || y > 9999 {
		return false
	}
	switch typ {
	case "timestamp with time zone":
		appendTimeText(b, x.UTC(), true)
		b.WriteByte('Z')
	case "timestamp without time zone":
		appendTimeText(b, x, true)
	case "date":
		appendTimeText(b, x, false)
	default:
		return false
	}
	return true
}

// appendTimeText writes t, of a year from 1 to 9999, in its own location
// as t.Format("2006-01-02 15:04:05.999999") writes it, or as
// "2006-01-02" without clock, by hand: Format's general layout
// interpreter was a twentieth of a rebuild's CPU.
func appendTimeText(b *bytes.Buffer, t time.Time, clock bool) {
	var a [len("2006-01-02 15:04:05.999999")]byte
	putDateTime(a[:], t, ' ')
	n := 10
	if clock {
		n = 19
		if us := t.Nanosecond() / 1000; us != 0 { // truncated, trailing zeros trimmed
			putDigits(a[20:26], us)
			n = 26
			for a[n-1] == '0' {
				n--
			}
		}
	}
	b.Write(a[:n])
}

// appendArray writes a one-dimensional array literal, every element
// quoted (NULL unquoted), escaped for COPY, straight into b: elem writes
// an element's text, escaped as a quoted element of a literal in COPY
// text (only strings need it).
func appendArray[T any](b *bytes.Buffer, x []*T, elem func(*bytes.Buffer, T)) {
	b.WriteByte('{')
	for i, e := range x {
		if i > 0 {
			b.WriteByte(',')
		}
		if e == nil {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		elem(b, *e)
		b.WriteByte('"')
	}
	b.WriteByte('}')
}

// copySpecial are the bytes COPY's text format escapes (copyEscaper's),
// copyEscapes their escapes.
var (
	copySpecial = [256]bool{'\\': true, '\t': true, '\n': true, '\r': true}
	copyEscapes = [256]string{'\\': `\\`, '\t': `\t`, '\n': `\n`, '\r': `\r`}
)

// appendCopyEscaped writes s escaped for COPY's text format: as a whole
// when nothing in it needs escaping (the usual text).
func appendCopyEscaped(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if copySpecial[s[i]] {
			copyEscaper.WriteString(b, s)
			return
		}
	}
	b.WriteString(s)
}

// appendElemEscaped writes s as the inside of a quoted array element,
// escaped for the literal and then for COPY's text format: as a whole
// when nothing in it needs either.
func appendElemEscaped(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; copySpecial[c] || c == '"' {
			copyEscaper.WriteString(b, elemEscaper.Replace(s))
			return
		}
	}
	b.WriteString(s)
}

// floatText is a float as PostgreSQL reads it back exactly.
func floatText(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}
