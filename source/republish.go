package source

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
	"golang.org/x/sync/errgroup"
)

// Republish: every current row of a configured table published again, as
// OpSnapshot changes, while the stream runs (docs/ARCHITECTURE.md,
// "Republish", argues why a republished row never lands after a newer
// change of its key).
//
// Requests travel through the WAL: `replicator republish` emits a
// transactional logical decoding message with prefix MessagePrefix holding
// a JSON signal, so a request made while no daemon runs waits in the slot,
// and one made while it runs is read in commit order. The stream records
// the request in the slot's state file (a job) and wakes its republisher,
// a goroutine owned by the stream session, which reads each table in
// key-ordered chunks on its own SQL connection between two watermarks it
// emits the same way: low, read, high. From the low one the stream notes
// the keys of the table that changed; from the high one it hands over the
// chunk's other rows, in slices as the handler acknowledges them (at most
// republishBuffered unacknowledged, so its own changes never queue behind
// a whole chunk), still noting keys until the last row is handed over.
// Chunks are pipelined: the next chunk is read while the stream hands over
// and the handler acknowledges the ones before it (at most
// republishInFlight chunks), and a chunk's high watermark is also the next
// one's low. Once a chunk and every one before it are
// acknowledged the republisher records its last key in the job: a restart
// goes on from there.

// MessagePrefix is the prefix of the logical decoding messages replicator
// emits (pg_logical_emit_message) and reads back from its slot.
const MessagePrefix = "replicator"

// RepublishChunkBytes is the COPY text a republish chunk holds when the
// request sets no chunk size (RepublishOptions.ChunkRows). A chunk is held
// in memory between its watermarks, so its bytes, not its rows, are what
// to bound (republishInFlight of them); and each chunk costs fixed work
// (three round trips, two watermarks decoded by the walsender and the
// stream, its progress written and synced), so small rows make chunks of
// many rows.
const RepublishChunkBytes = 8 << 20

// Rows of the chunks sized by bytes: the first one's, before a row size is
// known, and the most in one chunk. What a stream change finds ahead of it
// in the producer is bounded by republishBuffered, not by the chunk (a
// chunk is handed over in slices), yet the stream's p99 during a republish
// still rose with larger chunks, and their throughput did not: with slices,
// chunks of at most 10,000 rows gave p99 28-46 ms and 414k-434k rows/s in
// the benchmark, chunks of 31,000 (8 MB, under a cap of 100,000) 53-125 ms
// and 386k-456k rows/s (bench/analysis.md, 2026-12-07).
const (
	firstChunkRows        = 100
	maxRepublishChunkRows = 10_000
)

// nextChunkRows is the rows of the chunk after one of rows rows and bytes
// bytes of COPY text, aiming at RepublishChunkBytes. It grows at most
// fourfold a chunk: until the stream has a chunk to hand over, the
// republish is reading alone, so the first chunks are small.
func nextChunkRows(rows, bytes int64) int64 {
	if rows <= 0 || bytes <= 0 {
		return firstChunkRows
	}
	return min(max(RepublishChunkBytes*rows/bytes, 1), 4*rows, maxRepublishChunkRows)
}

// rateChunk caps a chunk of rows at rate rows (0: no rate): a chunk's
// rows go to the producer at once and the rate is kept by waiting after
// it, so a larger chunk would be a burst of many seconds' rows (chunks of
// up to 10,000 rows under --rate 100).
func rateChunk(rows, rate int) int {
	if rate > 0 {
		return min(rows, rate)
	}
	return rows
}

// republishInFlight bounds the chunks read and not yet acknowledged: it
// bounds memory (chunks of rows) and how far the republisher runs ahead of
// the stream. Three keep
// the reader, the stream's hand-over and the producer's acknowledgements
// busy at once. At least 2 (runTable's queue holds republishInFlight-2).
const republishInFlight = 3

// Log messages of a republish, for operators and tests.
const (
	LogRepublishRequested = "republish requested"
	LogRepublishStarted   = "republish of table started"
	LogRepublishTableDone = "republish of table complete"
	LogRepublishDone      = "republish complete"
	LogRepublishCancelled = "republish cancelled"
	// LogAddedSnapshotCancelled: a cancel stopped the online snapshot of
	// tables added to the configuration (a job addedJobPrefix…).
	LogAddedSnapshotCancelled = "the online snapshot of tables added to the configuration was cancelled before it completed"
	// LogRepublishCancelUnmatched: a cancel named no job in progress and
	// no failure (a mistyped id, a job finished already).
	LogRepublishCancelUnmatched = "republish cancel matched nothing"
	// LogRepublishTableFailed: a table of a job could not be republished
	// (republishFailure); the stream and the job's other tables go on.
	LogRepublishTableFailed = "republish of table failed"
	LogReconciled           = "reconcile of table complete: keys live on its topic but not in the table are tombstoned"
)

// Signal kinds.
const (
	signalRepublish = "republish"
	signalCancel    = "cancel"
	signalLow       = "low"
	signalHigh      = "high"
	// signalReconcile marks where a table's orphans are tombstoned.
	signalReconcile = "reconcile"
)

// signal is the JSON body of a replicator logical decoding message.
type signal struct {
	Kind string `json:"kind"`
	// Slot is the slot the signal is for: every slot of the database
	// decodes the message, and only one replicator must act on it.
	Slot string `json:"slot"`
	// ID names a republish job (request, cancel: empty cancels all).
	ID string `json:"id,omitempty"`
	// Tables are the qualified table names to republish.
	Tables []string `json:"tables,omitempty"`
	// Rate bounds a republish in rows per second; 0: no bound.
	Rate int `json:"rate,omitempty"`
	// ChunkRows fixes the rows per chunk; 0: about RepublishChunkBytes each.
	ChunkRows int `json:"chunk_rows,omitempty"`
	// Reconcile: after each table, tombstone the keys live on its topic
	// that are not in the table (reconciler).
	Reconcile bool `json:"reconcile,omitempty"`
	// Run and Seq identify a watermark's chunk: the republisher that
	// emitted it (a random id per stream session) and the chunk's number.
	// Watermarks replayed from an earlier session match nothing.
	Run string `json:"run,omitempty"`
	Seq uint64 `json:"seq,omitempty"`
	// Next, on a high watermark, is the chunk whose low watermark it also
	// is: one message between two chunks read back to back.
	Next uint64 `json:"next,omitempty"`
}

// RepublishOptions are the options of a republish request.
type RepublishOptions struct {
	Rate      int // rows per second; 0: unbounded
	ChunkRows int // rows per chunk; 0: chunks of about RepublishChunkBytes
	// Reconcile also tombstones, after each table, the keys live on its
	// topic that are not in the table (the Handler must implement
	// Reconcile, as the pipeline does).
	Reconcile bool
}

// MaxRepublishChunkRows is the most rows a request may fix per chunk
// (RepublishOptions.ChunkRows, --chunk-rows). A chunk's rows are held in
// memory, republishInFlight chunks at a time: 100,000 rows of 100 bytes of
// COPY text are 10 MB a chunk, 30 MB in all (rows of 1 kB, 300 MB), and
// chunks larger than the byte-sized ones did not republish faster
// (maxRepublishChunkRows).
const MaxRepublishChunkRows = 100_000

// Validate reports what is wrong with opts, naming the flag of
// `replicator republish` that sets each option.
func (o RepublishOptions) Validate() error {
	var errs []error
	if o.Rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %d: must not be negative (0: no bound)", o.Rate))
	}
	if o.ChunkRows < 0 || o.ChunkRows > MaxRepublishChunkRows {
		errs = append(errs, fmt.Errorf("--chunk-rows %d: must be between 1 and %d (a chunk's rows are held in memory, %d chunks at a time), or 0 for chunks of about %d MB",
			o.ChunkRows, MaxRepublishChunkRows, republishInFlight, RepublishChunkBytes>>20))
	}
	return errors.Join(errs...)
}

// RequestRepublish asks the replicator streaming slot to republish tables
// (qualified names, as [relation.Table.QualifiedName]) and returns the
// request's id. The request is a message in the WAL: the daemon acts on it
// when its stream reaches it, now or at its next start.
func RequestRepublish(ctx context.Context, conn *pgx.Conn, slot string, tables []string, opts RepublishOptions) (string, error) {
	if len(tables) == 0 {
		return "", errors.New("republish: no table given")
	}
	if err := opts.Validate(); err != nil {
		return "", fmt.Errorf("republish: %w", err)
	}
	if err := requireSlot(ctx, conn, slot, "request"); err != nil {
		return "", err
	}
	if err := requireKeys(ctx, conn, slot, tables); err != nil {
		return "", err
	}
	id := newRepublishID(time.Now())
	sig := signal{Kind: signalRepublish, Slot: slot, ID: id, Tables: tables, Rate: opts.Rate, ChunkRows: opts.ChunkRows, Reconcile: opts.Reconcile}
	if err := emitSignal(ctx, conn, sig); err != nil {
		return "", err
	}
	return id, nil
}

// CancelRepublish asks the replicator streaming slot to stop the republish
// id, or every one when id is empty. Rows already republished stay
// published.
func CancelRepublish(ctx context.Context, conn *pgx.Conn, slot, id string) error {
	if err := requireSlot(ctx, conn, slot, "cancel"); err != nil {
		return err
	}
	return emitSignal(ctx, conn, signal{Kind: signalCancel, Slot: slot, ID: id})
}

// requireSlot fails unless slot is a pgoutput slot of conn's database that
// can still stream: a signal is read only by a slot that exists when it
// is written (a slot created later starts after it) and decodes the WAL of
// the database the signal is written in. Anything else would take the
// request and never act on it. what is the signal's verb, for the error.
func requireSlot(ctx context.Context, conn *pgx.Conn, slot, what string) error {
	if err := checkMessages(conn); err != nil {
		return err
	}
	var db string
	var plugin, slotDB, walStatus *string
	err := conn.QueryRow(ctx, `
		SELECT current_database(), s.plugin, s.database, s.wal_status
		FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1 AND s.slot_type = 'logical'`, slot).
		Scan(&db, &plugin, &slotDB, &walStatus)
	if err != nil {
		return fmt.Errorf("republish: look up replication slot %s (source.slot): %w", slot, err)
	}
	switch {
	case plugin == nil:
		return fmt.Errorf("republish: replication slot %s (source.slot) does not exist in database %s, so no replicator would ever read the %s: "+
			"start replicator run first (it creates the slot; if it refuses because the slot was lost, follow what it says, docs/OPERATIONS.md \"A lost slot\"), "+
			"then %s again; or fix source.slot", slot, db, what, what)
	case *plugin != "pgoutput":
		return fmt.Errorf("republish: replication slot %s (source.slot) uses plugin %s, not pgoutput: it is not a replicator's slot; fix source.slot", slot, *plugin)
	case slotDB == nil || *slotDB != db:
		return fmt.Errorf("republish: replication slot %s (source.slot) belongs to database %s, not %s (source.url's): the %s would be written where the slot never reads; fix source.url or source.slot",
			slot, cmp.Or(deref(slotDB), "?"), db, what)
	case walStatus != nil && *walStatus == "lost":
		return fmt.Errorf("republish: replication slot %s (source.slot) has lost WAL it needs (wal_status lost): replicator run can no longer stream from it, so the %s would never be read; "+
			"recover first (docs/OPERATIONS.md, \"A lost slot\"), then %s again", slot, what, what)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// requireKeys fails for a table without a primary key: a republish reads
// a table in key order, so the daemon would have to skip it. tables are
// qualified names as [relation.Table.QualifiedName] makes them (unquoted);
// a table the catalog does not know is left to the daemon, which does not
// start without it.
func requireKeys(ctx context.Context, conn *pgx.Conn, slot string, tables []string) error {
	rows, err := conn.Query(ctx, `
		SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname || '.' || c.relname = ANY($1) AND c.relkind IN ('r', 'p')
			AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)`, tables)
	if err != nil {
		return fmt.Errorf("republish: look up the primary keys of %s: %w", strings.Join(tables, ", "), err)
	}
	keyless, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (relation.Table, error) {
		var t relation.Table
		return t, row.Scan(&t.Schema, &t.Name)
	})
	if err != nil {
		return fmt.Errorf("republish: look up the primary keys of %s: %w", strings.Join(tables, ", "), err)
	}
	var problems []error
	for i := range keyless {
		problems = append(problems, fmt.Errorf("republish: %w", noKeyError(&keyless[i], "a republish",
			"stop replicator run, delete data_dir/source/slot-"+slot+".json and start it again (keep the slot: the start tombstones from it the rows deleted since, then snapshots every configured table)")))
	}
	return errors.Join(problems...)
}

// noKeyError says that table t, without a primary key, cannot be read by
// what (a republish, an online snapshot): both read in primary-key order,
// in chunks between watermarks, while the initial snapshot reads such a
// table in one pass in its exported snapshot (snapshot.go). snapshot is
// how to take a new initial snapshot.
func noKeyError(t *relation.Table, what, snapshot string) error {
	return fmt.Errorf("table %s has no primary key, and %s reads a table in primary-key order (chunks between watermarks while the stream runs), so it would never publish its rows. "+
		"Add a primary key (ALTER TABLE %s ADD PRIMARY KEY (the entity's key: columns)); or publish every row with a new initial snapshot, which reads a table without one in a single pass: %s",
		t.QualifiedName(), what, pgx.Identifier{t.Schema, t.Name}.Sanitize(), snapshot)
}

// newRepublishID is a request's id: its time to the second, and 48
// random bits. A request whose id the state knows is taken for one replayed
// from the slot after a restart and dropped without a word (addJob), so
// requests of the same second must not draw the same id (with 16 bits,
// 20 requests in one second, a script requesting entities one by one,
// collided about once in 350 times).
func newRepublishID(now time.Time) string {
	return fmt.Sprintf("%s-%012x", now.UTC().Format("20060102T150405"), rand.Uint64()>>16)
}

// minMessagesMajor is the first PostgreSQL major version whose pgoutput
// sends logical decoding messages: republish needs them.
const minMessagesMajor = 14

// checkMessages fails when conn's server is too old for republish (and
// the online snapshot of tables added later, which is one).
func checkMessages(conn *pgx.Conn) error {
	return messagesProblem(conn.PgConn().ParameterStatus("server_version"))
}

// messagesProblem is checkMessages for a server_version parameter; an
// unknown version is let through (the request then fails when emitted).
func messagesProblem(version string) error {
	if v := majorVersion(version); v > 0 && v < minMessagesMajor {
		return fmt.Errorf("republish needs PostgreSQL %d or later (pgoutput sends the logical decoding messages it travels by from then on); the server is %s",
			minMessagesMajor, version)
	}
	return nil
}

// signalSQL is the statement that writes sig to the WAL as a
// transactional message, in the caller's transaction (simple protocol: the
// JSON is a literal).
func signalSQL(sig signal) (string, error) {
	b, err := json.Marshal(sig)
	if err != nil {
		return "", fmt.Errorf("encode %s signal: %w", sig.Kind, err)
	}
	return "SELECT pg_logical_emit_message(true, " + quoteLiteral(MessagePrefix) + ", " + escapedLiteral(b) + "::text)", nil
}

// emitSignal writes sig to the WAL as a transactional message: it is
// decoded at its transaction's commit, in commit order with every change.
func emitSignal(ctx context.Context, conn *pgx.Conn, sig signal) error {
	if err := checkMessages(conn); err != nil {
		return err
	}
	b, err := json.Marshal(sig)
	if err != nil {
		return fmt.Errorf("encode %s signal: %w", sig.Kind, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2::text)", MessagePrefix, string(b)); err != nil {
		return fmt.Errorf("emit %s message for slot %s (pg_logical_emit_message needs PostgreSQL 14 or later for the stream to see it): %w", sig.Kind, sig.Slot, err)
	}
	return nil
}

// republishJob is a republish request as the state file keeps it.
type republishJob struct {
	ID        string    `json:"id"`
	Requested time.Time `json:"requested"`
	Rate      int       `json:"rate,omitempty"`
	ChunkRows int       `json:"chunk_rows,omitempty"`
	// Reconcile: tombstone each table's orphans once it is republished;
	// Since is the request's commit LSN, from which every record of the
	// topic counts as published by or after the republish.
	Reconcile bool             `json:"reconcile,omitempty"`
	Since     pglogrepl.LSN    `json:"since,omitempty"`
	Tables    []republishTable `json:"tables"`
}

// republishTable is one table's progress in a job.
type republishTable struct {
	Name string `json:"name"`
	// After is the key (text of each key column) of the last row of the
	// last acknowledged chunk: the next chunk starts after it.
	After  []string `json:"after,omitempty"`
	Chunks int      `json:"chunks"`
	Rows   int64    `json:"rows"`
	// Read: every chunk is republished; Done: and, with Reconcile, the
	// orphans are tombstoned too.
	Read bool `json:"read,omitempty"`
	Done bool `json:"done,omitempty"`
}

// maxDoneIDs bounds the ids of finished jobs kept in the state, which make
// a request replayed from the slot after a restart a no-op.
const maxDoneIDs = 32

// updateState changes the slot's state file under the source's state lock
// (the stream and its republisher both write it).
func (s *Source) updateState(change func(st *snapshotState) error) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	st, ok, err := readState(s.cfg.StateDir, s.cfg.Slot)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no state for slot %s in %s", s.cfg.Slot, statePath(s.cfg.StateDir, s.cfg.Slot))
	}
	if err := change(&st); err != nil {
		return err
	}
	return writeState(s.cfg.StateDir, st)
}

// loadState reads the slot's state under the state lock.
func (s *Source) loadState() (snapshotState, error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	st, _, err := readState(s.cfg.StateDir, s.cfg.Slot)
	return st, err
}

// addJob records a new job unless its id is known (a request replayed
// after a restart).
func addJob(st *snapshotState, job republishJob) bool {
	if slices.Contains(st.RepublishDone, job.ID) || slices.ContainsFunc(st.Republish, func(j republishJob) bool { return j.ID == job.ID }) {
		return false
	}
	st.Republish = append(st.Republish, job)
	return true
}

// finishJob removes job id from the state and remembers its id.
func finishJob(st *snapshotState, id string) {
	st.Republish = slices.DeleteFunc(st.Republish, func(j republishJob) bool { return j.ID == id })
	st.RepublishDone = append(st.RepublishDone, id)
	if n := len(st.RepublishDone); n > maxDoneIDs {
		st.RepublishDone = st.RepublishDone[n-maxDoneIDs:]
	}
}

// republishFailure is a table that a republish job could not republish,
// for a reason that leaves the stream sound (a [tableError], or the
// table's columns changed while it was read): the job went on with its
// other tables, the stream with its changes. It is kept, for `status` and
// `check`, until a later job republishes the table or a cancel names the
// job (at most maxDoneIDs, the oldest forgotten first).
type republishFailure struct {
	ID    string    `json:"id"`
	Table string    `json:"table"`
	At    time.Time `json:"at"`
	// Error says why, and what to do.
	Error string `json:"error"`
}

// failTable records that table name of job id failed: the table counts as
// done for the job. It reports false when the job is gone (cancelled) or
// the failure was recorded already.
func failTable(st *snapshotState, id, name string, cause error, now time.Time) bool {
	j := slices.IndexFunc(st.Republish, func(j republishJob) bool { return j.ID == id })
	if j < 0 || tableFailed(st, id, name) {
		return false
	}
	for k := range st.Republish[j].Tables {
		if t := &st.Republish[j].Tables[k]; t.Name == name {
			t.Read, t.Done = true, true
		}
	}
	st.RepublishFailed = append(st.RepublishFailed, republishFailure{ID: id, Table: name, At: now.UTC(), Error: cause.Error()})
	if n := len(st.RepublishFailed); n > maxDoneIDs {
		st.RepublishFailed = st.RepublishFailed[n-maxDoneIDs:]
	}
	return true
}

// tableFailed reports whether table name of job id failed.
func tableFailed(st *snapshotState, id, name string) bool {
	return slices.ContainsFunc(st.RepublishFailed, func(f republishFailure) bool { return f.ID == id && f.Table == name })
}

// tableError is a failure of one table of a republish job that leaves the
// stream sound: the job records it (republishFailure) and goes on with its
// other tables, the stream with its changes, instead of the whole run
// stopping and, started again, stopping at the same place before it could
// read a cancel. A lost connection, a state file that cannot be written
// or a handler that fails are not: they end the stream session.
type tableError struct{ err error }

func (e *tableError) Error() string { return e.err.Error() }
func (e *tableError) Unwrap() error { return e.err }

// tableFailure makes err, a failure of reading a table for a republish, a
// [tableError] when it is the server's answer and connecting again would
// not cure it (a privilege revoked, the table dropped, a statement
// timeout): the stream is unaffected by it.
func tableFailure(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if ctx.Err() != nil || !errors.As(err, &pgErr) || IsTransient(err) {
		return err
	}
	return &tableError{fmt.Errorf("%w; fix the cause, then request the republish again", err)}
}

// chunkWindow is one chunk between its watermarks. The republisher makes
// it and registers it (republisher.open) before emitting the low
// watermark; the stream adopts it when it reads that watermark, notes the
// changed keys until the high one, then hands the rows over.
type chunkWindow struct {
	run   string
	seq   uint64
	table int
	id    string        // the job's id, the records' republish header
	since pglogrepl.LSN // reconcile windows: the job's Since

	// Stream goroutine only, between the watermarks.
	changed   map[string]struct{}
	truncated bool
	// redo: the chunk's rows cannot be trusted and are dropped, and the
	// chunk is read again (a key not sent, a transaction the chunk's
	// snapshot missed: commitRing).
	redo bool
	// low is the commit ring's count when the stream adopted the window
	// at its low watermark: the transactions added before it committed
	// before it (commitRing.committedBefore).
	low      uint64
	keyAt    []int           // key column positions in keyShape
	keyShape *relation.Table // the shape keyAt was computed for

	ready  chan chunkRows   // the rows, sent before the high watermark
	result chan chunkResult // sent by the stream once the rows are handed over
	pool   batchPool        // where the stream returns the rows' batches once handed over
}

// chunkRows are a chunk's rows in key order. A row's key is needed only
// when the stream changed some key of the table between the watermarks,
// and is then taken from the row (keyAt, its key columns' positions);
// when a key column is not kept in the batches (unused by the entity) the
// reader keeps every row's key instead (keys).
type chunkRows struct {
	batches []*rowBatch
	n       int64 // rows
	keyAt   []int
	keys    []string
	// xip are the transactions the chunk's snapshot saw as in progress
	// (their xids' low 32 bits, as pgoutput sends them).
	xip []uint32
}

// chunkResult is what the stream did with a chunk.
type chunkResult struct {
	mark    *txnMark // the high watermark's transaction, which holds the rows
	emitted int64
	dropped int64
	redo    bool // every row dropped: the chunk is to be read again
}

// keyString is a row's key as one comparable string: each key column's
// text, length-prefixed. The chunk's rows (COPY text) and the stream's
// tuples (pgoutput text) render a value alike: both are the type's output
// function.
func keyString(keys []int, text func(col int) []byte) string {
	var b []byte
	for _, k := range keys {
		v := text(k)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return string(b)
}

// note records the keys a row change of the window's table touches: the
// new row's and, when sent, the old one's (a delete, a key update).
func (w *chunkWindow) note(t *relation.Table, oldTuple, newTuple *pglogrepl.TupleData) error {
	if w.keyShape != t {
		at, err := changeKeyIndexes(t)
		if err != nil {
			return err
		}
		w.keyAt, w.keyShape = at, t
	}
	for _, tuple := range []*pglogrepl.TupleData{oldTuple, newTuple} {
		if tuple == nil {
			continue
		}
		complete := true
		key := keyString(w.keyAt, func(i int) []byte {
			if i >= len(tuple.Columns) || tuple.Columns[i].DataType != pglogrepl.TupleDataTypeText {
				complete = false
				return nil
			}
			return tuple.Columns[i].Data
		})
		if complete {
			w.changed[key] = struct{}{}
		} else if tuple == newTuple && oldTuple == nil {
			// A key value not sent (unchanged TOAST in a key column): the
			// key is unknown, so no row of the chunk is trusted, and the
			// chunk is read again.
			w.redo = true
		}
	}
	return nil
}

// handleSignal acts on a replicator message read from the WAL.
func (st *stream) handleSignal(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	s := st.src
	var sig signal
	if err := json.Unmarshal(m.Content, &sig); err != nil {
		s.log.Warn("ignoring a replicator message that is not a signal", "lsn", m.LSN, "error", err)
		return nil
	}
	if sig.Slot != s.cfg.Slot {
		return nil // for another replicator of the same database
	}
	switch sig.Kind {
	case signalRepublish:
		return st.requested(sig, m.LSN)
	case signalCancel:
		return st.cancelled(sig)
	case signalLow:
		if w := st.rp.window(sig.Run, sig.Seq); w != nil {
			w.low = st.commits.count()
			st.window = st.dropIfCancelled(w)
		}
	case signalHigh:
		if w := st.window; w != nil && w.run == sig.Run && w.seq == sig.Seq {
			st.window = nil
			if err := st.handChunk(ctx, w); err != nil {
				return err
			}
		}
		if sig.Next != 0 { // also the next chunk's low watermark
			if w := st.rp.window(sig.Run, sig.Next); w != nil {
				w.low = st.commits.count()
				st.window = st.dropIfCancelled(w)
			}
		}
	case signalReconcile:
		if w := st.rp.window(sig.Run, sig.Seq); w != nil {
			return st.reconcile(ctx, w)
		}
	default:
		s.log.Warn("ignoring a replicator message of an unknown kind", "lsn", m.LSN, "kind", sig.Kind)
	}
	return nil
}

// requested records a republish request as a job, before the message's
// transaction can be confirmed: a crash after the confirmation still has
// the job.
func (st *stream) requested(sig signal, lsn pglogrepl.LSN) error {
	s := st.src
	job := republishJob{ID: sig.ID, Requested: time.Now().UTC(), Rate: sig.Rate, ChunkRows: sig.ChunkRows,
		Reconcile: sig.Reconcile, Since: st.r.txn.lsn}
	var unknown []string
	for _, name := range sig.Tables {
		if _, ok := s.byName[name]; !ok {
			unknown = append(unknown, name)
			continue
		}
		job.Tables = append(job.Tables, republishTable{Name: name})
	}
	if len(unknown) > 0 {
		s.log.Warn("republish request names tables that are not configured here; they are skipped",
			"id", sig.ID, "tables", strings.Join(unknown, ", "))
	}
	if len(job.Tables) == 0 {
		return nil
	}
	added := false
	if err := s.updateState(func(state *snapshotState) error {
		added = addJob(state, job)
		return nil
	}); err != nil {
		return fmt.Errorf("record republish request %s: %w", sig.ID, err)
	}
	if added {
		s.log.Info(LogRepublishRequested, "id", sig.ID, "tables", strings.Join(sig.Tables, ", "), "lsn", lsn, "rate", sig.Rate)
		st.rp.wakeUp()
	}
	return nil
}

// cancelled removes the job sig names (every job when it names none),
// and the failures recorded of it; the republisher sees it before its next
// chunk.
func (st *stream) cancelled(sig signal) error {
	s := st.src
	var ids, unsnapshotted []string
	cleared := 0
	err := s.updateState(func(state *snapshotState) error {
		for _, j := range state.Republish {
			if sig.ID == "" || j.ID == sig.ID {
				ids = append(ids, j.ID)
				if strings.HasPrefix(j.ID, addedJobPrefix) {
					for _, t := range j.Tables {
						if !t.Done {
							unsnapshotted = append(unsnapshotted, t.Name)
						}
					}
				}
			}
		}
		for _, id := range ids {
			finishJob(state, id)
		}
		n := len(state.RepublishFailed)
		state.RepublishFailed = slices.DeleteFunc(state.RepublishFailed, func(f republishFailure) bool { return sig.ID == "" || f.ID == sig.ID })
		cleared = n - len(state.RepublishFailed)
		return nil
	})
	if err != nil {
		return fmt.Errorf("cancel republish: %w", err)
	}
	if cleared > 0 {
		s.log.Info("republish failures cleared by a cancel", "id", sig.ID, "failures", cleared)
	}
	if len(ids) == 0 && cleared == 0 {
		// The command cannot tell (it only writes the message): a
		// mistyped id would otherwise be taken without a word.
		what := "no republish is in progress or failed on this slot"
		if sig.ID != "" {
			what = "republish " + sig.ID + " is neither in progress nor failed on this slot"
		}
		s.log.Warn(LogRepublishCancelUnmatched, "id", sig.ID,
			"why", what+" (finished or cancelled already, or never requested here: check the id)",
			"status", "replicator status lists the republishes in progress and the failed ones")
	}
	if len(ids) > 0 {
		// The rows of the job's chunks read but not handed over yet (up
		// to republishInFlight chunks of maxRepublishChunkRows) are
		// dropped: a cancel stops the job's records now, not after its
		// chunks in flight.
		if st.cancelledJobs == nil {
			st.cancelledJobs = map[string]struct{}{}
		}
		for _, id := range ids {
			st.cancelledJobs[id] = struct{}{}
		}
		for _, w := range st.windows() {
			st.dropIfCancelled(w)
		}
		s.log.Info(LogRepublishCancelled, "ids", strings.Join(ids, ", "))
		if len(unsnapshotted) > 0 {
			// Recorded as snapshotted, they are never read again by a
			// start: unlike a republish, their rows may be on no topic.
			s.log.Warn(LogAddedSnapshotCancelled, "tables", strings.Join(unsnapshotted, ", "),
				"effect", "their rows not published yet reach their topics only when changed",
				"fix", "replicator republish --entity NAME for each of their entities")
		}
		st.rp.wakeUp()
	}
	return nil
}

// dropIfCancelled marks the rows of w's chunk to be dropped, as a
// TRUNCATE drops them, when its job was cancelled or its table failed,
// and returns w.
func (st *stream) dropIfCancelled(w *chunkWindow) *chunkWindow {
	if _, ok := st.cancelledJobs[w.id]; ok {
		w.truncated = true
	}
	if _, ok := st.failedTables[jobTable{w.id, w.table}]; ok {
		w.truncated = true
	}
	return w
}

// noteRow is the stream's part between a chunk's watermarks, and after
// the high one until its rows are all handed over: the keys of the
// chunk's table changed there.
func (st *stream) noteRow(rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error {
	note := func(w *chunkWindow) error {
		if w.table != rel.idx {
			return nil
		}
		if err := w.note(rel.table, oldTuple, newTuple); err != nil {
			return fmt.Errorf("republish of %s: %w", rel.table.QualifiedName(), err)
		}
		return nil
	}
	if st.window != nil {
		if err := note(st.window); err != nil {
			return err
		}
	}
	for _, h := range st.handing {
		if err := note(h.w); err != nil {
			return err
		}
	}
	return nil
}

// windows are the chunks whose keys the stream notes: the one between its
// watermarks and those being handed over.
func (st *stream) windows() []*chunkWindow {
	var ws []*chunkWindow
	if st.window != nil {
		ws = append(ws, st.window)
	}
	for _, h := range st.handing {
		ws = append(ws, h.w)
	}
	return ws
}

// republishBuffered bounds the republished records handed to the handler
// and not yet acknowledged: what a change of the stream, handed over after
// them, can find ahead of it in the producer. A chunk's rows go over in
// slices as acknowledgements make room (handRows), so the bound is not
// the chunk's size: chunks can be large, for few fixed costs, while a
// stream change waits behind a few thousand records (at the benchmark's
// ~300k records/s, about 15 ms). Enough that the producer always has
// whole batches to send while the stream tops it up every betweenPoll.
const republishBuffered = 4096

// handover is a chunk past its high watermark whose rows are being handed
// over; stream goroutine only.
type handover struct {
	w    *chunkWindow
	rows chunkRows
	c    Change   // the rows' change, but for Text and Ack
	mark *txnMark // the chunk's records: sealed once all are handed over
	res  chunkResult
	// The next row: batch b, row r in it, i in the chunk.
	b, r, i int
	row     [][]byte
}

// handChunk queues the rows of chunk w at its high watermark and hands
// over what the bound on republished records in the producer allows
// (handRows hands the rest, between the stream's messages, as they are
// acknowledged). A row goes over only if its key did not change between
// the low watermark and the moment it goes: until then the window goes on
// noting keys (docs/ARCHITECTURE.md, "Republish").
func (st *stream) handChunk(ctx context.Context, w *chunkWindow) error {
	if st.txn == nil {
		return errors.New("republish: high watermark outside a transaction")
	}
	var rows chunkRows
	select {
	case rows = <-w.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if st.commits.committedBefore(rows.xip, w.low) {
		w.redo = true
		st.src.log.Warn("republish: a transaction committed before a chunk's low watermark was not visible to its snapshot: the chunk is read again",
			"table", st.src.tables[w.table].QualifiedName(), "id", w.id)
	}
	s := st.src
	h := &handover{w: w, rows: rows, mark: &txnMark{},
		c: Change{Op: OpSnapshot, Table: &s.tables[w.table], TableIndex: w.table, LSN: st.r.txn.lsn, CommitTime: st.r.txn.time, Republish: w.id}}
	st.handing = append(st.handing, h)
	st.chunkMarks = append(st.chunkMarks, h.mark)
	return st.handOver(ctx)
}

// handRows hands over rows of the chunks queued at their high watermarks,
// oldest first, while fewer than the bound of republished records are
// unacknowledged; it reports whether rows are left. The chunk's records
// are tracked on its own mark, not on a transaction's: the slot may be
// confirmed past the high watermark before they are acknowledged, since a
// restart resumes a republish from its state file (the last chunk
// acknowledged), not from the slot.
func (st *stream) handRows(ctx context.Context) (bool, error) {
	if len(st.handing) == 0 {
		return false, nil
	}
	if len(st.held) > 0 || st.pipe.busy() {
		return true, nil // the re-read pipeline calls the handler meanwhile
	}
	if st.republishRoom() <= 0 {
		return true, nil
	}
	// Outside a message: the guard answers the server if the handler
	// blocks.
	st.guard.enter(time.Now())
	err := st.handOver(ctx)
	st.guard.leave()
	return len(st.handing) > 0, err
}

// handOver is handRows's hand-over, on a message (handChunk) or between
// two (handRows).
func (st *stream) handOver(ctx context.Context) error {
	room := st.republishRoom()
	for room > 0 && len(st.handing) > 0 {
		h := st.handing[0]
		if !h.w.truncated && int64(h.i) < h.rows.n { // rows left to hand over
			if err := st.sameShapeAsRead(h.w.table); err != nil {
				// Its rows are dropped (truncated), and so are those of
				// the table's other chunks in flight.
				if err := st.failTable(h.w, err); err != nil {
					return err
				}
			}
		}
		n, err := st.hand(ctx, h, room)
		if err != nil {
			return err
		}
		room -= n
		if h.b < len(h.rows.batches) {
			break
		}
		h.mark.sealed.Store(true)
		h.res.mark = h.mark
		h.res.redo = h.w.redo
		h.w.result <- h.res // buffered: the republisher may have stopped waiting
		st.handing[0] = nil
		st.handing = st.handing[1:]
	}
	return nil
}

// sameShapeAsRead fails when the stream has followed a change of table
// idx's columns: a chunk's rows were read in the shape of the start
// (readChunk selects its columns), and the handler, which follows the
// stream's shape, would map them by position onto the new one (a column
// dropped and another added would swap values silently). Only a new
// session reads the table in its new shape (the source's tables are
// loaded at start), so the table fails (failTable) and a restart is the
// way on.
func (st *stream) sameShapeAsRead(idx int) error {
	read := &st.src.tables[idx]
	now, ok := st.shapes[idx]
	if !ok || now == read || sameColumns(now, read) {
		return nil
	}
	return fmt.Errorf("the table's columns changed while it was republished (its chunks were read as [%s], the stream now has [%s]); "+
		"restart replicator run (it reads the table in its new shape), then request the republish of the table again",
		columnNames(read), columnNames(now))
}

// failTable fails the table of window w in its job (recordTableFailure)
// and drops the rows of every chunk of it the stream holds or will be
// handed (as a cancel does); the republisher stops reading it before its
// next chunk.
func (st *stream) failTable(w *chunkWindow, cause error) error {
	s := st.src
	if err := s.recordTableFailure(w.id, s.tables[w.table].QualifiedName(), cause); err != nil {
		return err
	}
	if st.failedTables == nil {
		st.failedTables = map[jobTable]struct{}{}
	}
	st.failedTables[jobTable{w.id, w.table}] = struct{}{}
	for _, w := range st.windows() {
		st.dropIfCancelled(w)
	}
	return nil
}

// jobTable is a table of a republish job.
type jobTable struct {
	id    string
	table int
}

// sameColumns reports whether a and b have the same columns, as the rows of
// a chunk and the stream decode them: names, type OIDs and numeric
// precision and scale.
func sameColumns(a, b *relation.Table) bool {
	return slices.EqualFunc(a.Columns, b.Columns, func(x, y relation.Column) bool {
		return x.Name == y.Name && x.Type.OID == y.Type.OID && x.Type.Precision == y.Type.Precision && x.Type.Scale == y.Type.Scale
	})
}

// republishRoom is how many more republished records may be handed over
// now (republishBuffered, less those not yet acknowledged).
func (st *stream) republishRoom() int64 {
	limit := int64(republishBuffered)
	if n := st.src.republishBuffered; n > 0 {
		limit = int64(n)
	}
	var unacked int64
	kept := st.chunkMarks[:0]
	for _, m := range st.chunkMarks {
		p := m.pending.Load()
		if p == 0 && m.sealed.Load() {
			continue
		}
		unacked += p
		kept = append(kept, m)
	}
	clear(st.chunkMarks[len(kept):])
	st.chunkMarks = kept
	return limit - unacked
}

// hand hands over at most room rows of h, skipping those whose key
// changed since the low watermark (or all, after a TRUNCATE of the
// table), and returns how many it handed.
func (st *stream) hand(ctx context.Context, h *handover, room int64) (int64, error) {
	w := h.w
	c := &st.change
	var handed int64
	for handed < room && h.b < len(h.rows.batches) {
		b := h.rows.batches[h.b]
		if h.r == b.rows {
			// The handler copied what it keeps (the Change.Text
			// contract): the batch's buffers go back to the reader.
			w.pool.put(b)
			h.rows.batches[h.b] = nil
			h.b, h.r = h.b+1, 0
			continue
		}
		r, i := h.r, h.i
		h.r, h.i = h.r+1, h.i+1
		if w.truncated || w.redo {
			h.res.dropped++
			continue
		}
		h.row = b.row(r, h.row)
		if len(w.changed) > 0 { // else no row's key is looked at
			var key string
			if h.rows.keys != nil {
				key = h.rows.keys[i]
			} else {
				key = keyString(h.rows.keyAt, func(c int) []byte { return h.row[c] })
			}
			if _, changed := w.changed[key]; changed {
				h.res.dropped++
				continue
			}
		}
		*c = h.c
		c.Text = h.row
		h.mark.pending.Add(1)
		c.Ack = Ack{m: h.mark}
		if err := st.h.Handle(ctx, c); err != nil {
			c.Text = nil
			return handed, err
		}
		handed++
		h.res.emitted++
	}
	c.Text = nil
	st.rowsSeen += uint64(handed)
	return handed, nil
}

// republisher runs the jobs of the state file, a few chunks at a time
// (republishInFlight). It belongs to a stream session, which starts it and
// stops it.
type republisher struct {
	src *Source
	// commits are the latest transactions the stream read (commitRing):
	// a chunk's snapshot that sees one of them as running is taken again
	// (readAfterLow).
	commits *commitRing
	run     string
	wake    chan struct{}
	seq     uint64 // the last chunk's number; republisher goroutine only
	// pool recycles the batches of chunks handed over: the stream puts
	// them back, the republisher's reader takes them.
	pool batchPool

	mu sync.Mutex // guards windows
	// windows are the chunks whose watermarks the stream may still read,
	// by number: registered before their low watermark is emitted, removed
	// once handed over (or given up).
	windows map[uint64]*chunkWindow
}

func newRepublisher(s *Source, commits *commitRing) *republisher {
	return &republisher{src: s, commits: commits, run: fmt.Sprintf("%016x", rand.Uint64()), wake: make(chan struct{}, 1),
		pool: make(batchPool, republishInFlight*(maxRepublishChunkRows/batchRows+2)), windows: map[uint64]*chunkWindow{}}
}

// open makes and registers the window of the next chunk of table idx
// (or of its reconcile, with since) in job id.
func (rp *republisher) open(idx int, id string, since pglogrepl.LSN) *chunkWindow {
	rp.seq++
	w := &chunkWindow{run: rp.run, seq: rp.seq, table: idx, id: id, since: since, changed: map[string]struct{}{},
		ready: make(chan chunkRows, 1), result: make(chan chunkResult, 1), pool: rp.pool}
	rp.mu.Lock()
	rp.windows[w.seq] = w
	rp.mu.Unlock()
	return w
}

// close forgets window w: a watermark of it read later matches nothing.
func (rp *republisher) close(w *chunkWindow) {
	rp.mu.Lock()
	delete(rp.windows, w.seq)
	rp.mu.Unlock()
}

// window returns the registered window a watermark names, or nil (another
// session's, or one given up).
func (rp *republisher) window(run string, seq uint64) *chunkWindow {
	if run != rp.run {
		return nil
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.windows[seq]
}

func (rp *republisher) wakeUp() {
	select {
	case rp.wake <- struct{}{}:
	default:
	}
}

// loop runs jobs until ctx ends; an error ends the stream session (which
// is retried when transient) and the job goes on from its last chunk.
func (rp *republisher) loop(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		state, err := rp.src.loadState()
		if err != nil {
			return err
		}
		if len(state.Republish) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-rp.wake:
				continue
			}
		}
		if conn != nil && conn.IsClosed() { // a failure that ended the session (a FATAL error)
			conn = nil
		}
		if conn == nil {
			if conn, err = connectSnapshot(ctx, rp.src.cfg.URL); err != nil {
				return fmt.Errorf("republish connection: %w", err)
			}
			if err := checkMessages(conn); err != nil {
				// Not a reason to stop streaming: the jobs wait.
				rp.src.log.Error("republish jobs are waiting and cannot run", "error", err)
				<-ctx.Done()
				return nil
			}
		}
		if err := rp.runJob(ctx, conn, state.Republish[0]); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// errJobGone: the job was cancelled while it ran.
var errJobGone = errors.New("republish job cancelled")

// runJob republishes the tables of job not done yet.
func (rp *republisher) runJob(ctx context.Context, conn *pgx.Conn, job republishJob) error {
	s := rp.src
	names := make([]string, len(job.Tables))
	estimates := make([]int64, len(job.Tables))
	for i, jt := range job.Tables {
		names[i] = jt.Name
		estimates[i] = -1
		if idx, ok := s.byName[jt.Name]; ok {
			n, err := estimateRows(ctx, conn, &s.tables[idx])
			if err != nil {
				return err
			}
			estimates[i] = n
		}
	}
	prog := newProgress(names, estimates, s.log, s.cfg.Progress)
	s.stats.progress.Store(prog)
	stop := make(chan struct{})
	var reporter sync.WaitGroup
	reporter.Go(func() { s.reportProgress(prog, stop) })
	defer func() {
		close(stop)
		reporter.Wait()
		prog.close(time.Now())
	}()

	// A republish is a bulk copy, like the snapshot: the same GC target.
	if pct := s.cfg.SnapshotGCPercent; pct > 0 {
		prev := debug.SetGCPercent(pct)
		defer debug.SetGCPercent(prev)
	}
	began := time.Now()
	var total int64
	var failed []string
	for i, jt := range job.Tables {
		if jt.Done {
			prog.add(i, jt.Rows)
			continue
		}
		n, err := rp.runTable(ctx, conn, job, i, prog)
		chunks, redos := jt.Chunks, 0
		for errors.Is(err, errChunkRedo) {
			again, rerr := rp.reloadJob(job.ID)
			if err = rerr; err != nil {
				break
			}
			job = again
			now := job.Tables[i]
			if now.Done { // failed by the stream meanwhile (failTable)
				err = errTableFailed
				break
			}
			if now.Chunks > chunks { // progress since the last time: redos count again from one
				chunks, redos = now.Chunks, 0
			}
			if redos++; redos > maxChunkRedos {
				err = &tableError{fmt.Errorf("a chunk was read again %d times in a row and its rows still could not be trusted "+
					"(a key column's value left unsent as unchanged TOAST, or transactions its snapshot kept missing): request the republish of the table again", maxChunkRedos)}
				break
			}
			s.log.Info("republish: reading the table again from its last chunk recorded", "id", job.ID, "table", jt.Name, "time", redos)
			if s.chunkRedo != nil {
				s.chunkRedo()
			}
			// A transaction kept invisible (a slow synchronous standby)
			// is given a moment.
			if err = sleepUntil(ctx, time.Now().Add(min(time.Duration(redos)*10*time.Millisecond, time.Second))); err != nil {
				break
			}
			var m int64
			m, err = rp.runTable(ctx, conn, job, i, prog)
			n += m
		}
		total += n
		var te *tableError
		switch {
		case errors.Is(err, errJobGone):
			s.log.Info(LogRepublishCancelled, "id", job.ID, "table", jt.Name, "rows", n)
			return nil
		case errors.Is(err, errTableFailed): // recorded and logged by the stream
			failed = append(failed, jt.Name)
		case errors.As(err, &te) && ctx.Err() == nil:
			if err := s.recordTableFailure(job.ID, jt.Name, te); err != nil {
				return err
			}
			failed = append(failed, jt.Name)
		case err != nil:
			return err
		}
	}
	err := s.updateState(func(state *snapshotState) error {
		finishJob(state, job.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record the end of republish %s: %w", job.ID, err)
	}
	if len(failed) > 0 {
		s.log.Error(LogRepublishDone, "id", job.ID, "rows", total, "seconds", time.Since(began).Round(time.Millisecond).Seconds(),
			"failed_tables", strings.Join(failed, ", "))
		return nil
	}
	s.log.Info(LogRepublishDone, "id", job.ID, "rows", total, "seconds", time.Since(began).Round(time.Millisecond).Seconds())
	return nil
}

// errChunkRedo: the stream dropped a chunk's rows as untrusted; the table
// goes on from its last chunk recorded, which reads that chunk again.
var errChunkRedo = errors.New("republish: a chunk is to be read again")

// maxChunkRedos bounds the times in a row a table goes back to its last
// chunk recorded (errChunkRedo) before it fails.
const maxChunkRedos = 20

// reloadJob reads job id again from the state file, for the position its
// tables have reached; errJobGone when it is no longer there (cancelled).
func (rp *republisher) reloadJob(id string) (republishJob, error) {
	state, err := rp.src.loadState()
	if err != nil {
		return republishJob{}, err
	}
	for _, j := range state.Republish {
		if j.ID == id {
			return j, nil
		}
	}
	return republishJob{}, errJobGone
}

// errTableFailed: the table failed while it ran (the stream recorded it).
var errTableFailed = errors.New("republish of the table failed")

// recordTableFailure records that table name of job id failed with cause
// and says so in the log: the job goes on with its other tables, the
// stream with its changes.
func (s *Source) recordTableFailure(id, name string, cause error) error {
	recorded := false
	err := s.updateState(func(state *snapshotState) error {
		recorded = failTable(state, id, name, cause, time.Now())
		return nil
	})
	if err != nil {
		return fmt.Errorf("record the failure of republish %s of %s (%v): %w", id, name, cause, err)
	}
	if recorded {
		s.log.Error(LogRepublishTableFailed, "id", id, "table", name, "error", cause,
			"effect", "its rows not republished yet are not; the stream and the job's other tables go on",
			"status", "replicator status and replicator check list it until the table is republished or the job cancelled")
	}
	return nil
}

// runTable republishes table ti of job from its last completed chunk and
// returns the rows republished by this call.
func (rp *republisher) runTable(ctx context.Context, conn *pgx.Conn, job republishJob, ti int, prog *progress) (int64, error) {
	s := rp.src
	jt := job.Tables[ti]
	idx, ok := s.byName[jt.Name]
	if !ok {
		s.log.Warn("republish of a table no longer configured: skipped", "id", job.ID, "table", jt.Name)
		return 0, rp.tableProgress(job.ID, jt.Name, nil, 0, true, true)
	}
	if len(s.tables[idx].PrimaryKey) == 0 {
		// The request refuses such a table (requireKeys); it lost its key
		// since.
		return 0, &tableError{noKeyError(&s.tables[idx], "a republish",
			"stop replicator run, delete "+statePath(s.cfg.StateDir, s.cfg.Slot)+" and start it again (keep the slot: the start tombstones from it the rows deleted since, then snapshots every configured table)")}
	}
	// A request made without RequestRepublish (a message emitted by
	// hand) may ask for more rows than a chunk may hold.
	chunkRowsN := min(job.ChunkRows, MaxRepublishChunkRows)
	if chunkRowsN <= 0 {
		chunkRowsN = firstChunkRows
	}
	chunkRowsN = rateChunk(chunkRowsN, job.Rate)
	tr := newTableReader(&s.tables[idx], idx, chunkRowsN, nil)
	if len(tr.keys) == 0 {
		return 0, &tableError{fmt.Errorf("primary key columns %v are not all in the table's columns [%s]", s.tables[idx].PrimaryKey, columnNames(&s.tables[idx]))}
	}
	rowKeyAt, err := changeKeyIndexes(&s.tables[idx])
	if err != nil {
		return 0, &tableError{err}
	}
	tr.rowKeyAt = rowKeyAt
	first := len(jt.After) == 0
	if !first {
		if len(jt.After) != len(tr.keys) {
			return 0, &tableError{fmt.Errorf("the saved position has %d key values, the primary key has %d columns (it changed since the job began): request the republish of the table again; it starts from its first row",
				len(jt.After), len(tr.keys))}
		}
		for i, k := range jt.After {
			tr.lastKey[i] = []byte(k)
		}
	}
	prog.set(ti, jt.Rows) // set, not added: a table read again from its last chunk (errChunkRedo) counted its rows already
	if jt.Read {          // every chunk was read before a restart: only the reconcile is left
		return 0, rp.reconcileDone(ctx, conn, job, idx)
	}
	prog.start(ti, time.Now())
	s.log.Info(LogRepublishStarted, "id", job.ID, "table", jt.Name, "resumed_after_chunks", jt.Chunks, "rows_before", jt.Rows)
	began := time.Now()
	tr.pool = rp.pool
	// Chunks are read by one goroutine and recorded by another, in
	// order, each once it and every chunk before it are acknowledged, so
	// the saved position never passes a row that is not; the reader goes
	// on meanwhile, the state file's fsync off its path. The queue bounds
	// the chunks read and not yet recorded (republishInFlight): those in
	// it, the one being recorded and the one being read.
	queue := make(chan chunkFlight, republishInFlight-2)
	// redo: a chunk's rows were dropped as untrusted (errChunkRedo); the
	// reader stops after the chunk it reads, without cancelling it (its
	// connection stays usable), and the recorder lets the rest go.
	var redo atomic.Bool
	var total int64 // the recorder's until it has returned
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(queue)
		return rp.readTable(gctx, conn, job, idx, tr, first, began, queue, &redo)
	})
	g.Go(func() error { return rp.record(gctx, job, ti, prog, queue, &total, &redo) })
	err = g.Wait()
	for f := range queue {
		rp.close(f.w) // given up: its watermarks match nothing from now on
	}
	if err == nil {
		// The stream fails a table whose chunks it cannot hand over (its
		// columns changed) and drops their rows, the last one's too.
		err = rp.tableGone(job.ID, jt.Name)
	}
	if err != nil {
		return total, err
	}
	prog.finish(ti, time.Now())
	d := time.Since(began)
	s.log.Info(LogRepublishTableDone, "id", job.ID, "table", jt.Name, "rows", total,
		"seconds", d.Round(time.Millisecond).Seconds(), "rows_per_s", int64(float64(total)/max(d.Seconds(), 1e-9)))
	if job.Reconcile {
		return total, rp.reconcileDone(ctx, conn, job, idx)
	}
	return total, nil
}

// readTable reads the chunks of table idx from where tr stands (first: the
// table's start) and queues each once its high watermark is emitted. A
// window the stream adopted already is handed over at its high watermark
// even if this gives it up (an error, a cancel).
func (rp *republisher) readTable(ctx context.Context, conn *pgx.Conn, job republishJob, idx int, tr *tableReader, first bool,
	began time.Time, queue chan<- chunkFlight, redo *atomic.Bool) error {
	var w *chunkWindow // the chunk to read next, once its low watermark is emitted
	defer func() {
		if w != nil {
			rp.close(w)
		}
	}()
	var read int64
	name := rp.src.tables[idx].QualifiedName()
	for {
		if w == nil {
			if redo.Load() {
				return nil // the table goes back to its last chunk recorded
			}
			if err := rp.tableGone(job.ID, name); err != nil {
				return err
			}
			w = rp.open(idx, job.ID, 0)
			if err := rp.watermark(ctx, conn, signalLow, w.seq, 0); err != nil {
				return err
			}
		}
		cur := w
		w = nil
		var due time.Time
		// The next chunk's low watermark goes with this one's high,
		// unless the rate makes the republisher wait in between (the
		// window would stay open, noting keys, for the whole wait) or the
		// job was cancelled.
		more, err := rp.read(ctx, conn, tr, cur, first, func(n int64, more bool) (uint64, error) {
			read += n
			if job.Rate > 0 {
				due = began.Add(time.Duration(float64(read) / float64(job.Rate) * float64(time.Second)))
			}
			if !more || time.Now().Before(due) || redo.Load() {
				return 0, nil
			}
			if err := rp.tableGone(job.ID, name); err != nil {
				if errors.Is(err, errJobGone) || errors.Is(err, errTableFailed) {
					return 0, nil // the loop above stops before the next chunk
				}
				return 0, err
			}
			w = rp.open(idx, job.ID, 0)
			return w.seq, nil
		})
		if err != nil {
			err = tableFailure(ctx, err)
			var te *tableError
			if errors.As(err, &te) {
				// The session goes on: the stream may have taken the
				// window at its low watermark, and must let go of it.
				if aerr := rp.abandon(ctx, conn, cur); aerr != nil {
					err = fmt.Errorf("%w (and then: %w)", aerr, err)
				}
			}
			rp.close(cur)
			return err
		}
		first = false
		if job.ChunkRows <= 0 {
			tr.chunk = int64(rateChunk(int(nextChunkRows(tr.rows, tr.bytes)), job.Rate))
		}
		f := chunkFlight{w: cur, more: more}
		if more {
			for _, k := range tr.lastKey {
				f.after = append(f.after, string(k))
			}
		}
		select {
		case queue <- f:
		case <-ctx.Done():
			rp.close(cur)
			return ctx.Err()
		}
		if !more {
			return nil
		}
		if err := sleepUntil(ctx, due); err != nil {
			return err
		}
	}
}

// record records the chunks of table ti of job from queue, in order, each
// once the stream handed it over and its rows are acknowledged, adding
// their rows to total. A chunk whose rows the stream dropped to be read
// again is not recorded, nor is any after it: it sets redo, which stops
// the reader after its chunk, lets the chunks queued go (their rows, handed
// over or not, are read again) and returns errChunkRedo once the reader
// has stopped.
func (rp *republisher) record(ctx context.Context, job republishJob, ti int, prog *progress, queue <-chan chunkFlight, total *int64, redo *atomic.Bool) error {
	name := job.Tables[ti].Name
	for f := range queue {
		if redo.Load() {
			rp.close(f.w)
			continue
		}
		res, err := rp.settle(ctx, f.w)
		if err != nil {
			rp.close(f.w)
			return err
		}
		if res.redo {
			redo.Store(true)
			continue
		}
		*total += res.emitted
		prog.add(ti, res.emitted)
		if err := rp.tableProgress(job.ID, name, f.after, res.emitted, !f.more, !f.more && !job.Reconcile); err != nil {
			return err
		}
	}
	if redo.Load() {
		return errChunkRedo
	}
	return nil
}

// reconcileDone tombstones the orphans of table idx and records the table
// done.
func (rp *republisher) reconcileDone(ctx context.Context, conn *pgx.Conn, job republishJob, idx int) error {
	s := rp.src
	name := s.tables[idx].QualifiedName()
	began := time.Now()
	if err := rp.reconcileTable(ctx, conn, job, idx); err != nil {
		return fmt.Errorf("reconcile %s: %w", name, err)
	}
	s.log.Info(LogReconciled, "id", job.ID, "table", name, "seconds", time.Since(began).Round(time.Millisecond).Seconds())
	return rp.tableProgress(job.ID, name, nil, 0, true, true)
}

// tableProgress records a completed chunk of table name in job id.
func (rp *republisher) tableProgress(id, name string, after []string, rows int64, read, done bool) error {
	err := rp.src.updateState(func(state *snapshotState) error {
		for j := range state.Republish {
			if state.Republish[j].ID != id {
				continue
			}
			if tableFailed(state, id, name) {
				return nil // its last chunks handed over (dropped) after the failure
			}
			for k := range state.Republish[j].Tables {
				t := &state.Republish[j].Tables[k]
				if t.Name == name {
					if !t.Read {
						t.Chunks++
					}
					t.After, t.Rows, t.Read, t.Done = after, t.Rows+rows, read, done
				}
			}
			if done {
				// Republished now: an earlier job's failure of it is past.
				state.RepublishFailed = slices.DeleteFunc(state.RepublishFailed, func(f republishFailure) bool { return f.Table == name })
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record republish progress of %s: %w", name, err)
	}
	return nil
}

// ackPoll is how often the republisher looks whether a chunk handed over
// is acknowledged. Acks are counted by the producer's goroutines on the
// chunk's transaction mark, which has no channel to wait on; later chunks
// are read and handed over meanwhile, so the poll costs no throughput.
const ackPoll = 10 * time.Millisecond

// chunkFlight is a chunk read and handed to the stream, not yet recorded.
type chunkFlight struct {
	w     *chunkWindow
	after []string // the chunk's last key, where the next one starts
	more  bool     // false: the table's last chunk
}

// tableGone returns errJobGone when job id was cancelled, errTableFailed
// when its table name failed (the stream recorded it), nil otherwise.
func (rp *republisher) tableGone(id, name string) error {
	state, err := rp.src.loadState()
	switch {
	case err != nil:
		return err
	case !slices.ContainsFunc(state.Republish, func(j republishJob) bool { return j.ID == id }):
		return errJobGone
	case tableFailed(&state, id, name):
		return errTableFailed
	}
	return nil
}

// abandon ends chunk w, given up after its low watermark was emitted: a
// high watermark of its own, so that a stream that took the window at the
// low one stops noting keys for it (and hands over what was read of it,
// if anything: the rows are as good as any chunk's, their keys changed
// since the low watermark being dropped). Outside the chunk's
// transaction, rolled back; committed without waiting for a synchronous
// standby, which may be what failed the chunk.
func (rp *republisher) abandon(ctx context.Context, conn *pgx.Conn, w *chunkWindow) error {
	select {
	case w.ready <- chunkRows{}: // unless the rows went already
	default:
	}
	sql, err := signalSQL(signal{Kind: signalHigh, Slot: rp.src.cfg.Slot, Run: rp.run, Seq: w.seq})
	if err != nil {
		return err
	}
	if err := conn.PgConn().Exec(ctx, "BEGIN; SET LOCAL synchronous_commit = local; "+sql+"; COMMIT").Close(); err != nil {
		return fmt.Errorf("republish: end the window of a chunk given up: %w", err)
	}
	return nil
}

// watermark emits a watermark of chunk seq; a high one with next is also
// chunk next's low one.
func (rp *republisher) watermark(ctx context.Context, conn *pgx.Conn, kind string, seq, next uint64) error {
	return emitSignal(ctx, conn, signal{Kind: kind, Slot: rp.src.cfg.Slot, Run: rp.run, Seq: seq, Next: next})
}

// read reads the chunk of w, whose low watermark is emitted, and passes
// its rows to w; then, in the chunk's transaction, it emits w's high
// watermark, with the next chunk's low one when high returns a chunk. It
// reports whether more chunks follow.
func (rp *republisher) read(ctx context.Context, conn *pgx.Conn, tr *tableReader, w *chunkWindow, first bool,
	high func(rows int64, more bool) (next uint64, err error)) (bool, error) {
	var rows chunkRows
	tr.emit = func(b *rowBatch) error {
		rows.batches = append(rows.batches, b)
		rows.n += int64(b.rows)
		return nil
	}
	tr.rowKeys = nil
	if slices.ContainsFunc(tr.rowKeyAt, func(k int) bool { return tr.t.Columns[k].Unused }) {
		tr.rowKeys = &rows.keys
	} else {
		rows.keyAt = tr.rowKeyAt
	}
	more, err := readAfterLow(ctx, conn, tr, first, rp.commits.holdsAny, func(more bool, xip []uint32) (string, error) {
		if err := tr.send(); err != nil {
			return "", err
		}
		rows.xip = xip
		w.ready <- rows // buffered, and sent once per window
		if rp.src.chunkRead != nil {
			rp.src.chunkRead()
		}
		next, err := high(rows.n, more)
		if err != nil {
			return "", err
		}
		return signalSQL(signal{Kind: signalHigh, Slot: rp.src.cfg.Slot, Run: rp.run, Seq: w.seq, Next: next})
	})
	if err != nil {
		return false, fmt.Errorf("republish: %w", err)
	}
	return more, nil
}

// settle waits until the stream handed chunk w over and the handler
// acknowledged its rows.
func (rp *republisher) settle(ctx context.Context, w *chunkWindow) (chunkResult, error) {
	var res chunkResult
	select {
	case res = <-w.result:
	case <-ctx.Done():
		return chunkResult{}, ctx.Err()
	}
	rp.close(w)
	if res.emitted == 0 {
		return res, nil // nothing to wait for (and no mark of ours)
	}
	if err := waitAcked(ctx, res.mark); err != nil {
		return chunkResult{}, err
	}
	return res, nil
}

// Bounds of the retakes of a chunk's snapshot that sees as running a
// transaction the stream has read the commit of (readAfterLow); past
// them the chunk is read, and the stream has it read again if need be.
const (
	snapshotRetakes    = 1000
	snapshotRetakeWait = time.Millisecond
)

// chunkBegin opens a chunk's transaction and takes its snapshot, in one
// round trip, listing the transactions the snapshot sees as in progress
// (readAfterLow). The transaction is not READ ONLY: the high watermark is
// emitted in it.
const chunkBegin = `BEGIN ISOLATION LEVEL REPEATABLE READ; ` +
	`SELECT coalesce(string_agg((x::text::bigint & 4294967295)::text, ','), '') FROM pg_snapshot_xip(pg_current_snapshot()) AS x`

// readAfterLow reads a chunk in a snapshot taken after the low
// watermark's commit returned, and passes high the transactions that
// snapshot saw as in progress. The method needs the snapshot to see every
// transaction whose commit precedes the low watermark in the WAL, which
// it nearly always does, but not always: PostgreSQL writes a commit
// record, marks the transaction committed, and only then makes it visible
// (ProcArray), in between waiting for a synchronous standby if there is
// one. A transaction caught there is committed before the low watermark
// yet invisible, and in the snapshot's in-progress list: the stream,
// which has read its COMMIT before the low watermark, finds it in that
// list and has the chunk read again (stream.handChunk, commitRing).
//
// Once the chunk is read, high (which hands the rows over) returns the
// high watermark's statement, run in the chunk's transaction with its
// COMMIT in one round trip: the transaction's commit is the high
// watermark, after the snapshot as the method needs.
func readAfterLow(ctx context.Context, conn *pgx.Conn, tr *tableReader, first bool, committed func(xip []uint32) bool,
	high func(more bool, xip []uint32) (string, error)) (bool, error) {
	pc := conn.PgConn()
	xip, err := beginChunk(ctx, pc)
	for try := 0; err == nil && try < snapshotRetakes && committed(xip); try++ {
		// The stream has read the commit of a transaction this snapshot
		// sees as running: it is being made visible, and will be in a
		// moment. Taken again rather than have the chunk read again.
		_ = pc.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		if err = sleepUntil(ctx, time.Now().Add(snapshotRetakeWait)); err == nil {
			xip, err = beginChunk(ctx, pc)
		}
	}
	var more bool
	var sql string
	if err == nil {
		_, more, err = tr.readChunk(ctx, conn, first)
	}
	if err == nil {
		sql, err = high(more, xip)
	}
	if err == nil {
		err = pc.Exec(ctx, sql+"; COMMIT").Close()
		if err != nil {
			err = fmt.Errorf("emit the high watermark and commit: %w", err)
		}
	}
	if err != nil {
		_ = pc.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		return false, err
	}
	return more, nil
}

// beginChunk runs chunkBegin and returns the snapshot's transactions in
// progress.
func beginChunk(ctx context.Context, pc *pgconn.PgConn) ([]uint32, error) {
	res, err := pc.Exec(ctx, chunkBegin).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("take the chunk's snapshot: %w", err)
	}
	if len(res) != 2 || len(res[1].Rows) != 1 || len(res[1].Rows[0]) != 1 {
		return nil, fmt.Errorf("take the chunk's snapshot: unexpected answer to %q", chunkBegin)
	}
	list := string(res[1].Rows[0][0])
	if list == "" {
		return nil, nil
	}
	var xip []uint32
	for _, f := range strings.Split(list, ",") {
		x, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("take the chunk's snapshot: transaction in progress %q: %w", f, err)
		}
		xip = append(xip, uint32(x))
	}
	return xip, nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reconciler is implemented by a Handler that can tombstone the keys live
// on a table's topic that have no record from since on (the pipeline).
type reconciler interface {
	Reconcile(ctx context.Context, c *Change, since pglogrepl.LSN) error
}

// reconcile hands the reconcile of w's table to the handler at the
// reconcile message's position, as a change of its transaction.
func (st *stream) reconcile(ctx context.Context, w *chunkWindow) error {
	if st.txn == nil {
		return errors.New("republish: reconcile message outside a transaction")
	}
	rc, ok := st.h.(reconciler)
	if !ok {
		return fmt.Errorf("republish %s asks for --reconcile, which this handler cannot do", w.id)
	}
	c := &st.change
	*c = Change{Op: OpDelete, Table: &st.src.tables[w.table], TableIndex: w.table, LSN: st.r.txn.lsn, CommitTime: st.r.txn.time, Republish: w.id}
	c.Ack = st.cp.track(st.txn)
	if err := rc.Reconcile(ctx, c, w.since); err != nil {
		return err
	}
	w.result <- chunkResult{mark: st.txn, emitted: 1}
	return nil
}

// reconcileTable tombstones the orphans of table tr.idx on its topic
// (reconciler), at a position in the stream after its last chunk, and
// waits until they are acknowledged.
func (rp *republisher) reconcileTable(ctx context.Context, conn *pgx.Conn, job republishJob, idx int) error {
	w := rp.open(idx, job.ID, job.Since)
	defer rp.close(w)
	if err := emitSignal(ctx, conn, signal{Kind: signalReconcile, Slot: rp.src.cfg.Slot, Run: rp.run, Seq: w.seq}); err != nil {
		return err
	}
	var res chunkResult
	select {
	case res = <-w.result:
	case <-ctx.Done():
		return ctx.Err()
	}
	return waitAcked(ctx, res.mark)
}

// waitAcked polls (ackPoll) until m is sealed and acknowledged.
func waitAcked(ctx context.Context, m *txnMark) error {
	tick := time.NewTicker(ackPoll)
	defer tick.Stop()
	for !m.sealed.Load() || m.pending.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
