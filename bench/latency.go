package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/bench/stats"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// tickInterval is the load generator's period: one transaction per tick.
const tickInterval = 10 * time.Millisecond

// latencyBench is the fixture of a latency benchmark at one write rate.
type latencyBench struct {
	h        *harness
	rate     int // rows per second
	duration time.Duration
	cl       *pgcluster.Cluster
	conn     *pgx.Conn // polling
	writer   *pgx.Conn // the load
	next     int64     // next key to insert
	// committed, when set, is told the first key each load transaction
	// inserted and when its COMMIT returned (sink-latency's commit times).
	committed func(lo int64, at time.Time)
}

func latencyBenchmark(h *harness, rate int) benchmark {
	s := &latencyBench{h: h, rate: rate, duration: h.opts.duration}
	b := benchmark{
		name: fmt.Sprintf("latency-%dk", rate/1000),
		about: fmt.Sprintf("A steady load of %s rows/s (one transaction every 10 ms: half inserts, half updates of the rows "+
			"inserted by the previous transaction) for the set duration, while the reader streams. "+
			"Subject: `replicator run` with its embedded broker; a franz-go consumer in the benchmark process reads the topic, "+
			"and a record's latency is the time it was received by the consumer minus its `commit_ts` header "+
			"(the transaction's commit time as PostgreSQL stamped it): an upper bound of commit→broker ack, "+
			"since the consumer's fetch is answered as soon as the produce lands. "+
			"Reference (there is no natural ceiling): the bare reader's commit→receive latency for the same load, "+
			"i.e. what the walsender alone costs. A warm-up transaction (not counted) precedes the load.",
			thousands(int64(rate))),
		setup:    s.setup,
		ceiling:  subject{name: "bare reader", run: s.bare},
		subjects: []subject{{name: "replicator, embedded broker", run: s.replicator}},
		metrics: []metric{
			{key: "p50_ms", label: "latency p50", unit: "ms", chart: chartLatency},
			{key: "p99_ms", label: "latency p99", unit: "ms", chart: chartLatency},
			{key: "max_ms", label: "latency max", unit: "ms", chart: chartLatency},
			{key: "rows", label: "rows measured", unit: "rows"},
			{key: "rate", label: "load achieved", unit: "rows/s"},
		},
	}
	if rate == 10_000 {
		b.metrics[1].target = &target{atLeast: false, value: 50, text: "p99 ≤ 50 ms at 10k rows/s"}
	}
	return b
}

func (s *latencyBench) setup(ctx context.Context) (string, func() error, error) {
	var err error
	s.cl, s.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		var errs []error
		if s.writer != nil {
			errs = append(errs, s.writer.Close(context.Background()))
		}
		return errors.Join(append(errs, s.conn.Close(context.Background()), s.cl.Close())...)
	}
	if s.writer, err = pgx.Connect(ctx, s.cl.DSN("")); err != nil {
		return "", nil, errors.Join(err, teardown())
	}
	s.next = 1
	return fmt.Sprintf("%s rows/s for %s: %s-row transactions every %s", thousands(int64(s.rate)), s.duration,
		thousands(int64(s.perTick())), tickInterval), teardown, nil
}

// perTick is the rows changed per transaction; half of them inserts.
func (s *latencyBench) perTick() int {
	return max(2, s.rate*int(tickInterval/time.Millisecond)/1000)
}

// warmUp inserts the rows the first load transaction updates.
func (s *latencyBench) warmUp(ctx context.Context) (int64, error) {
	k := int64(s.perTick() / 2)
	if _, err := s.writer.Exec(ctx, insertSQL(s.next, s.next+k-1)); err != nil {
		return 0, fmt.Errorf("warm-up: %w", err)
	}
	s.next += k
	return k, nil
}

// load writes the steady load: one transaction per tick, inserting k new
// rows and updating the k inserted by the previous one. Bounded by the
// number of ticks and by 1.5× the duration if the database falls behind.
// It returns the rows changed and the rate achieved.
func (s *latencyBench) load(ctx context.Context) (int64, float64, error) {
	k := int64(s.perTick() / 2)
	ticks := int(s.duration / tickInterval)
	start := time.Now()
	deadline := start.Add(s.duration * 3 / 2)
	var rows int64
	for i := range ticks {
		if wait := time.Until(start.Add(time.Duration(i) * tickInterval)); wait > 0 {
			select {
			case <-ctx.Done():
				return rows, 0, ctx.Err()
			case <-time.After(wait):
			}
		}
		if time.Now().After(deadline) {
			break
		}
		lo := s.next
		sql := "BEGIN;" + insertSQL(lo, lo+k-1) + ";" + updateSQL(lo-k, lo-1) + ";COMMIT"
		if _, err := s.writer.Exec(ctx, sql); err != nil {
			return rows, 0, fmt.Errorf("load: %w", err)
		}
		if s.committed != nil {
			s.committed(lo, time.Now())
		}
		s.next += k
		rows += 2 * k
	}
	return rows, float64(rows) / time.Since(start).Seconds(), nil
}

func (s *latencyBench) replicator(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("lat_rep_%d", run)
	rp, err := s.h.startReplicator(replicatorRun{name: fmt.Sprintf("%dk-%d-replicator", s.rate/1000, run), dsn: s.cl.DSN(""), slot: slot, snapshot: "never"})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	tr, _, rate, err := s.measure(ctx, rp)
	if err != nil {
		return nil, err
	}
	if err := rp.stop(); err != nil {
		return nil, err
	}
	if err := dropSlot(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	if s.h.opts.keep {
		if err := writeTrace(filepath.Join(rp.dir, "latency.csv"), tr.recv, tr.lat); err != nil {
			return nil, err
		}
	}
	return latencySample(stats.SummarizeLatencies(tr.lat), rate), s.h.cleanup(rp.dir)
}

// latencyTrace is every record of a load after the warm-up: its latency,
// when it was received and its transaction's commit time.
type latencyTrace struct {
	lat    []time.Duration
	recv   []time.Time
	commit []time.Time
}

// measure writes the warm-up and the load while a consumer reads the
// topic of the replicator rp (streaming already) from its start, and
// returns the latency of every record of the load, the rows written and
// the rate achieved. It fails unless every record of the load arrived.
func (s *latencyBench) measure(ctx context.Context, rp *replicatorProc) (latencyTrace, int64, float64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(rp.brokers...), kgo.ConsumeTopics(tableName),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		return latencyTrace{}, 0, 0, err
	}
	defer cl.Close()

	// The consumer records the latency of every record after the warm-up;
	// want is how many records to wait for, known once the load is written.
	warm := int64(s.perTick() / 2)
	var got, want atomic.Int64
	want.Store(1 << 62)
	var tr latencyTrace
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	warmed := make(chan struct{})
	g.Go(func() error {
		for got.Load() < want.Load() {
			// A bounded poll, so that the loop sees want change even
			// when every record has already arrived.
			pctx, pcancel := context.WithTimeout(gctx, 200*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			now := time.Now()
			if err := gctx.Err(); err != nil {
				return err
			}
			var perr error
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) && perr == nil {
					perr = fmt.Errorf("consume: %w", err)
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				n := got.Add(1)
				if n == warm {
					close(warmed)
				}
				if n <= warm || perr != nil {
					return
				}
				at, err := commitTime(r)
				if err != nil {
					perr = err
					return
				}
				tr.lat = append(tr.lat, now.Sub(at))
				tr.recv = append(tr.recv, now)
				tr.commit = append(tr.commit, at)
			})
			if perr != nil {
				return perr
			}
		}
		return nil
	})
	var rows int64
	var rate float64
	g.Go(func() error {
		if _, err := s.warmUp(gctx); err != nil {
			return err
		}
		select { // the consumer has seen the warm-up: both ends are ready
		case <-warmed:
		case <-gctx.Done():
			return gctx.Err()
		case <-time.After(time.Minute):
			return errors.New("warm-up rows not consumed within a minute")
		}
		var err error
		if rows, rate, err = s.load(gctx); err != nil {
			return err
		}
		want.Store(warm + rows)
		return nil
	})
	if err := waitGroup(g, cancel, s.duration*2+2*time.Minute, rp.alive); err != nil {
		return tr, 0, 0, err
	}
	if int64(len(tr.lat)) != rows {
		return tr, rows, rate, fmt.Errorf("consumed %d records after the warm-up, want %d", len(tr.lat), rows)
	}
	return tr, rows, rate, nil
}

func (s *latencyBench) bare(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("lat_bare_%d", run)
	if err := createSlots(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	c, err := s.h.startBareReader(fmt.Sprintf("%dk-%d-bare", s.rate/1000, run), s.cl.DSN(""), slot, int64(s.perTick()/2))
	if err != nil {
		return nil, err
	}
	defer c.kill()
	if _, err := c.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	if _, err := s.warmUp(ctx); err != nil {
		return nil, err
	}
	lsn, err := currentLSN(ctx, s.conn)
	if err != nil {
		return nil, err
	}
	if _, err := waitConfirmed(ctx, s.conn, slot, lsn, time.Minute, c.alive); err != nil {
		return nil, err
	}
	rows, rate, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if lsn, err = currentLSN(ctx, s.conn); err != nil {
		return nil, err
	}
	if _, err := waitConfirmed(ctx, s.conn, slot, lsn, 2*time.Minute, c.alive); err != nil {
		return nil, err
	}
	res, err := bareResult(c)
	if err != nil {
		return nil, err
	}
	if int64(res.Latency.Count) != rows {
		return nil, fmt.Errorf("bare reader measured %d rows, want %d", res.Latency.Count, rows)
	}
	if err := dropSlot(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	return latencySample(res.Latency, rate), nil
}

// writeTrace writes every record's receive time (seconds since the first)
// and latency, for finding when latency spikes (kept with -keep).
func writeTrace(path string, recv []time.Time, lat []time.Duration) error {
	var b bytes.Buffer
	b.WriteString("received_s,latency_ms\n")
	for i := range lat {
		fmt.Fprintf(&b, "%.3f,%.3f\n", recv[i].Sub(recv[0]).Seconds(), float64(lat[i])/float64(time.Millisecond))
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func latencySample(l stats.Latencies, rate float64) sample {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return sample{"p50_ms": ms(l.P50), "p99_ms": ms(l.P99), "max_ms": ms(l.Max), "rows": float64(l.Count), "rate": rate}
}

// commitTime reads a record's commit_ts header.
func commitTime(r *kgo.Record) (time.Time, error) {
	if v, ok := cdc.Header(r.Headers, cdc.HeaderCommitTime); ok {
		return cdc.ParseCommitTime(v)
	}
	return time.Time{}, fmt.Errorf("record at %s/%d/%d has no %s header", r.Topic, r.Partition, r.Offset, cdc.HeaderCommitTime)
}

// waitGroup waits for g. After timeout, or once alive reports that the
// process g depends on has died, it cancels g's context (cancel) and waits
// for g to end before failing.
func waitGroup(g *errgroup.Group, cancel func(), timeout time.Duration, alive func() error) error {
	done := make(chan error, 1)
	go func() { done <- g.Wait() }() // ends when g does
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	fail := func(err error) error {
		cancel()
		<-done
		return err
	}
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			return fail(fmt.Errorf("not done within %s", timeout))
		case <-tick.C:
			if err := alive(); err != nil {
				return fail(err)
			}
		}
	}
}
