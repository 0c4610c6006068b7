package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// largeTxnBench is the fixture of the large-transaction benchmark: one
// transaction inserting many rows.
type largeTxnBench struct{ walBacklog }

func largeTxnBenchmark(h *harness) benchmark {
	s := &largeTxnBench{walBacklog{h: h, prefix: "large"}}
	b := benchmark{
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
	s.runs = h.opts.runsOf(&b)
	return b
}

func (s *largeTxnBench) setup(ctx context.Context) (string, func() error, error) {
	return s.walBacklog.setup(ctx, func(ctx context.Context, _ string, conn *pgx.Conn) (int64, string, error) {
		rows := scaled(5_000_000, s.h.opts.scale, txnRows)
		if _, err := conn.Exec(ctx, insertSQL(1, rows)); err != nil {
			return 0, "", fmt.Errorf("large transaction: %w", err)
		}
		return rows, fmt.Sprintf("one transaction of %s inserts", thousands(rows)), nil
	})
}

func (s *largeTxnBench) bare(ctx context.Context, run int) (sample, error) {
	f, err := s.walBacklog.bare(ctx, run)
	if err != nil {
		return nil, err
	}
	return s.sample(f), nil
}

func (s *largeTxnBench) replicator(ctx context.Context, run int, external bool) (sample, error) {
	f, bf, err := s.walBacklog.replicator(ctx, run, external)
	if err != nil {
		return nil, err
	}
	smp := s.sample(f)
	if external {
		smp["broker_peak_rss_mb"] = mb(bf.peakRSS)
	}
	return smp, nil
}

func (s *largeTxnBench) sample(f streamFigures) sample {
	smp := s.streamSample(f)
	smp["peak_rss_mb"] = mb(f.peakRSS)
	return smp
}

// subjectBrokerProcess names the subjects that run replicator against
// kfake in a separate process.
const subjectBrokerProcess = "replicator, broker process"
