package source

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// stallGuard answers the server for the stream while the stream goroutine
// is blocked handing a message over: Handle waiting on back-pressure from a
// slow or unreachable broker, a TRUNCATE reading its topic, a schema
// registration, waiting for room in or the end of the TOAST re-read
// pipeline (rereadpipe.go). Without it the walsender hears nothing for
// wal_sender_timeout (60 s by default), drops the connection, and the
// half-streamed transaction is sent again after the reconnect.
//
// While the stream goroutine is in a hand-over it does not touch the
// connection, so the guard may write a status update on it; enter and
// leave bracket the hand-over, and leave waits for a status update being
// written. The guard repeats the last confirmed position: only the stream
// goroutine computes a newer one.
type stallGuard struct {
	busySince atomic.Int64  // UnixNano when the current hand-over began; 0: none
	sending   atomic.Bool   // the guard is writing (or about to)
	lsn       atomic.Uint64 // last position the stream confirmed
	mu        sync.Mutex    // held by the guard while it writes
}

// enter marks the start of a hand-over.
func (g *stallGuard) enter(now time.Time) { g.busySince.Store(now.UnixNano()) }

// leave marks its end; on return the stream goroutine owns the connection
// again. Both sides store, then load the other's flag (sequentially
// consistent atomics): either the guard sees the hand-over ended and does
// not write, or leave sees the guard writing and waits for it.
func (g *stallGuard) leave() {
	g.busySince.Store(0)
	if g.sending.Load() {
		g.mu.Lock()
		g.mu.Unlock() // only waiting for the guard's write to end
	}
}

// confirmed records the position the stream last sent.
func (g *stallGuard) confirmed(lsn pglogrepl.LSN) { g.lsn.Store(uint64(lsn)) }

// run sends a status update every interval while a hand-over has lasted
// longer than interval, until ctx ends.
func (g *stallGuard) run(ctx context.Context, conn *pgconn.PgConn, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var warned int64 // the hand-over (its start) a failed update was warned of
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			since := g.busySince.Load()
			if since == 0 || now.Sub(time.Unix(0, since)) < interval {
				continue
			}
			g.mu.Lock()
			g.sending.Store(true)
			if g.busySince.Load() != 0 {
				lsn := pglogrepl.LSN(g.lsn.Load())
				if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn}); err != nil {
					// The stream meets the broken connection itself once
					// the hand-over ends; until then the server may drop
					// it after wal_sender_timeout, which is worth a line,
					// once per hand-over, and none on a stop.
					switch {
					case ctx.Err() != nil:
					case warned != since:
						warned = since
						log.Warn("status update while blocked failed; the server may end the replication connection after wal_sender_timeout", "error", err)
					default:
						log.Debug("status update while blocked failed", "error", err)
					}
				} else {
					log.Debug("status update while blocked", "lsn", lsn, "blocked_for", now.Sub(time.Unix(0, since)).Round(time.Millisecond))
				}
			}
			g.sending.Store(false)
			g.mu.Unlock()
		}
	}
}
