// Package source reads a PostgreSQL database as a stream of row changes:
// it owns the publication and the logical replication slot, the initial
// snapshot read at the slot's exported snapshot, the pgoutput stream, the
// decoding of column values, and the LSN confirmed back to the server.
//
// The LSN it confirms never passes a change whose [Ack] has not been called,
// so a crash at any moment replays, never loses.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// Snapshot modes.
const (
	SnapshotInitial = "initial"
	SnapshotNever   = "never"
)

// Config is what the source needs. Zero values take the documented defaults.
type Config struct {
	URL         string // libpq URL; required
	Slot        string // validated replication slot name; required
	Publication string // validated publication name; required
	// Snapshot is SnapshotInitial (default) or SnapshotNever.
	Snapshot string
	// StatusInterval is the period of standby status updates; default 10s.
	StatusInterval time.Duration
	// StateDir holds the snapshot state file; required.
	StateDir string
	// SnapshotWorkers is how many connections read the initial snapshot
	// in parallel, one table each at a time; default
	// DefaultSnapshotWorkers.
	SnapshotWorkers int
	// SnapshotChunkRows is the number of rows per key-ordered chunk of a
	// table with a primary key; default DefaultSnapshotChunkRows.
	SnapshotChunkRows int
	// SnapshotGCPercent is Go's GC target (debug.SetGCPercent) while the
	// initial snapshot or a republish job runs, restored when it ends; 0
	// leaves it alone. The
	// snapshot is a CPU-bound bulk copy whose live heap is bounded (a few
	// batches and the producer's buffer), so fewer collections trade a
	// little memory for a sixth of its CPU (docs/BENCHMARKS.md).
	SnapshotGCPercent int
	// ProgressInterval is the period of snapshot progress log lines;
	// default DefaultProgressInterval.
	ProgressInterval time.Duration
	// Progress, when set (a terminal), gets a progress bar of the snapshot
	// instead of periodic log lines.
	Progress io.Writer
	// ShutdownTimeout bounds the final flush and confirmation on stop;
	// default 30s.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger

	// Reconnect is the backoff when the connection to PostgreSQL is lost.
	Reconnect Reconnect
}

// Handler receives every change, in commit order, from one goroutine at a
// time: the stream goroutine, or the re-read pipeline's hand-over while
// changes wait for unchanged TOAST values (calls never overlap, and each
// happens after the one before). Handle may block (that is the
// back-pressure); it must call the change's Ack once its records are
// durable.
type Handler interface {
	Handle(ctx context.Context, c *Change) error
	// Flush blocks until every change given to Handle so far has been
	// acknowledged, or fails with why not.
	Flush(ctx context.Context) error
}

// Source streams the configured tables. It is not safe for concurrent use:
// one Run at a time.
type Source struct {
	cfg    Config
	tables []relation.Table
	byName map[string]int
	// byOID maps the OIDs of the configured tables read from the catalog
	// to their index: a table renamed since start (or since the WAL being
	// replayed was written) is found by it (evolve.go, ghosts.go).
	byOID map[uint32]int
	// renamedSeen holds the (OID, WAL name) pairs of renamed configured
	// tables already warned about (warnRenamed).
	renamedMu   sync.Mutex
	renamedSeen map[renamedName]bool
	log         *slog.Logger
	// rereads counts the statements run to re-read unchanged TOAST
	// values (reread.go), for tests.
	rereads atomic.Int64
	stats   *Stats
	// stateMu serialises read-modify-writes of the state file between the
	// stream and its republisher.
	stateMu sync.Mutex
	// chunkRead, when set (tests), runs after a republish chunk is read,
	// before its high watermark: writes there fall between the watermarks.
	chunkRead func()
	// chunkRedo, when set (tests), runs before a table goes back to its
	// last chunk recorded to read a chunk again (errChunkRedo).
	chunkRedo func()
	// republishBuffered, when set (tests), replaces republishBuffered:
	// the republished records unacknowledged before the stream waits.
	republishBuffered int
	// beforeReread, when set (tests), runs on the re-read pipeline's
	// reader when it took a batch, before it joins the batches waiting
	// behind it (coalesce) and re-reads them.
	beforeReread func(context.Context, *rereadPipe)
}

// New validates the configuration. tables are the configured tables as the
// catalog describes them (see [LoadTable]), after any overrides.
func New(cfg Config, tables []relation.Table) (*Source, error) {
	if cfg.URL == "" || cfg.Slot == "" || cfg.Publication == "" || cfg.StateDir == "" {
		return nil, errors.New("source: URL, Slot, Publication and StateDir are required")
	}
	if len(tables) == 0 {
		return nil, errors.New("source: no tables")
	}
	switch cfg.Snapshot {
	case "":
		cfg.Snapshot = SnapshotInitial
	case SnapshotInitial, SnapshotNever:
	default:
		return nil, fmt.Errorf("source: snapshot mode %q is not %s or %s", cfg.Snapshot, SnapshotInitial, SnapshotNever)
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.SnapshotWorkers <= 0 {
		cfg.SnapshotWorkers = DefaultSnapshotWorkers
	}
	if cfg.SnapshotChunkRows <= 0 {
		cfg.SnapshotChunkRows = DefaultSnapshotChunkRows
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.Reconnect.InitialBackoff < 0 || cfg.Reconnect.MaxBackoff < 0 || cfg.Reconnect.GiveUpAfter < 0 {
		return nil, fmt.Errorf("source: negative reconnect setting %+v", cfg.Reconnect)
	}
	cfg.Reconnect.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, tables: tables, byName: map[string]int{}, byOID: map[uint32]int{}, log: cfg.Logger, stats: &Stats{}}
	for i, t := range tables {
		s.byName[t.Schema+"."+t.Name] = i
		if t.OID != 0 {
			s.byOID[t.OID] = i
		}
	}
	return s, nil
}

// Run prepares the publication and slot, publishes the initial snapshot
// when the slot is new, then streams until ctx ends or an error occurs. On
// ctx's end it stops reading, waits (up to ShutdownTimeout) for the handler
// to acknowledge what it was given, confirms that position, and returns nil.
// It returns nil too when ctx ends before streaming began (an unfinished
// snapshot is redone on the next start).
//
// A transient failure ([IsTransient]: the server restarted, the network
// dropped) does not end Run: it waits for the handler to acknowledge every
// change of the lost session (Handler.Flush), then connects again after a
// backoff (see [Reconnect]) and resumes from the newest acknowledged
// position. A handler that cannot flush (Kafka refused a record) ends Run
// with its error, as does any permanent failure. A slot held by another
// session is waited out the same way after a lost connection, and for
// [slotInUseGrace] after Run starts (a restart right after a crash).
func (s *Source) Run(ctx context.Context, h Handler) error {
	rc := s.cfg.Reconnect
	runStart := time.Now()
	var (
		resume   pglogrepl.LSN // acknowledged by the handler in an earlier session
		attempt  int           // reconnect attempts since the last stable session
		lostAt   time.Time     // when the current outage began
		streamed bool          // a session of this Run got the slot and streamed
	)
	for {
		began := time.Now()
		var sess session
		err := s.session(ctx, h, resume, &sess)
		lasted := time.Since(began)
		if err == nil || ctx.Err() != nil {
			return err
		}
		streamed = streamed || sess.st != nil
		// A held slot is ours when this Run streamed before (the server has
		// not noticed the lost connection yet), and probably ours shortly
		// after start (a restart after a crash); otherwise it belongs to
		// someone else and waiting would hide that.
		slotWait := isSlotInUse(err) && (streamed || time.Since(runStart) < slotInUseGrace)
		if !IsTransient(err) && !slotWait {
			return err
		}
		if sess.st != nil {
			s.log.Warn("source connection lost; waiting for in-flight records before reconnecting", "error", err)
		}
		// The records of the lost session are still on their way to Kafka.
		// Waiting for them keeps one rule for the checkpoint: what the next
		// session starts from is acknowledged. A failed produce surfaces
		// here and ends Run instead of being retried.
		if ferr := h.Flush(ctx); ferr != nil {
			if ctx.Err() != nil {
				s.log.Info("stopped while reconnecting to the source; unconfirmed changes will be streamed again on restart", "error", err)
				return nil
			}
			// Only ferr is wrapped: what ends Run is the handler's failure,
			// not the (transient) lost connection.
			return fmt.Errorf("wait for in-flight records after the source connection was lost (%v): %w", err, ferr)
		}
		if sess.st != nil {
			resume = max(resume, sess.st.cp.advance())
		}
		if lasted > rc.MaxBackoff {
			attempt = 0 // the session was healthy for a while: a new outage
		}
		attempt++
		if attempt == 1 {
			lostAt = time.Now()
		}
		if rc.GiveUpAfter > 0 && time.Since(lostAt) >= rc.GiveUpAfter {
			return fmt.Errorf("source unreachable for %v after %d attempts, giving up (source.reconnect.give_up_after): %w",
				time.Since(lostAt).Round(time.Second), attempt-1, err)
		}
		s.stats.reconnects.Add(1)
		wait := rc.delay(attempt, randomJitter())
		if isSlotInUse(err) && !streamed {
			// Waiting out a slot held at start: the last look is when the
			// grace ends, not a whole backoff past it (up to twice as long
			// before a second replicator on the slot was told).
			if left := slotInUseGrace - time.Since(runStart); left > 0 && left < wait {
				wait = left
			}
		}
		s.log.Warn("source connection failed; reconnecting", "attempt", attempt, "backoff", wait,
			"outage", time.Since(lostAt).Round(time.Millisecond), "resume_lsn", resume, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.log.Info("stopped while reconnecting to the source")
			return nil
		case <-t.C:
		}
	}
}

// session is what one connection's attempt left behind for Run.
type session struct {
	st *stream // set once the slot is prepared and streaming starts
}

// session runs one connection's worth of Run: publication, slot (and
// snapshot), stream. It starts streaming at resume when that is newer than
// the slot's confirmed position: everything before resume was acknowledged
// in an earlier session whose final confirmation never reached the server.
// (A slot created since has a consistent point beyond any LSN seen before
// it, so max never skips a new slot's changes.)
func (s *Source) session(ctx context.Context, h Handler, resume pglogrepl.LSN, sess *session) error {
	defer s.stats.setPhase(PhaseStarting) // until the next session streams
	conn, err := Connect(ctx, s.cfg.URL)
	if err != nil {
		return s.setupFailed(ctx, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	created, err := ensurePublication(ctx, conn, s.cfg.Publication, s.tables)
	if err != nil {
		return s.setupFailed(ctx, err)
	}
	if created {
		s.log.Info("created publication", "publication", s.cfg.Publication, "tables", len(s.tables))
	}

	repl, err := connectReplication(ctx, s.cfg.URL)
	if err != nil {
		return s.setupFailed(ctx, err)
	}
	defer repl.Close(context.WithoutCancel(ctx))

	start, err := s.prepareSlot(ctx, conn, repl, h)
	if err != nil {
		return s.setupFailed(ctx, err)
	}
	start = max(start, resume)
	sess.st = &stream{src: s, repl: repl, sql: conn, h: h, cp: newCheckpoint(start)}
	sess.st.pipe = newRereadPipe(sess.st)
	return sess.st.run(ctx, start)
}

// setupFailed returns err from a step before streaming, or nil when ctx has
// ended: a stop requested during setup or the snapshot is a clean stop, as
// one while streaming is (nothing was confirmed yet).
func (s *Source) setupFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		s.log.Info("stopped before streaming", "error", err)
		return nil
	}
	return err
}
