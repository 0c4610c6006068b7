package source

import (
	"net"
	"time"
)

// gatherBytes is the replication socket's receive low-water mark while
// changes stream in, and gatherWait the longest a receive then waits for
// it: the latency it may add to a transaction's last messages.
const (
	gatherBytes = 16 << 10
	gatherWait  = 2 * time.Millisecond
)

// gather holds back the wake-ups of the WAL receive while changes stream
// in. The walsender sends each pgoutput message on its own (one send per
// row), and a receive woken by each of them takes the CPU from the
// walsender a message at a time. On a busy two-core host (sink-latency,
// bench/analysis.md, "the walsender's lost CPU") the walsender then spent
// half its time runnable but waiting for a CPU, fell behind in episodes of
// 100 ms to seconds (the tail of commit → visible), and both it and
// `replicator run` switched context about twice as often as when the
// walsender was given priority (which also cut run's CPU by a third).
// While messages arrive, the socket's low-water
// mark is gatherBytes and each receive waits at most gatherWait, so a
// receive is woken once per gatherBytes or gatherWait instead of once per
// message. Once a bounded wait ends with nothing received twice in a row
// the stream is idle: the mark goes back to one byte and receives wait as
// long as before, so that an idle stream costs no periodic wake-ups and
// the first message after it is received at once.
type gather struct {
	conn net.Conn
	// set sets conn's low-water mark (setLowWater; replaced in tests).
	set func(conn net.Conn, n int) bool
	// usable: the mark could be set on this connection.
	usable bool
	// on: the mark is gatherBytes and receives are bounded by gatherWait.
	on bool
	// empty counts the bounded waits in a row that ended with nothing
	// received.
	empty int
	// got: a message was received since the last bounded wait ended.
	got bool
}

func newGather(conn net.Conn) gather {
	return gather{conn: conn, set: setLowWater, usable: true}
}

// bound returns how long the next receive may wait: until, or gatherWait
// from now while gathering.
func (g *gather) bound(now, until time.Time) time.Time {
	if d := now.Add(gatherWait); g.on && d.Before(until) {
		return d
	}
	return until
}

// received notes that a message arrived: gathering starts if it had not.
func (g *gather) received() {
	g.got = true
	if g.on || !g.usable {
		return
	}
	if !g.set(g.conn, gatherBytes) {
		g.usable = false
		return
	}
	g.on, g.empty = true, 0
}

// timedOut notes that a receive reached its deadline. Twice in a row with
// nothing received while gathering, and gathering stops. A mark that
// cannot be lowered again stays, and so does the bound on each receive.
func (g *gather) timedOut() {
	if !g.on {
		return
	}
	if g.got {
		g.got, g.empty = false, 0
		return
	}
	g.empty++
	if g.empty < 2 {
		return
	}
	if !g.set(g.conn, 1) {
		g.usable = false
		return
	}
	g.on, g.empty = false, 0
}

// stop lowers the mark again when the reader is done with the connection:
// whatever reads from it next (a reply, the close) must not wait for
// gatherBytes.
func (g *gather) stop() {
	if g.on && g.set(g.conn, 1) {
		g.on, g.empty = false, 0
	}
}
