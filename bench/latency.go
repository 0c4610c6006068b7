package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/bench/stats"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// tickInterval is the load generator's period: one transaction per tick
// (latency-1k, latency-10k), or one per row (latency-onerow).
const tickInterval = 10 * time.Millisecond

// oneRowWriters is how many connections write latency-onerow's load. One
// connection runs its transactions one after another in its backend, on
// one core; a few let PostgreSQL commit on both cores while each waits for
// WAL insertion, as many clients do.
const oneRowWriters = 4

// Prepared statement names of the one-row writers.
const (
	stmtInsertOne = "insert_one"
	stmtUpdateOne = "update_one"
)

// latencyBench is the fixture of a latency benchmark at one write rate.
type latencyBench struct {
	h        *harness
	name     string // of the benchmark: names its runs' directories and profiles
	rate     int    // rows per second
	duration time.Duration
	// writers, when set, makes every row change its own transaction,
	// written by that many connections (latency-onerow); 0 writes each
	// tick's rows in one transaction.
	writers int
	cl      *pgcluster.Cluster
	conn    *pgx.Conn   // polling
	writer  *pgx.Conn   // the warm-up, and the load of one transaction per tick
	oneRow  []*pgx.Conn // the one-row load's connections, when writers is set
	next    int64       // next key to insert
	// committed, when set, is told the first key each load transaction
	// inserted and when its COMMIT returned (sink-latency's commit times).
	committed func(lo int64, at time.Time)
}

// latencyAbout is what every latency benchmark measures and how.
const latencyAbout = "Subject: `replicator run` with its embedded broker; a franz-go consumer in the benchmark process reads the topic, " +
	"and a record's latency is the time it was received by the consumer minus its `commit_ts` header " +
	"(the transaction's commit time as PostgreSQL stamped it): an upper bound of commit→broker ack, " +
	"since the consumer's fetch is answered as soon as the produce lands. " +
	"Reference (there is no natural ceiling): the bare reader's commit→receive latency for the same load, " +
	"i.e. what the walsender alone costs. A warm-up transaction (not counted) precedes the load. " +
	"\"writer lag\" is how far the load generator fell behind its schedule at worst: when it is more than a few " +
	"ticks, the database did not take the load and \"load achieved\" says what it took. " +
	"CPU per row is the reader process's (replicator's includes its embedded broker) and its walsender's, from the moment " +
	"it streams until every row of the load was received (replicator) or confirmed (bare reader), warm-up included."

func latencyBenchmark(h *harness, rate int) benchmark {
	s := &latencyBench{h: h, rate: rate, duration: h.opts.duration}
	b := s.benchmark(fmt.Sprintf("latency-%dk", rate/1000), "rows/s",
		fmt.Sprintf("A steady load of %s rows/s (one transaction every 10 ms: half inserts, half updates of the rows "+
			"inserted by the previous transaction) for the set duration, while the reader streams. ", thousands(int64(rate))))
	if rate == 10_000 {
		b.metrics[1].target = &target{atLeast: false, value: 50, text: "p99 ≤ 50 ms at 10k rows/s"}
	}
	return b
}

// oneRowLatencyBenchmark is the latency at 10,000 transactions per second
// of one row each (issue 14): the stream then sees a BEGIN and a COMMIT
// per row, so a fixed cost per transaction is no longer spread over many
// rows.
func oneRowLatencyBenchmark(h *harness) benchmark {
	s := &latencyBench{h: h, rate: 10_000, duration: h.opts.duration, writers: oneRowWriters}
	b := s.benchmark("latency-onerow", "tx/s",
		fmt.Sprintf("A steady load of %s one-row transactions/s for the set duration, while the reader streams: every 10 ms, "+
			"%d single-row INSERT transactions of new rows and %d single-row UPDATE transactions of the rows inserted 10 ms "+
			"before, split over %d connections whose ticks are staggered across the 10 ms; each connection sends its share "+
			"of a tick as one pipeline of prepared statements (a Sync after each, so each is its own transaction) and "+
			"reads the results before its next tick. ", thousands(int64(s.rate)), s.perTick()/2, s.perTick()/2, s.writers))
	b.chartName = "10k one-row tx/s"
	b.metrics[1].target = &target{atLeast: false, value: 50, text: "p99 ≤ 50 ms at 10k one-row tx/s", subject: subjectEmbedded}
	return b
}

// benchmark is the benchmark of s, named name; rateUnit is the unit of
// the load achieved, about starts its description.
func (s *latencyBench) benchmark(name, rateUnit, about string) benchmark {
	s.name = name
	return benchmark{
		name:     name,
		about:    about + latencyAbout,
		setup:    s.setup,
		ceiling:  subject{name: "bare reader", run: s.bare},
		subjects: []subject{{name: subjectEmbedded, run: s.replicator}},
		metrics: []metric{
			{key: "p50_ms", label: "latency p50", unit: "ms", chart: chartLatency},
			{key: "p99_ms", label: "latency p99", unit: "ms", chart: chartLatency},
			{key: "max_ms", label: "latency max", unit: "ms", chart: chartLatency},
			{key: "rows", label: "rows measured", unit: "rows"},
			{key: "rate", label: "load achieved", unit: rateUnit},
			{key: "lag_ms", label: "writer lag", unit: "ms"},
			{key: "cpu_us", label: "reader CPU per row", unit: "µs", ratio: true},
			{key: "walsender_cpu_us", label: "walsender CPU per row", unit: "µs", ratio: true},
		},
	}
}

func (s *latencyBench) setup(ctx context.Context) (string, func() error, error) {
	var err error
	s.cl, s.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		var errs []error
		for _, c := range append([]*pgx.Conn{s.writer}, s.oneRow...) {
			if c != nil {
				errs = append(errs, c.Close(context.Background()))
			}
		}
		return errors.Join(append(errs, s.conn.Close(context.Background()), s.cl.Close())...)
	}
	if s.writer, err = pgx.Connect(ctx, s.cl.DSN("")); err != nil {
		return "", nil, errors.Join(err, teardown())
	}
	s.oneRow = nil
	for range s.writers {
		c, err := pgx.Connect(ctx, s.cl.DSN(""))
		if err != nil {
			return "", nil, errors.Join(err, teardown())
		}
		s.oneRow = append(s.oneRow, c)
		for name, sql := range map[string]string{
			stmtInsertOne: insertRowsSQL("$1", "$1", "'note ' || md5(g::text)"),
			stmtUpdateOne: updateRowsSQL("$1", "$1"),
		} {
			if _, err := c.PgConn().Prepare(ctx, name, sql, nil); err != nil {
				return "", nil, errors.Join(fmt.Errorf("prepare %s: %w", name, err), teardown())
			}
		}
	}
	s.next = 1
	if s.writers > 0 {
		return fmt.Sprintf("%s one-row transactions/s for %s: every %s, %d INSERT and %d UPDATE transactions over %d pipelined connections",
			thousands(int64(s.rate)), s.duration, tickInterval, s.perTick()/2, s.perTick()/2, s.writers), teardown, nil
	}
	return fmt.Sprintf("%s rows/s for %s: %s-row transactions every %s", thousands(int64(s.rate)), s.duration,
		thousands(int64(s.perTick())), tickInterval), teardown, nil
}

// runName names a run's directory and profiles (-keep, -profile): one per
// benchmark, run and reader, so that latency-10k and latency-onerow in one
// suite do not overwrite each other's.
func (s *latencyBench) runName(run int, reader string) string {
	return fmt.Sprintf("%s-%d-%s", s.name, run, reader)
}

// perTick is the rows changed per tick; half of them inserts.
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

// loadFigures are what a load wrote.
type loadFigures struct {
	rows int64
	rate float64       // rows per second achieved
	lag  time.Duration // the worst delay of a tick's writes behind its schedule
}

// load writes the steady load: every tick, k new rows inserted and the k
// inserted by the previous tick updated. Bounded by the number of ticks
// and by 1.5× the duration if the database falls behind, which it says:
// the latencies are then those of a lower rate.
func (s *latencyBench) load(ctx context.Context) (loadFigures, error) {
	write := s.loadTxn
	if s.writers > 0 {
		write = s.loadOneRow
	}
	f, err := write(ctx)
	if err == nil && f.rate < 0.95*float64(s.rate) {
		s.h.logf("the load reached %s of %s row changes/s: its writes fell behind their schedule by up to %s "+
			"(the database did not take them as fast; check the machine's load)",
			thousands(int64(f.rate)), thousands(int64(s.rate)), f.lag.Round(time.Millisecond))
	}
	return f, err
}

// loadTxn writes the load of load in one transaction per tick.
func (s *latencyBench) loadTxn(ctx context.Context) (loadFigures, error) {
	k := int64(s.perTick() / 2)
	ticks := int(s.duration / tickInterval)
	start := time.Now()
	deadline := start.Add(s.duration * 3 / 2)
	var f loadFigures
	for i := range ticks {
		at := start.Add(time.Duration(i) * tickInterval)
		if err := sleepUntil(ctx, at); err != nil {
			return f, err
		}
		now := time.Now()
		if now.After(deadline) {
			break
		}
		f.lag = max(f.lag, now.Sub(at))
		lo := s.next
		sql := "BEGIN;" + insertSQL(lo, lo+k-1) + ";" + updateSQL(lo-k, lo-1) + ";COMMIT"
		if _, err := s.writer.Exec(ctx, sql); err != nil {
			return f, fmt.Errorf("load: %w", err)
		}
		if s.committed != nil {
			s.committed(lo, time.Now())
		}
		s.next += k
		f.rows += 2 * k
	}
	f.rate = float64(f.rows) / time.Since(start).Seconds()
	return f, nil
}

// loadOneRow writes the load of load as one-row transactions: of the k
// inserts and k updates of a tick, writer w of n takes the keys j in
// [w·k/n, (w+1)·k/n) of the tick (insert next+i·k+j, update the key k
// below it), so each writer updates only rows it inserted itself and never
// waits for another. Writer w's tick i is due at start + i·tick + w·tick/n,
// so the commits spread over the tick.
func (s *latencyBench) loadOneRow(ctx context.Context) (loadFigures, error) {
	k := int64(s.perTick() / 2)
	n := int64(len(s.oneRow))
	ticks := int64(s.duration / tickInterval)
	base := s.next
	start := time.Now()
	deadline := start.Add(s.duration * 3 / 2)
	figs := make([]loadFigures, n)
	g, gctx := errgroup.WithContext(ctx)
	for w := range n {
		g.Go(func() error {
			f := &figs[w]
			pg := s.oneRow[w].PgConn()
			lo, hi := w*k/n, (w+1)*k/n
			offset := time.Duration(w) * tickInterval / time.Duration(n)
			for i := range ticks {
				at := start.Add(time.Duration(i)*tickInterval + offset)
				if err := sleepUntil(gctx, at); err != nil {
					return err
				}
				now := time.Now()
				if now.After(deadline) {
					break
				}
				f.lag = max(f.lag, now.Sub(at))
				first := base + i*k
				if err := writeOneRow(gctx, pg, first+lo, first+hi, k); err != nil {
					return fmt.Errorf("load, writer %d: %w", w, err)
				}
				f.rows += 2 * (hi - lo)
			}
			return nil
		})
	}
	err := g.Wait()
	elapsed := time.Since(start)
	s.next = base + ticks*k // past every key a writer may have inserted
	var total loadFigures
	for _, f := range figs {
		total.rows += f.rows
		total.lag = max(total.lag, f.lag)
	}
	total.rate = float64(total.rows) / elapsed.Seconds()
	return total, err
}

// writeOneRow inserts the rows with keys lo..hi-1 and updates those with
// keys k below them, each in its own transaction, in one pipeline, and
// checks that each statement changed exactly one row.
func writeOneRow(ctx context.Context, pg *pgconn.PgConn, lo, hi, k int64) error {
	p := pg.StartPipeline(ctx)
	syncs := 0
	for key := lo; key < hi; key++ {
		p.SendQueryPrepared(stmtInsertOne, [][]byte{strconv.AppendInt(nil, key, 10)}, nil, nil)
		p.SendPipelineSync()
		p.SendQueryPrepared(stmtUpdateOne, [][]byte{strconv.AppendInt(nil, key-k, 10)}, nil, nil)
		p.SendPipelineSync()
		syncs += 2
	}
	if err := p.Flush(); err != nil {
		return err // the pipeline is closed
	}
	var err error
	for err == nil && syncs > 0 {
		var res any
		if res, err = p.GetResults(); err != nil {
			break
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			var tag pgconn.CommandTag
			if tag, err = r.Close(); err == nil && tag.RowsAffected() != 1 {
				err = fmt.Errorf("%s changed %d rows, want 1 (keys %d..%d)", tag, tag.RowsAffected(), lo, hi-1)
			}
		case *pgconn.PipelineSync:
			syncs--
		case nil:
			err = fmt.Errorf("pipeline ended with %d transactions unanswered", syncs)
		}
	}
	return errors.Join(err, p.Close())
}

// sleepUntil waits until t, or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	wait := time.Until(t)
	if wait <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

func (s *latencyBench) replicator(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("lat_rep_%d", run)
	rp, err := s.h.startReplicator(replicatorRun{name: s.runName(run, "replicator"), dsn: s.cl.DSN(""), slot: slot, snapshot: "never"})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	cpu, err := startReaderCPU(ctx, s.conn, rp.child, "replicator")
	if err != nil {
		return nil, err
	}
	tr, ld, err := s.measure(ctx, rp)
	if err != nil {
		return nil, err
	}
	used, err := cpu.end()
	if err != nil {
		return nil, err
	}
	smp := latencySample(stats.SummarizeLatencies(tr.lat), ld)
	used.add(smp)
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
	return smp, s.h.cleanup(rp.dir)
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
// returns the latency of every record of the load and what the load
// wrote. It fails unless every record of the load arrived.
func (s *latencyBench) measure(ctx context.Context, rp *replicatorProc) (latencyTrace, loadFigures, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(rp.brokers...), kgo.ConsumeTopics(tableName),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		return latencyTrace{}, loadFigures{}, err
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
	var ld loadFigures
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
		if ld, err = s.load(gctx); err != nil {
			return err
		}
		want.Store(warm + ld.rows)
		return nil
	})
	if err := waitGroup(g, cancel, s.duration*2+2*time.Minute, rp.alive); err != nil {
		return tr, ld, err
	}
	if int64(len(tr.lat)) != ld.rows {
		return tr, ld, fmt.Errorf("consumed %d records after the warm-up, want %d", len(tr.lat), ld.rows)
	}
	return tr, ld, nil
}

func (s *latencyBench) bare(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("lat_bare_%d", run)
	if err := createSlots(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	c, err := s.h.startBareReader(s.runName(run, "bare"), s.cl.DSN(""), slot, int64(s.perTick()/2))
	if err != nil {
		return nil, err
	}
	defer c.kill()
	if _, err := c.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	cpu, err := startReaderCPU(ctx, s.conn, c, bareApp)
	if err != nil {
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
	ld, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if lsn, err = currentLSN(ctx, s.conn); err != nil {
		return nil, err
	}
	if _, err := waitConfirmed(ctx, s.conn, slot, lsn, 2*time.Minute, c.alive); err != nil {
		return nil, err
	}
	used, err := cpu.end()
	if err != nil {
		return nil, err
	}
	res, err := bareResult(c)
	if err != nil {
		return nil, err
	}
	if int64(res.Latency.Count) != ld.rows {
		return nil, fmt.Errorf("bare reader measured %d rows, want %d", res.Latency.Count, ld.rows)
	}
	if err := dropSlot(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	smp := latencySample(res.Latency, ld)
	used.add(smp)
	return smp, nil
}

// startReaderCPU starts a window on reader, whose walsender has
// application_name app.
func startReaderCPU(ctx context.Context, conn *pgx.Conn, reader *child, app string) (*cpuWindow, error) {
	wal, err := findWalsender(ctx, conn, app)
	if err != nil {
		return nil, errors.Join(err, reader.alive())
	}
	return startCPU(reader, wal)
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

func latencySample(l stats.Latencies, ld loadFigures) sample {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return sample{"p50_ms": ms(l.P50), "p99_ms": ms(l.P99), "max_ms": ms(l.Max), "rows": float64(l.Count), "rate": ld.rate,
		"lag_ms": ms(ld.lag)}
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
