package source

import "github.com/jackc/pglogrepl"

// checkpoint computes the LSN that may be confirmed to PostgreSQL: the end
// of the newest transaction such that it and every transaction before it
// have been committed in the WAL and fully acknowledged by the handler.
// Transactions are acknowledged out of order (records of one transaction go
// to many partitions), so a finished transaction behind an unfinished one
// waits.
//
// checkpoint is owned by the stream goroutine; only txnMark.pending is
// touched from other goroutines (through Ack.Done).
type checkpoint struct {
	queue     []*txnMark
	confirmed pglogrepl.LSN
}

func newCheckpoint(start pglogrepl.LSN) *checkpoint {
	return &checkpoint{confirmed: start}
}

// begin opens a transaction; every change of it adds to its pending count.
func (c *checkpoint) begin() *txnMark {
	m := &txnMark{}
	c.queue = append(c.queue, m)
	return m
}

// track returns the Ack of one more change of m.
func (c *checkpoint) track(m *txnMark) Ack {
	m.pending.Add(1)
	return Ack{m: m}
}

// seal records that m's COMMIT ends at end.
func (c *checkpoint) seal(m *txnMark, end pglogrepl.LSN) {
	m.end = end
	m.sealed.Store(true)
}

// advance pops every leading transaction that is sealed and acknowledged
// and returns the confirmed LSN.
func (c *checkpoint) advance() pglogrepl.LSN {
	n := 0
	for _, m := range c.queue {
		if !m.sealed.Load() || m.pending.Load() > 0 {
			break
		}
		if m.end > c.confirmed {
			c.confirmed = m.end
		}
		n++
	}
	if n > 0 {
		clear(c.queue[:n])
		c.queue = c.queue[n:]
	}
	return c.confirmed
}

// idle reports whether nothing is in flight, so the position the server
// reports in a keepalive may be confirmed.
func (c *checkpoint) idle() bool {
	c.advance()
	return len(c.queue) == 0
}

// skipTo confirms lsn when nothing is in flight (keepalive on an idle
// stream: WAL written only to unpublished tables still gets released).
func (c *checkpoint) skipTo(lsn pglogrepl.LSN) {
	if c.idle() && lsn > c.confirmed {
		c.confirmed = lsn
	}
}

// inFlight is the number of transactions not yet confirmed.
func (c *checkpoint) inFlight() int { return len(c.queue) }
