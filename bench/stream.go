package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
)

// streamBench is the fixture of the stream benchmark: a backlog of changes
// written after every run's slots were created, so that every run of every
// reader streams exactly the same WAL.
type streamBench struct {
	h      *harness
	cl     *pgcluster.Cluster
	conn   *pgx.Conn
	rows   int64         // changes in the backlog
	target pglogrepl.LSN // pg_current_wal_lsn() after the backlog
}

func streamBenchmark(h *harness) benchmark {
	s := &streamBench{h: h}
	return benchmark{
		name: "stream",
		about: "A backlog of N inserts, N updates and N/5 deletes in 1,000-row transactions is written " +
			"after the slots were created (one per reader and run, so all stream the same WAL). " +
			"Each reader is started after the backlog exists and timed from its \"streaming\" log line " +
			"until the slot's `confirmed_flush_lsn` reaches `pg_current_wal_lsn()` taken after the backlog " +
			"(polled every 20 ms; both readers confirm every 100 ms). " +
			"Subject: `replicator run` (`source.snapshot: never`), with its embedded broker, and with the same " +
			"broker (kfake) in a separate process on loopback. Ceiling: the bare reader (`bench/barereader`): " +
			"pgoutput parsed, every column's text decoded to a typed value, LSN confirmed as it goes; no Avro, no Kafka. " +
			"CPU is user+system time from /proc over the timed window (replicator's includes its embedded broker's, when embedded); the walsender is found in " +
			"`pg_stat_replication` by application_name. Every run checks that the topic holds exactly one record per change.",
		setup:   s.setup,
		ceiling: subject{name: "bare reader", run: s.bare},
		subjects: []subject{
			{name: "replicator, embedded broker", run: func(ctx context.Context, run int) (sample, error) {
				return s.replicator(ctx, run, false)
			}},
			{name: subjectBrokerProcess, run: func(ctx context.Context, run int) (sample, error) {
				return s.replicator(ctx, run, true)
			}},
		},
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio,
				target: &target{ofRatio: true, atLeast: true, value: 0.9, text: "≥ 0.9× bare reader"}},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s", ratio: true},
			{key: "cpu_us_per_row", label: "reader CPU per row", unit: "µs"},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s", ratio: true},
			{key: "walsender_busy", label: "walsender busy", unit: "%"},
			{key: "broker_cpu_s", label: "broker process CPU", unit: "s"},
			{key: "peak_rss_mb", label: "reader peak RSS", unit: "MB"},
			{key: "startup_s", label: "start-up", unit: "s"},
		},
	}
}

func (s *streamBench) slotNames(run int) (bare, embedded, external string) {
	return fmt.Sprintf("bare_%d", run), fmt.Sprintf("emb_%d", run), fmt.Sprintf("ext_%d", run)
}

func (s *streamBench) setup(ctx context.Context) (string, func() error, error) {
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
		b, e, x := s.slotNames(run)
		if err := createSlots(ctx, s.conn, b, e, x); err != nil {
			return fail(err)
		}
	}
	start, err := currentLSN(ctx, s.conn)
	if err != nil {
		return fail(err)
	}
	n := scaled(1_000_000, s.h.opts.scale, txnRows)
	dsn := s.cl.DSN("")
	for _, step := range []struct {
		to   int64
		stmt func(lo, hi int64) string
	}{{n, insertSQL}, {n, updateSQL}, {n / 5, deleteSQL}} {
		if err := changeInBatches(ctx, dsn, 1, step.to, txnRows, 2, step.stmt); err != nil {
			return fail(fmt.Errorf("backlog: %w", err))
		}
	}
	if s.target, err = currentLSN(ctx, s.conn); err != nil {
		return fail(err)
	}
	if _, err := s.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fail(err)
	}
	s.rows = 2*n + n/5
	workload := fmt.Sprintf("backlog of %s inserts + %s updates + %s deletes = %s changes in %s-row transactions, %.0f MB of WAL",
		thousands(n), thousands(n), thousands(n/5), thousands(s.rows), thousands(txnRows), mb(int64(s.target-start)))
	return workload, teardown, nil
}

func (s *streamBench) bare(ctx context.Context, run int) (sample, error) {
	slot, _, _ := s.slotNames(run)
	c, err := s.h.startBareReader(fmt.Sprintf("stream-%d-bare", run), s.cl.DSN(""), slot, -1)
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

func (s *streamBench) replicator(ctx context.Context, run int, external bool) (sample, error) {
	_, slot, ext := s.slotNames(run)
	if external {
		slot = ext
	}
	name := slot // names the run's directory (and profile): one per subject
	var brokers []string
	var broker *child
	var brokerCPU0 time.Duration
	if external {
		var addr string
		var err error
		if broker, addr, err = s.h.startKfakeServer(fmt.Sprintf("stream-%d-kfake", run)); err != nil {
			return nil, err
		}
		defer broker.kill()
		brokers = []string{addr}
		if brokerCPU0, err = procCPU(broker.pid()); err != nil {
			return nil, err
		}
	}
	rp, err := s.h.startReplicator(replicatorRun{name: fmt.Sprintf("stream-%d-%s", run, name), dsn: s.cl.DSN(""), slot: slot, snapshot: "never", brokers: brokers})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	f, err := measureStream(ctx, s.conn, rp.child, slot, "replicator", s.target, streamTimeout(s.rows))
	if err != nil {
		return nil, err
	}
	smp := s.sample(f)
	if broker != nil {
		cpu, err := procCPU(broker.pid())
		if err != nil {
			return nil, err
		}
		smp["broker_cpu_s"] = (cpu - brokerCPU0).Seconds()
	}
	if err := checkRecords(ctx, rp.brokers, s.rows); err != nil {
		return nil, err
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

func (s *streamBench) sample(f streamFigures) sample {
	return sample{
		"rows_per_s":      float64(s.rows) / f.elapsed.Seconds(),
		"seconds":         f.elapsed.Seconds(),
		"cpu_s":           f.cpu.Seconds(),
		"cpu_us_per_row":  float64(f.cpu.Microseconds()) / float64(s.rows),
		"walsender_cpu_s": f.walCPU.Seconds(),
		"walsender_busy":  100 * f.walCPU.Seconds() / f.elapsed.Seconds(),
		"peak_rss_mb":     mb(f.peakRSS),
		"startup_s":       f.startup.Seconds(),
	}
}

// cleanup removes a run's directory (broker data can be large) unless the
// scratch directory is kept.
func (h *harness) cleanup(dir string) error {
	if h.opts.keep {
		return nil
	}
	return os.RemoveAll(dir)
}
