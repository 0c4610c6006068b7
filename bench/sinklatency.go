package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/bench/stats"
	"golang.org/x/sync/errgroup"
)

// sinkLatencyRate is the writer of sink-latency, in rows per second.
const sinkLatencyRate = 10_000

// pollQuery is the read-model poller's query: the rows of keys from $1
// whose version may not have been visible to the snapshot $2 of its
// previous query (all of them when $2 is null), and this query's
// snapshot, in a row of its own (the one with a snapshot). One statement
// reads with one snapshot, and a version its previous snapshot did not
// see was written by a transaction that was running or not yet begun
// then: its xmin is not older than that snapshot's xmin, subtransactions
// included (the sink writes under a savepoint, and pg_snapshot lists
// top-level transactions only, so pg_visible_in_snapshot would call a
// running subtransaction's rows visible). A few versions the previous
// query did see come again; only a version's first sighting counts.
// The ages compare xids modulo 2^32, as the server does. Returning only
// those rows instead of the whole range keeps the poller's own backend
// from taking a quarter of the two cores (measured: 0.55 core before,
// about 0.07 after).
const pollQuery = "SELECT 0::bigint, 0::bigint, pg_current_snapshot()::text UNION ALL " +
	"SELECT id, quantity, NULL FROM " + readModel + " WHERE id >= $1 AND " +
	"($2::text IS NULL OR age(xmin) <= age(xid(pg_snapshot_xmin($2::text::pg_snapshot))))"

// visiblePoll is how long the read-model poller of sink-latency waits
// between two queries: the resolution of the visibility times.
const visiblePoll = 2 * time.Millisecond

// sinkLatencyBench is the fixture of sink-latency: the latency benchmark's
// source and load, and a PostgreSQL read model.
type sinkLatencyBench struct {
	lat *latencyBench
	rm  *pgStore
}

func sinkLatencyBenchmark(h *harness) benchmark {
	s := &sinkLatencyBench{lat: &latencyBench{h: h, rate: sinkLatencyRate, duration: h.opts.duration}, rm: &pgStore{}}
	subj := "replicator run + sink"
	return benchmark{
		name: "sink-latency",
		about: fmt.Sprintf("The latency benchmark's load (%s rows/s on the bench table, one transaction every 10 ms: half inserts, "+
			"half updates of the rows the previous one inserted) for the set duration, bounded in transactions and time. "+
			"Subject: `replicator run` (embedded broker, new slot per run) streams the table, and `replicator sink` applies it "+
			"into a PostgreSQL read model (every column, keyed by id) in a cluster of its own, emptied before each run. "+
			"A change's latency is the time it became visible to a reader of the read model minus its commit time in the source: "+
			"the commit time is when the writer's COMMIT returned (later than the commit by the reply's trip on loopback), "+
			"visibility is the reply time of the first query that shows the row's new version (its `quantity` tells the "+
			"inserted from the updated version) from a poller running `SELECT id, quantity … WHERE id >= (oldest row not yet "+
			"seen in its final version)` on its own connection every %s: an upper bound, by at most one poll and one query. "+
			"The poller asks only for the row versions its previous query's snapshot may not have seen (xmin not older than that "+
			"snapshot's xmin, the snapshot returned by the same statement), so that it does not send the whole range back "+
			"each time: until 2026-12-07 it did, and its backend took about a quarter of the two cores (0.55 core) from the subject; "+
			"its backend's CPU is reported. "+
			"Every change of the load must be seen. The sink's CPU and peak RSS (VmHWM) are read before it is stopped. "+
			"A warm-up transaction (not counted) is waited for before the load starts. No ceiling: what the sink adds to "+
			"commit→topic is `latency-10k`'s figure beside it.",
			thousands(sinkLatencyRate), visiblePoll),
		setup:    s.setup,
		subjects: []subject{{name: subj, run: s.run}},
		metrics: []metric{
			{key: "p50_ms", label: "latency p50", unit: "ms"},
			{key: "p99_ms", label: "latency p99", unit: "ms",
				target: &target{atLeast: false, value: 100, text: "p99 ≤ 100 ms at 10k rows/s, commit → visible in the read model"}},
			{key: "max_ms", label: "latency max", unit: "ms"},
			{key: "rows", label: "changes measured", unit: "rows"},
			{key: "rate", label: "load achieved", unit: "rows/s"},
			{key: "sink_cpu_s", label: "sink CPU", unit: "s"},
			{key: "sink_peak_rss_mb", label: "sink peak RSS", unit: "MB"},
			{key: "poller_cpu_s", label: "poller's backend CPU", unit: "s"},
		},
	}
}

func (s *sinkLatencyBench) setup(ctx context.Context) (string, func() error, error) {
	workload, teardown, err := s.lat.setup(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := s.rm.start(ctx, s.lat.h); err != nil {
		return "", nil, errors.Join(err, s.rm.close(), teardown())
	}
	return workload + ", into a PostgreSQL read model", func() error { return errors.Join(s.rm.close(), teardown()) }, nil
}

// changeTimes are the commit and visibility times of every row of one
// run, by key - base: its insert and its update (zero: not (yet) known).
type changeTimes struct {
	base                   int64
	insertAt, updateAt     []time.Time // commit of the insert, the update
	insertSeen, updateSeen []time.Time // first reply showing that version
}

func (s *sinkLatencyBench) run(ctx context.Context, run int) (sample, error) {
	h := s.lat.h
	slot := fmt.Sprintf("sinklat_%d", run)
	rp, err := h.startReplicator(replicatorRun{name: fmt.Sprintf("sinklat-%d-replicator", run), dsn: s.lat.cl.DSN(""), slot: slot, snapshot: "never"})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	if err := s.rm.reset(ctx); err != nil {
		return nil, fmt.Errorf("reset the read model: %w", err)
	}
	dir, err := h.dir(fmt.Sprintf("sinklat-%d-sink", run))
	if err != nil {
		return nil, err
	}
	cfg, err := writeSinkConfig(dir, rp, s.rm.url())
	if err != nil {
		return nil, err
	}
	sk, err := startChild("replicator sink", filepath.Join(dir, "replicator.log"), nil, h.replicator, h.profileArgs(dir, "sink", "--config", cfg)...)
	if err != nil {
		return nil, err
	}
	defer sk.kill()
	reader, err := pgx.Connect(ctx, s.rm.url())
	if err != nil {
		return nil, err
	}
	defer reader.Close(context.WithoutCancel(ctx))

	k := int64(s.lat.perTick() / 2)
	ticks := int64(s.lat.duration / tickInterval)
	n := k * (ticks + 1)
	ct := &changeTimes{base: s.lat.next, insertAt: make([]time.Time, n), updateAt: make([]time.Time, n),
		insertSeen: make([]time.Time, n), updateSeen: make([]time.Time, n)}
	if err := waitTable(ctx, reader, time.Minute, errorsOf(sk.alive, rp.alive)); err != nil {
		return nil, err
	}
	if _, err := s.lat.warmUp(ctx); err != nil {
		return nil, err
	}
	// Both ends are ready once the warm-up's rows are visible.
	if err := s.pollUntil(ctx, reader, ct, ct.base, ct.base+k, false, time.Minute, errorsOf(sk.alive, rp.alive)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	cpu0, err := procCPU(sk.pid())
	if err != nil {
		return nil, err
	}
	// The poller's backend shares the two cores with the subject: its CPU
	// is reported, so that the measurement's own cost is in sight.
	var pollerPID int
	if err := reader.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pollerPID); err != nil {
		return nil, err
	}
	pcpu0, err := procCPU(pollerPID)
	if err != nil {
		return nil, err
	}
	s.lat.committed = func(lo int64, at time.Time) {
		for key := lo; key < lo+k; key++ {
			ct.insertAt[key-ct.base] = at
			ct.updateAt[key-k-ct.base] = at
		}
	}
	defer func() { s.lat.committed = nil }()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	loaded := make(chan int64, 1) // the end of the inserted keys, once the load is done
	var ld loadFigures
	g.Go(func() error {
		var err error
		if ld, err = s.lat.load(gctx); err != nil {
			return err
		}
		loaded <- s.lat.next
		return nil
	})
	g.Go(func() error {
		return s.pollUntil(gctx, reader, ct, ct.base, 0, true, 0, nil, loaded)
	})
	if err := waitGroup(g, cancel, s.lat.duration*2+2*time.Minute, errorsOf(sk.alive, rp.alive)); err != nil {
		return nil, err
	}
	cpu1, err1 := procCPU(sk.pid())
	rss, err2 := procPeakRSS(sk.pid())
	pcpu1, err3 := procCPU(pollerPID)
	if err := errors.Join(err1, err2, err3, sk.stop(), rp.stop(), dropSlot(ctx, s.lat.conn, slot)); err != nil {
		return nil, err
	}
	lat, err := ct.latencies(k)
	if err != nil {
		return nil, err
	}
	smp := latencySample(stats.SummarizeLatencies(lat), ld)
	smp["sink_cpu_s"] = (cpu1 - cpu0).Seconds()
	smp["sink_peak_rss_mb"] = mb(rss)
	smp["poller_cpu_s"] = (pcpu1 - pcpu0).Seconds()
	return smp, errors.Join(h.cleanup(dir), h.cleanup(rp.dir))
}

// waitTable waits until the sink has created the read model's table.
func waitTable(ctx context.Context, conn *pgx.Conn, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", readModel).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sink did not create table %s within %s", readModel, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// errorsOf joins what several alive checks report.
func errorsOf(checks ...func() error) func() error {
	return func() error {
		var errs []error
		for _, c := range checks {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}
}

// pollUntil polls the read model and records when each version of a row
// was first seen, until every key of [from, to) is seen inserted (and,
// with updates, every key before the last transaction's updated). With
// done set, to is learnt from it once the load has ended. It fails after
// timeout (0: none, the caller bounds it) or once alive reports an error.
func (s *sinkLatencyBench) pollUntil(ctx context.Context, conn *pgx.Conn, ct *changeTimes, from, to int64, updates bool,
	timeout time.Duration, alive func() error, done ...chan int64) error {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	k := int64(s.lat.perTick() / 2)
	low := from
	var prev *string // the snapshot of the previous query: its rows are known
	for {
		if len(done) > 0 && to == 0 {
			select {
			case to = <-done[0]:
			default:
			}
		}
		// final: a key's last version is its update unless its insert was
		// the load's last transaction (or this is the warm-up).
		final := func(key int64) bool {
			i := key - ct.base
			if !ct.insertSeen[i].IsZero() && (!updates || (to != 0 && key >= to-k)) {
				return true
			}
			return !ct.updateSeen[i].IsZero()
		}
		limit := to
		if limit == 0 {
			limit = ct.base + int64(len(ct.insertSeen))
		}
		for low < limit && final(low) {
			low++
		}
		if to != 0 && low >= to {
			return nil
		}
		rows, err := conn.Query(ctx, pollQuery, low, prev)
		if err != nil {
			return fmt.Errorf("poll the read model: %w", err)
		}
		var ids, qs []int64
		snap := prev
		for rows.Next() {
			var id, q int64
			var sn *string
			if err := rows.Scan(&id, &q, &sn); err != nil {
				rows.Close()
				return err
			}
			if sn != nil {
				snap = sn
				continue
			}
			ids, qs = append(ids, id), append(qs, q)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("poll the read model: %w", err)
		}
		prev = snap
		now := time.Now()
		for j, id := range ids {
			i := id - ct.base
			if i < 0 || i >= int64(len(ct.insertSeen)) {
				return fmt.Errorf("read model row %d outside the keys written (%d…)", id, ct.base)
			}
			if ct.insertSeen[i].IsZero() {
				ct.insertSeen[i] = now
			}
			if qs[j] != id%1000 && ct.updateSeen[i].IsZero() { // updateSQL adds 1
				ct.updateSeen[i] = now
			}
		}
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		if !deadline.IsZero() && now.After(deadline) {
			return fmt.Errorf("rows from %d not all visible within %s", low, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(visiblePoll):
		}
	}
}

// latencies returns the latency of every change of the load: the update
// of the warm-up's rows, then each load transaction's inserts and the
// updates of the next one.
func (ct *changeTimes) latencies(k int64) ([]time.Duration, error) {
	var out []time.Duration
	for i := range ct.insertAt {
		if i >= int(k) && !ct.insertAt[i].IsZero() {
			if ct.insertSeen[i].IsZero() {
				return nil, fmt.Errorf("insert of key %d never seen", ct.base+int64(i))
			}
			out = append(out, ct.insertSeen[i].Sub(ct.insertAt[i]))
		}
		if !ct.updateAt[i].IsZero() {
			if ct.updateSeen[i].IsZero() {
				return nil, fmt.Errorf("update of key %d never seen", ct.base+int64(i))
			}
			out = append(out, ct.updateSeen[i].Sub(ct.updateAt[i]))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no change measured")
	}
	return out, nil
}
