package source

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// progress tracks the initial snapshot table by table: rows handed to the
// handler against PostgreSQL's estimate (pg_class.reltuples), the rate and
// the time left. The emitter counts rows; a reporter goroutine reads the
// counts and either logs a line per table in progress every
// ProgressInterval or redraws a one-line bar on a terminal.
type progress struct {
	tables []tableProgress
	log    *slog.Logger
	bar    io.Writer // nil: log lines
	drawn  bool      // a bar line is on screen and needs a newline at the end
}

type tableProgress struct {
	name     string
	estimate int64        // from reltuples; < 0 when unknown (never analyzed)
	done     atomic.Int64 // rows handed to the handler
	queued   atomic.Int64 // rows decoded and passed to the emitter
	started  atomic.Int64 // UnixNano; 0 until its first chunk is read
	finished atomic.Int64 // UnixNano; 0 until every row is handed over
}

func newProgress(names []string, estimates []int64, log *slog.Logger, bar io.Writer) *progress {
	p := &progress{tables: make([]tableProgress, len(names)), log: log, bar: bar}
	for i := range names {
		p.tables[i].name = names[i]
		p.tables[i].estimate = estimates[i]
	}
	return p
}

func (p *progress) start(i int, now time.Time)  { p.tables[i].started.Store(now.UnixNano()) }
func (p *progress) finish(i int, now time.Time) { p.tables[i].finished.Store(now.UnixNano()) }
func (p *progress) add(i int, n int64)          { p.tables[i].done.Add(n) }
func (p *progress) set(i int, n int64)          { p.tables[i].done.Store(n) }
func (p *progress) queue(i int, n int64)        { p.tables[i].queued.Add(n) }

// tableStat is what a report says about one table at one moment.
type tableStat struct {
	name     string
	done     int64
	buffered int64 // decoded, waiting for the handler
	estimate int64 // < 0 unknown
	rate     float64
	eta      time.Duration // < 0 unknown
}

func (t *tableProgress) stat(now time.Time) tableStat {
	st := tableStat{name: t.name, done: t.done.Load(), estimate: t.estimate, eta: -1}
	st.buffered = max(0, t.queued.Load()-st.done)
	if st.estimate >= 0 && st.done > st.estimate {
		// reltuples is an estimate: never report more than 100 %.
		st.estimate = st.done
	}
	if s := t.started.Load(); s != 0 {
		end := now
		if f := t.finished.Load(); f != 0 {
			end = time.Unix(0, f)
		}
		if d := end.Sub(time.Unix(0, s)); d > 0 {
			st.rate = float64(st.done) / d.Seconds()
		}
	}
	if st.estimate >= 0 && st.rate > 0 {
		st.eta = time.Duration(float64(st.estimate-st.done) / st.rate * float64(time.Second)).Round(time.Second)
	}
	return st
}

// report logs one line per table being read, or redraws the bar.
func (p *progress) report(now time.Time) {
	if p.bar != nil {
		p.drawBar(now)
		return
	}
	for i := range p.tables {
		t := &p.tables[i]
		if t.started.Load() == 0 || t.finished.Load() != 0 {
			continue
		}
		st := t.stat(now)
		attrs := []any{"table", st.name, "rows", st.done}
		if st.estimate >= 0 {
			attrs = append(attrs, "estimated_rows", st.estimate, "percent", percent(st.done, st.estimate))
		}
		attrs = append(attrs, "rows_per_s", int64(st.rate))
		if st.eta >= 0 {
			attrs = append(attrs, "eta", st.eta.String())
		}
		// Rows read ahead of the handler: near the bound (a few batches)
		// when Kafka is the bottleneck, near zero when PostgreSQL is.
		attrs = append(attrs, "buffered_rows", st.buffered)
		p.log.Info("snapshot progress", attrs...)
	}
}

// drawBar writes the whole snapshot as one line, overwritten in place:
// a bar of the total against the estimate, then the tables in progress.
func (p *progress) drawBar(now time.Time) {
	var done, estimate int64
	var rate float64
	known := true
	var parts []string
	for i := range p.tables {
		t := &p.tables[i]
		st := t.stat(now)
		done += st.done
		if st.estimate < 0 {
			known = false
		} else {
			estimate += st.estimate
		}
		if t.started.Load() != 0 && t.finished.Load() == 0 {
			rate += st.rate
			if st.estimate >= 0 {
				parts = append(parts, fmt.Sprintf("%s %d%%", st.name, percent(st.done, st.estimate)))
			} else {
				parts = append(parts, fmt.Sprintf("%s %d rows", st.name, st.done))
			}
		}
	}
	var b strings.Builder
	b.WriteString("\r\x1b[Ksnapshot ")
	if known && estimate > 0 {
		const width = 24
		fill := int(int64(width) * done / estimate)
		b.WriteString("[" + strings.Repeat("#", fill) + strings.Repeat(".", width-fill) + "] ")
		fmt.Fprintf(&b, "%d%% %d/%d rows", percent(done, estimate), done, estimate)
		if rate > 0 {
			eta := time.Duration(float64(estimate-done) / rate * float64(time.Second)).Round(time.Second)
			fmt.Fprintf(&b, ", %d rows/s, ETA %s", int64(rate), eta)
		}
	} else {
		fmt.Fprintf(&b, "%d rows", done)
		if rate > 0 {
			fmt.Fprintf(&b, ", %d rows/s", int64(rate))
		}
	}
	if len(parts) > 0 {
		b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	}
	// A failed write to the terminal is not worth stopping the snapshot.
	_, _ = io.WriteString(p.bar, b.String())
	p.drawn = true
}

// close ends the bar's line so that what follows starts on its own.
func (p *progress) close(now time.Time) {
	if p.bar != nil && p.drawn {
		p.drawBar(now)
		_, _ = io.WriteString(p.bar, "\n")
	}
}

func percent(done, estimate int64) int64 {
	if estimate <= 0 {
		return 100
	}
	return min(100, done*100/estimate)
}
