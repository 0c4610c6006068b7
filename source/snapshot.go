package source

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/replicator/replicator/relation"
	"golang.org/x/sync/errgroup"
)

// Snapshot defaults.
const (
	DefaultSnapshotWorkers   = 2
	DefaultSnapshotChunkRows = 50_000
	DefaultProgressInterval  = 10 * time.Second
	// barInterval is how often a terminal progress bar is redrawn.
	barInterval = 250 * time.Millisecond
	// batchRows and batchBytes bound the rows a reader hands to the
	// emitter at once: enough to make the hand-over cheap, small enough
	// that the batches in flight (2 × workers queued, one filling per
	// worker, one being emitted) stay a few MB whatever the row size.
	batchRows  = 1024
	batchBytes = 1 << 20
	// maxKeptBatch is the largest batch buffer kept for reuse: one that grew
	// past it for a few huge rows is left to the collector.
	maxKeptBatch = 4 * batchBytes
)

// The initial snapshot.
//
// Workers (source.snapshot_workers) each open a connection and a REPEATABLE
// READ transaction that imports the snapshot exported with the slot, so
// every one of them sees exactly the transactions committed before the
// slot's consistent point. Tables are handed out largest first; a worker
// reads its table in key-ordered chunks (keyset pagination on the primary
// key: COPY (SELECT ... WHERE key > last ORDER BY key LIMIT n) TO STDOUT),
// parses COPY's text format, and passes batches of rows over a bounded
// channel to the emitter, the calling goroutine, which is the only one to
// call the Handler (its contract: one goroutine). Rows go over as text
// (Change.Text): the handler encodes them straight from it, and a batch's
// buffers are reused once it is emitted, so a row costs no allocation
// here. Reading overlaps with encoding and producing, and memory holds a
// fixed number of batches whatever the table size. The replication
// connection stays idle throughout so the exported snapshot stays valid.

// rowBatch is up to batchRows rows of one table, as text: the values of
// every row back to back in data, and where each starts and ends in offs.
type rowBatch struct {
	table int
	width int    // columns per row
	rows  int    // rows in the batch
	data  []byte // every non-NULL value's bytes
	offs  []int  // per value: start and end in data; start -1 for NULL
}

// add appends one row of fields (nil for NULL), leaving out the columns
// the caller marks unused.
func (b *rowBatch) add(fields [][]byte, cols []relation.Column) {
	for i, f := range fields {
		if f == nil || cols[i].Unused {
			b.offs = append(b.offs, -1, -1)
			continue
		}
		b.offs = append(b.offs, len(b.data))
		b.data = append(b.data, f...)
		b.offs = append(b.offs, len(b.data))
	}
	b.rows++
}

// addLine appends one COPY line in which nothing is escaped (no
// backslash, so no NULL either): its values are the tab-separated parts.
func (b *rowBatch) addLine(line []byte, cols []relation.Column) error {
	if n := bytes.Count(line, []byte{'\t'}) + 1; n != len(cols) {
		return fmt.Errorf("COPY returned %d columns, want %d", n, len(cols))
	}
	from := len(b.data)
	b.data = append(b.data, line...)
	for i := range cols {
		to := len(b.data)
		if i < len(cols)-1 {
			to = from + bytes.IndexByte(b.data[from:], '\t')
		}
		if cols[i].Unused {
			b.offs = append(b.offs, -1, -1)
		} else {
			b.offs = append(b.offs, from, to)
		}
		from = to + 1
	}
	b.rows++
	return nil
}

// row returns row i's values in dst (grown to the batch's width); they
// alias the batch.
func (b *rowBatch) row(i int, dst [][]byte) [][]byte {
	dst = slices.Grow(dst[:0], b.width)[:b.width]
	offs := b.offs[2*i*b.width : 2*(i+1)*b.width]
	for c := range dst {
		from, to := offs[2*c], offs[2*c+1]
		if from < 0 {
			dst[c] = nil
			continue
		}
		dst[c] = b.data[from:to:to]
		if dst[c] == nil {
			dst[c] = []byte{} // empty, not NULL, though no byte was added yet
		}
	}
	return dst
}

// full reports whether the batch should be sent.
func (b *rowBatch) full() bool { return b.rows >= batchRows || len(b.data) >= batchBytes }

// batchPool recycles batches between the readers and the emitter.
type batchPool chan *rowBatch

// get returns an empty batch for table idx of the given width.
func (p batchPool) get(idx, width int) *rowBatch {
	var b *rowBatch
	select {
	case b = <-p:
		b.data, b.offs, b.rows = b.data[:0], b.offs[:0], 0
	default:
		b = &rowBatch{}
	}
	b.table, b.width = idx, width
	return b
}

// put returns an emitted batch; its rows' values must no longer be used.
func (p batchPool) put(b *rowBatch) {
	if cap(b.data) > maxKeptBatch {
		return
	}
	select {
	case p <- b:
	default: // enough kept
	}
}

// snapshot publishes every row of every table as seen by the exported
// snapshot, as OpSnapshot changes stamped with the consistent point, and
// waits until all are acknowledged. conn is the source's SQL connection,
// used for the row estimates.
func (s *Source) snapshot(ctx context.Context, conn *pgx.Conn, snapshotName string, consistent pglogrepl.LSN, h Handler) (int64, error) {
	started := time.Now().UTC()
	names := make([]string, len(s.tables))
	estimates := make([]int64, len(s.tables))
	for i := range s.tables {
		names[i] = s.tables[i].QualifiedName()
		n, err := estimateRows(ctx, conn, &s.tables[i])
		if err != nil {
			return 0, err
		}
		estimates[i] = n
	}
	prog := newProgress(names, estimates, s.log, s.cfg.Progress)
	s.stats.snapshotStarted(prog)

	// Largest first, so the last table to finish is a small one.
	order := make([]int, len(s.tables))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(estimates[b], estimates[a]) })
	jobs := make(chan int, len(order))
	for _, i := range order {
		jobs <- i
	}
	close(jobs)
	workers := min(s.cfg.SnapshotWorkers, len(s.tables))
	s.log.Info("initial snapshot started", "tables", len(s.tables), "workers", workers,
		"chunk_rows", s.cfg.SnapshotChunkRows, "estimated_rows", sum(estimates), "consistent_lsn", consistent)

	if pct := s.cfg.SnapshotGCPercent; pct > 0 {
		prev := debug.SetGCPercent(pct)
		defer debug.SetGCPercent(prev)
	}
	rctx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	g, gctx := errgroup.WithContext(rctx)
	batches := make(chan *rowBatch, 2*workers)
	pool := make(batchPool, 3*workers+1) // every batch that can be in flight
	for range workers {
		g.Go(func() error {
			return s.snapshotWorker(gctx, snapshotName, jobs, batches, pool, prog)
		})
	}
	readDone := make(chan error, 1)
	go func() { // owned here: ends when every worker has, which cancelRead forces
		readDone <- g.Wait()
		close(batches)
	}()

	var reporter sync.WaitGroup
	stopReport := make(chan struct{})
	reporter.Add(1)
	go func() { // owned here: stopped by stopReport before snapshot returns
		defer reporter.Done()
		s.reportProgress(prog, stopReport)
	}()

	cp := newCheckpoint(0)
	mark := cp.begin()
	ch := Change{Op: OpSnapshot, LSN: consistent, CommitTime: started}
	var total int64
	var emitErr error
	var row [][]byte
	for b := range batches {
		if emitErr != nil {
			continue // draining after a failure: the workers are being stopped
		}
		ch.Table, ch.TableIndex = &s.tables[b.table], b.table
		for i := range b.rows {
			row = b.row(i, row)
			ch.Text = row
			ch.Ack = cp.track(mark)
			if err := h.Handle(ctx, &ch); err != nil {
				emitErr = err
				cancelRead()
				break
			}
			total++
		}
		if emitErr == nil {
			prog.add(b.table, int64(b.rows))
		}
		pool.put(b)
	}
	readErr := <-readDone
	close(stopReport)
	reporter.Wait()
	prog.close(time.Now())
	if err := errors.Join(emitErr, readErr); err != nil {
		if emitErr != nil && errors.Is(readErr, context.Canceled) {
			err = emitErr // the workers stopped because the emitter failed
		}
		return total, err
	}

	cp.seal(mark, consistent)
	if err := h.Flush(ctx); err != nil {
		return total, fmt.Errorf("wait for snapshot acknowledgements: %w", err)
	}
	if cp.advance() != consistent {
		return total, fmt.Errorf("snapshot: %d rows flushed but not acknowledged", mark.pending.Load())
	}
	return total, nil
}

// reportProgress reports until stop is closed.
func (s *Source) reportProgress(prog *progress, stop <-chan struct{}) {
	every := s.cfg.ProgressInterval
	if prog.bar != nil {
		every = barInterval
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			prog.report(now)
		}
	}
}

// snapshotWorker reads tables from jobs until none is left, in its own
// transaction at the exported snapshot.
func (s *Source) snapshotWorker(ctx context.Context, snapshotName string, jobs <-chan int, out chan<- *rowBatch, pool batchPool, prog *progress) error {
	conn, err := connectSnapshot(ctx, s.cfg.URL)
	if err != nil {
		return fmt.Errorf("snapshot connection: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin snapshot transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshotName)); err != nil {
		return fmt.Errorf("import snapshot %s: %w", snapshotName, err)
	}
	for idx := range jobs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t0 := time.Now()
		prog.start(idx, t0)
		tr := newTableReader(&s.tables[idx], idx, s.cfg.SnapshotChunkRows, out)
		tr.prog, tr.pool = prog, pool
		n, err := tr.read(ctx, conn)
		if err != nil {
			return err
		}
		prog.finish(idx, time.Now())
		d := time.Since(t0)
		s.log.Info("snapshot table read", "table", s.tables[idx].QualifiedName(), "rows", n,
			"seconds", d.Round(time.Millisecond).Seconds(), "rows_per_s", int64(float64(n)/max(d.Seconds(), 1e-9)))
	}
	return nil
}

// snapshotReadBuffer is the read buffer of a connection that reads tables
// with COPY (the snapshot's, the republish's). COPY sends one small
// message per row; when the reader falls behind, the socket fills up and
// one read takes many rows instead of pgproto3's default 8 KB.
const snapshotReadBuffer = 256 << 10

// connectSnapshot is [Connect] with a larger read buffer, for the
// connections that read tables with COPY: the snapshot's and the
// republish's.
func connectSnapshot(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := parseConfig(url, false)
	if err != nil {
		return nil, err
	}
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, snapshotReadBuffer), w)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnectError(fmt.Errorf("connect: %w", err))
	}
	return conn, nil
}

// tableReader reads one table in key-ordered chunks. It is the io.Writer
// COPY's output goes to: each line is split, unescaped and added to the
// current batch, which is sent when full.
type tableReader struct {
	t     *relation.Table
	idx   int
	chunk int64
	out   chan<- *rowBatch
	pool  batchPool       // where batches come from; nil: allocate each
	ctx   context.Context // of the current read, for the blocking send
	prog  *progress       // counts the rows passed on; nil in tests

	sel  string // the select list
	from string
	keys []int // column indices of the key; nil: read in one pass
	by   string

	// emit, when set, takes each full batch instead of out (republish
	// collects a chunk's batches); the batch is then the callee's.
	emit func(*rowBatch) error
	// rowKeys, when set, gets the key of every row read (keyString of
	// the columns rowKeyAt), in order: republish drops the rows whose keys
	// changed while the chunk was read. The snapshot leaves it nil and
	// pays nothing for it.
	rowKeys  *[]string
	rowKeyAt []int

	batch   *rowBatch
	partial []byte
	fields  [][]byte
	scratch []byte
	lastKey [][]byte // key text of the last row read, owned copies
	rows    int64    // rows of the current chunk
	bytes   int64    // COPY text of the current chunk's rows
}

func newTableReader(t *relation.Table, idx int, chunk int, out chan<- *rowBatch) *tableReader {
	r := &tableReader{t: t, idx: idx, chunk: int64(chunk), out: out}
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	r.sel = strings.Join(cols, ", ")
	r.from = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	// Keyset pagination needs a unique, non-null key: the primary key. A
	// table without one (an entity with a configured key) is read in one
	// pass; memory stays bounded all the same, as rows are streamed.
	if len(t.PrimaryKey) > 0 {
		by := make([]string, len(t.PrimaryKey))
		for i, k := range t.PrimaryKey {
			_, ci, ok := t.Column(k)
			if !ok {
				r.keys = nil
				break
			}
			r.keys = append(r.keys, ci)
			by[i] = pgx.Identifier{k}.Sanitize()
		}
		if r.keys != nil {
			r.by = strings.Join(by, ", ")
		}
	}
	r.lastKey = make([][]byte, len(r.keys))
	return r
}

// chunkSQL is the COPY statement of the next chunk. COPY takes no
// parameters, so the last key is spliced in as escaped string literals,
// which PostgreSQL types from the key columns they are compared with.
func (r *tableReader) chunkSQL(first bool) string {
	var b strings.Builder
	b.WriteString("COPY (SELECT " + r.sel + " FROM ONLY " + r.from)
	if r.keys != nil {
		if !first {
			b.WriteString(" WHERE (" + r.by + ") > (")
			for i, k := range r.lastKey {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(escapedLiteral(k))
			}
			b.WriteString(")")
		}
		fmt.Fprintf(&b, " ORDER BY %s LIMIT %d", r.by, r.chunk)
	}
	b.WriteString(") TO STDOUT")
	return b.String()
}

// read sends every row of the table to out and returns how many.
func (r *tableReader) read(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var total int64
	for first := true; ; first = false {
		n, more, err := r.readChunk(ctx, conn, first)
		total += n
		if err != nil {
			return total, err
		}
		if !more {
			break
		}
	}
	r.ctx = ctx
	defer func() { r.ctx = nil }()
	if err := r.send(); err != nil {
		return total, err
	}
	return total, nil
}

// readChunk reads the next key-ordered chunk: the first one, or the one
// after lastKey (the last key of the previous chunk, or set by the caller
// to resume). It returns the rows read and whether more may follow (the
// chunk was full); lastKey is then the chunk's last key. The last batch
// is not sent: the next chunk goes on filling it (see read), or the caller
// sends it (republish, per chunk).
func (r *tableReader) readChunk(ctx context.Context, conn *pgx.Conn, first bool) (int64, bool, error) {
	r.ctx = ctx
	defer func() { r.ctx = nil }()
	r.rows, r.bytes = 0, 0
	if _, err := conn.PgConn().CopyTo(ctx, r, r.chunkSQL(first)); err != nil {
		return r.rows, false, fmt.Errorf("read %s: %w", r.t.QualifiedName(), err)
	}
	if len(r.partial) > 0 {
		return r.rows, false, fmt.Errorf("read %s: COPY output ends in an incomplete line", r.t.QualifiedName())
	}
	return r.rows, r.keys != nil && r.rows == r.chunk, nil
}

// Write takes COPY output: PostgreSQL sends one line per message, but
// nothing here depends on it.
func (r *tableReader) Write(p []byte) (int, error) {
	n := len(p)
	if len(r.partial) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.partial = append(r.partial, p...)
			return n, nil
		}
		r.partial = append(r.partial, p[:i]...)
		if err := r.row(r.partial); err != nil {
			return 0, err
		}
		r.partial = r.partial[:0]
		p = p[i+1:]
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.partial = append(r.partial, p...)
			break
		}
		if err := r.row(p[:i]); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

// row adds one COPY line to the batch. Its values are decoded and checked
// by the handler (Change.Text), which names the row of a refused value.
func (r *tableReader) row(line []byte) error {
	cols := r.t.Columns
	if r.batch == nil {
		r.batch = r.pool.get(r.idx, len(cols))
	}
	var err error
	if bytes.IndexByte(line, '\\') < 0 {
		// Nothing escaped and no NULL, the common case: the line is copied
		// whole and cut at its tabs, with no field slices in between.
		err = r.batch.addLine(line, cols)
	} else {
		r.fields, r.scratch, err = splitCopyLine(line, r.fields, r.scratch)
		if err == nil && len(r.fields) != len(cols) {
			err = fmt.Errorf("COPY returned %d columns, want %d", len(r.fields), len(cols))
		}
		if err == nil {
			r.batch.add(r.fields, cols)
		}
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", r.t.QualifiedName(), err)
	}
	r.rows++
	r.bytes += int64(len(line)) + 1
	if r.rowKeys != nil {
		if r.fields, r.scratch, err = splitCopyLine(line, r.fields, r.scratch); err != nil {
			return fmt.Errorf("read %s: %w", r.t.QualifiedName(), err)
		}
		*r.rowKeys = append(*r.rowKeys, keyString(r.rowKeyAt, func(i int) []byte { return r.fields[i] }))
	}
	if r.keys != nil && r.rows == r.chunk {
		// The last row of a full chunk: the next chunk starts after its
		// key. Key columns may be unused by the entity, so they are taken
		// from the line, not the batch.
		if r.fields, r.scratch, err = splitCopyLine(line, r.fields, r.scratch); err != nil {
			return fmt.Errorf("read %s: %w", r.t.QualifiedName(), err)
		}
		for i, k := range r.keys {
			r.lastKey[i] = append(r.lastKey[i][:0], r.fields[k]...)
		}
	}
	if r.batch.full() {
		return r.send()
	}
	return nil
}

// send hands the current batch to the emitter, waiting while it is busy:
// that wait is what bounds memory.
func (r *tableReader) send() error {
	if r.batch == nil || r.batch.rows == 0 {
		return nil
	}
	// Once sent the batch is the emitter's, and back in the pool for
	// another reader soon after: nothing of it may be read here.
	rows := r.batch.rows
	if r.emit != nil {
		b := r.batch
		r.batch = nil
		return r.emit(b)
	}
	select {
	case r.out <- r.batch:
		if r.prog != nil {
			r.prog.queue(r.idx, int64(rows))
		}
		r.batch = nil
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// estimateRows is PostgreSQL's estimate of the table's row count, or -1
// when it has none (never vacuumed or analyzed) or the table is gone
// (dropped or renamed since it was loaded): reading it then fails, naming
// the table, and a republish fails that table alone (tableError), not the
// stream.
func estimateRows(ctx context.Context, conn *pgx.Conn, t *relation.Table) (int64, error) {
	var n float64
	err := conn.QueryRow(ctx, `SELECT c.reltuples::float8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
		t.Schema, t.Name).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("estimate rows of %s: %w", t.QualifiedName(), err)
	}
	if n < 0 {
		return -1, nil
	}
	return int64(n), nil
}

// escapedLiteral is an E” string literal, which reads the same whatever
// standard_conforming_strings is.
func escapedLiteral(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) + 3)
	sb.WriteString("E'")
	for _, c := range b {
		switch c {
		case '\'':
			sb.WriteString("''")
		case '\\':
			sb.WriteString(`\\`)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('\'')
	return sb.String()
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func sum(xs []int64) int64 {
	var t int64
	for _, x := range xs {
		t += max(x, 0)
	}
	return t
}
