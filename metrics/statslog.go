package metrics

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/replicator/replicator/source"
)

// MinStatsInterval is the shortest log.stats_interval: a line a second is
// already more than anyone reads.
const MinStatsInterval = time.Second

// LogStatsLine is the message of the periodic stats line.
const LogStatsLine = "streaming stats"

// StatsLog writes one line per interval while the stream runs: rows per
// second, lag and confirmed LSN, so that a stalled process does not look
// like an idle one in its log. Outside streaming (start-up, snapshot, which
// has its own progress lines) it stays silent.
type StatsLog struct {
	interval time.Duration
	log      *slog.Logger
	r        *Replication
}

// NewStatsLog logs r's statistics every interval (log.stats_interval).
func NewStatsLog(interval time.Duration, r *Replication, log *slog.Logger) *StatsLog {
	return &StatsLog{interval: max(interval, MinStatsInterval), log: log, r: r}
}

// Run logs until ctx ends.
func (s *StatsLog) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	var prevRows uint64
	var prevAt time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			p := s.r.parts.Load()
			if p == nil {
				continue
			}
			rep := p.source()
			if rep.Phase != source.PhaseStreaming {
				prevAt = time.Time{}
				continue
			}
			rate := 0.0
			if !prevAt.IsZero() && rep.Rows >= prevRows {
				rate = float64(rep.Rows-prevRows) / now.Sub(prevAt).Seconds()
			}
			prevRows, prevAt = rep.Rows, now
			var slot *source.SlotStatus
			if s.r.slot != nil {
				if st, ok, _ := s.r.slot.Last(); ok && st.Exists {
					slot = &st
				}
			}
			lag := LagOf(now, rep, slot)
			ps := p.pipeline()
			attrs := []any{
				"rows_per_second", math.Round(rate*10) / 10,
				"lag_bytes", lag.Bytes,
				"lag_seconds", math.Round(lag.Seconds*10) / 10,
				"confirmed_lsn", rep.ConfirmedLSN,
				"records_in_flight", ps.InFlight,
			}
			if slot != nil {
				attrs = append(attrs, "slot_retained_wal_bytes", slot.RetainedBytes())
			}
			s.log.Info(LogStatsLine, attrs...)
		}
	}
}
