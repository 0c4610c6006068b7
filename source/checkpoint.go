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
	queue []*txnMark
	// open is the transaction begun and not sealed while no change of it
	// has been tracked: it joins the queue with its first change, and a
	// transaction that has none never does (see seal). Otherwise every
	// transaction without a change for the handler (one touching only
	// tables outside ours, or an empty one before PostgreSQL 15) would
	// take a slot while acknowledgements stall, growing the queue without
	// bound during a broker outage.
	open      *txnMark
	confirmed pglogrepl.LSN
}

func newCheckpoint(start pglogrepl.LSN) *checkpoint {
	return &checkpoint{confirmed: start}
}

// begin opens a transaction; every change of it adds to its pending count.
func (c *checkpoint) begin() *txnMark {
	m := &txnMark{}
	c.open = m
	return m
}

// track returns the Ack of one more change of m.
func (c *checkpoint) track(m *txnMark) Ack {
	if m == c.open {
		c.queue = append(c.queue, m)
		c.open = nil
	}
	m.pending.Add(1)
	return Ack{m: m}
}

// seal records that m's COMMIT ends at end. A transaction without changes
// takes no slot: its end may be confirmed as soon as everything before it
// is, so it becomes the end of the sealed transaction before it, or is
// confirmed at once when nothing is in flight.
func (c *checkpoint) seal(m *txnMark, end pglogrepl.LSN) {
	if m == c.open {
		c.open = nil
		n := len(c.queue)
		switch {
		case n == 0:
			c.confirmed = max(c.confirmed, end)
			return
		case c.queue[n-1].sealed.Load():
			// Only this goroutine reads end (advance); acks touch pending.
			c.queue[n-1].end = max(c.queue[n-1].end, end)
			return
		}
		c.queue = append(c.queue, m) // behind one still open: wait in line
	}
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
	return len(c.queue) == 0 && c.open == nil
}

// skipTo confirms lsn when nothing is in flight (keepalive on an idle
// stream: WAL written only to unpublished tables still gets released).
func (c *checkpoint) skipTo(lsn pglogrepl.LSN) {
	if c.idle() && lsn > c.confirmed {
		c.confirmed = lsn
	}
}

// oldestCommit is the commit time (UnixNano) of the oldest transaction
// not yet confirmed that holds a slot, 0 when none does.
func (c *checkpoint) oldestCommit() int64 {
	if len(c.queue) == 0 {
		return 0
	}
	return c.queue[0].commit
}

// inFlight is the number of transactions not yet confirmed that hold a
// slot, and the open one.
func (c *checkpoint) inFlight() int {
	if c.open != nil {
		return len(c.queue) + 1
	}
	return len(c.queue)
}
