package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/source"
)

// MinSlotPollInterval bounds how often the slot poller may query the
// server.
const MinSlotPollInterval = time.Second

// slotPollTimeout bounds one poll, connecting included: a server too busy
// to answer within it counts as a failed poll, not a stuck poller.
const slotPollTimeout = 10 * time.Second

// SlotPoller reads the replication slot from pg_replication_slots every
// Interval on a connection of its own (not the stream's, which must never
// wait for it), for the slot metrics and the lag. A failed read is counted
// and logged at debug level, and the connection is made again at the next
// tick: metrics never stop replication. While polls fail it reports no
// slot (see Last). Safe for concurrent use.
type SlotPoller struct {
	connect  func(ctx context.Context) (*pgx.Conn, error)
	slot     string
	interval time.Duration
	log      *slog.Logger

	mu     sync.Mutex // guards last, ok and errors
	last   source.SlotStatus
	ok     bool
	errors uint64
}

// NewSlotPoller polls slot through connections made by connect; interval
// is raised to MinSlotPollInterval.
func NewSlotPoller(connect func(ctx context.Context) (*pgx.Conn, error), slot string, interval time.Duration, log *slog.Logger) *SlotPoller {
	return &SlotPoller{connect: connect, slot: slot, interval: max(interval, MinSlotPollInterval), log: log}
}

// Last is the slot as the last poll read it and the number of failed
// reads; ok is false before the first good poll and after a failed one:
// a slot status that is not current is not reported (the slot gauges
// would otherwise stay at their last values while polls fail).
func (p *SlotPoller) Last() (st source.SlotStatus, ok bool, errors uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.ok, p.errors
}

// Run polls until ctx ends.
func (p *SlotPoller) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		conn = p.poll(ctx, conn)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll reads the slot once, connecting first if needed, and returns the
// connection to use next time (nil after a failure).
func (p *SlotPoller) poll(ctx context.Context, conn *pgx.Conn) *pgx.Conn {
	qctx, cancel := context.WithTimeout(ctx, slotPollTimeout)
	defer cancel()
	var err error
	if conn == nil {
		conn, err = p.connect(qctx)
	}
	var st source.SlotStatus
	if err == nil {
		st, err = source.ReadSlotStatus(qctx, conn, p.slot)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			p.errors++
			p.log.Debug("slot poll failed", "slot", p.slot, "error", err)
		}
		p.last, p.ok = source.SlotStatus{}, false
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
		return nil
	}
	p.last, p.ok = st, true
	return conn
}
