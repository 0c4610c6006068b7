package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
)

// largeTxnBench is the fixture of the large-transaction benchmark: one
// transaction inserting many rows, written after every run's slots were
// created.
type largeTxnBench struct {
	h      *harness
	cl     *pgcluster.Cluster
	conn   *pgx.Conn
	rows   int64
	target pglogrepl.LSN
}

func largeTxnBenchmark(h *harness) benchmark {
	s := &largeTxnBench{h: h}
	return benchmark{
		name: "large-txn",
		about: "One transaction inserting M rows (one `INSERT … SELECT generate_series`), written after the slots were created. " +
			"pgoutput protocol 1 sends nothing before the commit, so the walsender decodes (and spills) the whole transaction, " +
			"then sends it in one burst: the reader must hold memory bounded by back-pressure, not by the transaction's size. " +
			"Subjects: `replicator run` with the broker (kfake) in a separate process on loopback, and with its embedded broker; " +
			"peak RSS (VmHWM) of the replicator process, read just before it is stopped, and of the broker process. " +
			"The RSS target applies to the first: the guarantee is that `replicator run` never holds a transaction in memory, " +
			"and that process is the replicator alone. With the embedded broker the same process also holds the broker, whose " +
			"compaction passes (kfake's: stop-the-world, reading the whole log back and holding the surviving records in memory " +
			"while rewriting it) grow with the topic, not with anything the replicator holds; its RSS is reported, not judged. " +
			"Reference: the bare reader's peak RSS on the same transaction. Timed as in `stream`.",
		setup:   s.setup,
		ceiling: subject{name: "bare reader", run: s.bare},
		subjects: []subject{
			{name: subjectBrokerProcess, run: func(ctx context.Context, run int) (sample, error) { return s.replicator(ctx, run, true) }},
			{name: "replicator, embedded broker", run: func(ctx context.Context, run int) (sample, error) { return s.replicator(ctx, run, false) }},
		},
		metrics: []metric{
			{key: "peak_rss_mb", label: "peak RSS", unit: "MB", ratio: true,
				target: &target{atLeast: false, value: 300, text: "peak RSS ≤ 300 MB", subject: subjectBrokerProcess}},
			{key: "broker_peak_rss_mb", label: "broker process peak RSS", unit: "MB"},
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s", ratio: true},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s"},
		},
	}
}

func (s *largeTxnBench) setup(ctx context.Context) (string, func() error, error) {
	var err error
	s.cl, s.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		return errors.Join(s.conn.Close(context.Background()), s.cl.Close())
	}
	fail := func(err error) (string, func() error, error) { return "", nil, errors.Join(err, teardown()) }
	for run := 1; run <= s.h.opts.runs; run++ {
		if err := createSlots(ctx, s.conn, fmt.Sprintf("bare_%d", run), fmt.Sprintf("rep_%d", run), fmt.Sprintf("ext_%d", run)); err != nil {
			return fail(err)
		}
	}
	start, err := currentLSN(ctx, s.conn)
	if err != nil {
		return fail(err)
	}
	s.rows = scaled(5_000_000, s.h.opts.scale, txnRows)
	if _, err := s.conn.Exec(ctx, insertSQL(1, s.rows)); err != nil {
		return fail(fmt.Errorf("large transaction: %w", err))
	}
	if s.target, err = currentLSN(ctx, s.conn); err != nil {
		return fail(err)
	}
	if _, err := s.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fail(err)
	}
	return fmt.Sprintf("one transaction of %s inserts, %.0f MB of WAL", thousands(s.rows), mb(int64(s.target-start))), teardown, nil
}

func (s *largeTxnBench) bare(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("bare_%d", run)
	c, err := s.h.startBareReader(fmt.Sprintf("large-%d-bare", run), s.cl.DSN(""), slot, -1)
	if err != nil {
		return nil, err
	}
	defer c.kill()
	f, err := measureStream(ctx, s.conn, c, slot, bareApp, s.target, streamTimeout(s.rows))
	if err != nil {
		return nil, err
	}
	res, err := bareResult(c)
	if err != nil {
		return nil, err
	}
	if res.Rows != s.rows {
		return nil, fmt.Errorf("bare reader read %d rows, want %d", res.Rows, s.rows)
	}
	return s.sample(f), nil
}

func (s *largeTxnBench) replicator(ctx context.Context, run int, external bool) (sample, error) {
	slot := fmt.Sprintf("rep_%d", run)
	var brokers []string
	var broker *child
	if external {
		slot = fmt.Sprintf("ext_%d", run)
		var addr string
		var err error
		if broker, addr, err = s.h.startKfakeServer(fmt.Sprintf("large-%d-kfake", run)); err != nil {
			return nil, err
		}
		defer broker.kill()
		brokers = []string{addr}
	}
	rp, err := s.h.startReplicator(replicatorRun{name: fmt.Sprintf("large-%d-%s", run, slot), dsn: s.cl.DSN(""), slot: slot, snapshot: "never", brokers: brokers})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	f, err := measureStream(ctx, s.conn, rp.child, slot, "replicator", s.target, streamTimeout(s.rows))
	if err != nil {
		return nil, err
	}
	if err := checkRecords(ctx, rp.brokers, s.rows); err != nil {
		return nil, err
	}
	smp := s.sample(f)
	if broker != nil {
		rss, err := procPeakRSS(broker.pid())
		if err != nil {
			return nil, err
		}
		smp["broker_peak_rss_mb"] = mb(rss)
	}
	if err := rp.stop(); err != nil {
		return nil, err
	}
	if broker != nil {
		if err := broker.stop(); err != nil {
			return nil, err
		}
		if err := s.h.cleanup(broker.dir()); err != nil {
			return nil, err
		}
	}
	return smp, s.h.cleanup(rp.dir)
}

func (s *largeTxnBench) sample(f streamFigures) sample {
	return sample{
		"peak_rss_mb":     mb(f.peakRSS),
		"rows_per_s":      float64(s.rows) / f.elapsed.Seconds(),
		"seconds":         f.elapsed.Seconds(),
		"cpu_s":           f.cpu.Seconds(),
		"walsender_cpu_s": f.walCPU.Seconds(),
	}
}

// subjectBrokerProcess names the subjects that run replicator against
// kfake in a separate process.
const subjectBrokerProcess = "replicator, broker process"
