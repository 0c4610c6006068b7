package source

import (
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
)

// Phase is where a Source is in its life cycle.
type Phase int32

const (
	PhaseStarting  Phase = iota // connecting, preparing the slot, reconnecting, stopping
	PhaseSnapshot               // reading the initial snapshot
	PhaseStreaming              // streaming the slot's changes
)

func (p Phase) String() string {
	switch p {
	case PhaseSnapshot:
		return "snapshot"
	case PhaseStreaming:
		return "streaming"
	default:
		return "starting"
	}
}

// statsInterval is how often the stream loop publishes its position to
// Stats: often enough for a lag read at any moment to be at most this much
// off, seldom enough to cost nothing per message (one clock comparison).
const statsInterval = time.Second

// Stats is what a running Source tells about itself, for metrics, health
// checks and the periodic log line (see [Source.Stats]). The source's
// goroutines write it with atomic stores, so reading it never slows the
// stream down; any goroutine may read it.
type Stats struct {
	phase        atomic.Int32
	confirmed    atomic.Uint64 // acknowledged LSN (pglogrepl.LSN)
	serverEnd    atomic.Uint64 // server WAL end from the last keepalive
	pendingSince atomic.Int64  // UnixNano commit time of the oldest unacknowledged transaction; 0: none
	rows         atomic.Uint64 // row changes the stream handed to the handler
	reconnects   atomic.Uint64
	loopAt       atomic.Int64               // UnixNano of the stream loop's last publishStats
	guard        atomic.Pointer[stallGuard] // the current stream's
	progress     atomic.Pointer[progress]   // the last snapshot's
}

// Stats returns the source's live statistics; the same value for the
// Source's whole life.
func (s *Source) Stats() *Stats { return s.stats }

// Report is what the source tells about itself at one moment.
type Report struct {
	Phase Phase
	// ConfirmedLSN is the newest position up to which every change has
	// been acknowledged by the handler, updated every second while
	// streaming; it is sent to PostgreSQL every source.status_interval.
	ConfirmedLSN pglogrepl.LSN
	// ServerWALEnd is the server's WAL end the stream last heard of in a
	// keepalive (0 before the first).
	ServerWALEnd pglogrepl.LSN
	// PendingSince is the commit time of the oldest transaction received
	// and not yet fully acknowledged, zero when every one is: what was
	// published is complete up to just before it.
	PendingSince time.Time
	// HandoverSince is when the stream goroutine began handing the
	// current message to the handler (blocked by back-pressure, a
	// TRUNCATE, a schema registration), zero when it is not in a
	// hand-over: one that lasts is a stuck loop.
	HandoverSince time.Time
	// LoopAt is when the stream loop last came round to receive (it does
	// at least every 250 ms while it runs; published every second): a
	// streaming source whose LoopAt is old has a stuck loop. Zero before
	// the first stream.
	LoopAt time.Time
	// Rows is how many row changes the stream has handed to the handler
	// (snapshot rows are in Snapshot).
	Rows uint64
	// Reconnects is how many times the source connected again after
	// losing its connection or slot.
	Reconnects uint64
	// Snapshot is the last initial snapshot of this process, table by
	// table; nil when none was read.
	Snapshot []TableProgress
}

// TableProgress is one table of the initial snapshot.
type TableProgress struct {
	Table    string // qualified name
	Done     int64  // rows handed to the handler
	Estimate int64  // PostgreSQL's estimate (pg_class.reltuples); < 0 unknown
}

// Report reads the statistics. Safe for concurrent use.
func (s *Stats) Report() Report {
	r := Report{
		Phase:        Phase(s.phase.Load()),
		ConfirmedLSN: pglogrepl.LSN(s.confirmed.Load()),
		ServerWALEnd: pglogrepl.LSN(s.serverEnd.Load()),
		Rows:         s.rows.Load(),
		Reconnects:   s.reconnects.Load(),
	}
	if ns := s.pendingSince.Load(); ns != 0 {
		r.PendingSince = time.Unix(0, ns)
	}
	if ns := s.loopAt.Load(); ns != 0 {
		r.LoopAt = time.Unix(0, ns)
	}
	if g := s.guard.Load(); g != nil {
		if ns := g.busySince.Load(); ns != 0 {
			r.HandoverSince = time.Unix(0, ns)
		}
	}
	if p := s.progress.Load(); p != nil {
		r.Snapshot = make([]TableProgress, len(p.tables))
		for i := range p.tables {
			t := &p.tables[i]
			tp := TableProgress{Table: t.name, Done: t.done.Load(), Estimate: t.estimate}
			if tp.Estimate >= 0 && tp.Done > tp.Estimate {
				tp.Estimate = tp.Done // reltuples is an estimate
			}
			r.Snapshot[i] = tp
		}
	}
	return r
}

func (s *Stats) setPhase(p Phase) { s.phase.Store(int32(p)) }

func (s *Stats) snapshotStarted(p *progress) {
	s.progress.Store(p)
	s.setPhase(PhaseSnapshot)
}

// streaming marks the start of st's stream at start.
func (s *Stats) streaming(st *stream, start pglogrepl.LSN) {
	s.guard.Store(&st.guard)
	s.confirmed.Store(uint64(start))
	s.pendingSince.Store(0)
	s.loopAt.Store(time.Now().UnixNano())
	s.setPhase(PhaseStreaming)
}

// publishStats copies the stream's position into Stats (stream goroutine
// only, every statsInterval: walReader.tick).
func (st *stream) publishStats(now time.Time) {
	s := st.src.stats
	s.confirmed.Store(uint64(st.cp.advance()))
	s.serverEnd.Store(uint64(st.r.serverEnd))
	s.pendingSince.Store(st.cp.oldestCommit())
	s.rows.Add(st.rowsSeen)
	if st.pipe != nil {
		s.rows.Add(st.pipe.handed.Swap(0))
	}
	st.rowsSeen = 0
	s.loopAt.Store(now.UnixNano())
}
