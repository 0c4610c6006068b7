package source

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Reconnect defaults applied by [New] to zero fields of [Reconnect].
const (
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Reconnect is how [Source.Run] rides out a lost connection to PostgreSQL
// (a restart, a failover, a network cut): it waits, with exponential
// backoff, and connects again. Only transient failures are retried (see
// [IsTransient]); everything else ends Run at once.
type Reconnect struct {
	// InitialBackoff is the wait before the first attempt; each further
	// attempt doubles it. Default [DefaultInitialBackoff].
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts. Default
	// [DefaultMaxBackoff]. A session that streamed for longer than this
	// before it failed starts the sequence over.
	MaxBackoff time.Duration
	// GiveUpAfter ends Run with the last error once the source has been
	// unreachable this long. Zero (the default) never gives up: the
	// process keeps trying, logging every attempt, so an embedded broker
	// and registry in the same process stay up through a database outage.
	GiveUpAfter time.Duration
}

func (r *Reconnect) setDefaults() {
	if r.InitialBackoff <= 0 {
		r.InitialBackoff = DefaultInitialBackoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = DefaultMaxBackoff
	}
	if r.MaxBackoff < r.InitialBackoff {
		r.MaxBackoff = r.InitialBackoff
	}
}

// delay is the wait before attempt n (1-based): InitialBackoff doubled
// n-1 times, capped at MaxBackoff, then jittered down by up to a quarter so
// that several replicators cut off together do not reconnect in lock step.
// jitter is in [0, 1).
func (r Reconnect) delay(n int, jitter float64) time.Duration {
	d := r.InitialBackoff
	for i := 1; i < n && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return d - time.Duration(jitter*float64(d)/4)
}

func randomJitter() float64 { return rand.Float64() }

// errStreamEnded is the server ending START_REPLICATION's COPY by itself:
// a walsender does that when the server shuts down (fast or smart), after
// sending what it had. A lost connection, not a protocol error.
var errStreamEnded = errors.New("the server ended the replication stream (shutting down?)")

// IsTransient reports whether err, returned by a step of [Source.Run], is a
// failure that connecting again can cure: the server went away or is not
// accepting connections yet (shutdown, restart, crash recovery, too many
// connections), or the network failed. Everything else is permanent and
// retrying it would only hide it: authentication and privilege errors, a
// missing database or slot, wal_level, TRUNCATE and schema changes, a
// record Kafka refused, a value that does not decode, a stop request.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, errStreamEnded) {
		return true
	}
	// A server error decides by itself, whatever wraps it: a bad password
	// arrives inside a pgconn.ConnectError like a refused dial does.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection_exception
			return true
		case pgErr.Code == "57P01", // admin_shutdown: fast shutdown, pg_terminate_backend
			pgErr.Code == "57P02", // crash_shutdown: another backend crashed
			pgErr.Code == "57P03", // cannot_connect_now: starting up, shutting down, recovering
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true // the server closed the connection without a word
	}
	var netErr net.Error
	return errors.As(err, &netErr) // refused, reset, timed out, unreachable, DNS
}

// slotInUseError is "the slot is active in another session". On a first
// start that is a configuration error (two replicators on one slot). Right
// after a lost connection it is usually our own old walsender, which the
// server only notices is gone after wal_sender_timeout, so while
// reconnecting it is waited out like a transient failure.
type slotInUseError struct{ err error }

func (e *slotInUseError) Error() string { return e.err.Error() }
func (e *slotInUseError) Unwrap() error { return e.err }

func slotInUse(err error) error { return &slotInUseError{err: err} }

// slotInUseGrace is how long after Run starts a slot held by another
// session is waited out rather than reported: a replicator restarted right
// after a crash (kill -9) finds its slot still held by the walsender of the
// dead process until the server notices the closed connection, which takes
// moments. A slot still held after this is another process's.
const slotInUseGrace = 15 * time.Second

// IsSlotInUse reports whether err says that the replication slot is held
// by another session: from [CheckServer], from Run's own check before
// streaming, or START_REPLICATION's object_in_use ("replication slot ... is
// active for PID ..."). Run waits such an error out for a while (see
// [Source.Run]), so a pre-flight check before Run need not fail on it.
func IsSlotInUse(err error) bool { return isSlotInUse(err) }

func isSlotInUse(err error) bool {
	var e *slotInUseError
	if errors.As(err, &e) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55006"
}
