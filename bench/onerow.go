package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// oneRowBench is the fixture of the one-row-transaction benchmark: a
// backlog of transactions of one INSERT or UPDATE each, where the cost per
// transaction (BEGIN, COMMIT, a checkpoint slot, a status) is no longer
// spread over a thousand rows.
type oneRowBench struct{ walBacklog }

func oneRowBenchmark(h *harness) benchmark {
	s := &oneRowBench{walBacklog{h: h, prefix: "onerow", readers: []string{readerBare, readerEmbedded}}}
	b := benchmark{
		name: "one-row",
		about: "A backlog of N single-row transactions (N/2 INSERTs, then N/2 UPDATEs of the same rows), written after the " +
			"slots were created, on two connections. Subject: `replicator run` (`source.snapshot: never`, embedded broker), " +
			"timed as in `stream`; every run checks the topic holds one record per change. Ceiling: the bare reader on the same WAL.",
		setup:   s.setup,
		ceiling: subject{name: "bare reader", run: s.bare},
		subjects: []subject{
			{name: "replicator, embedded broker", run: s.replicator},
		},
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio,
				target: &target{ofRatio: true, atLeast: true, value: 0.9, text: "≥ 0.9× bare reader"}},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s", ratio: true},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s", ratio: true},
		},
	}
	s.runs = h.opts.runsOf(&b)
	return b
}

func (s *oneRowBench) setup(ctx context.Context) (string, func() error, error) {
	return s.walBacklog.setup(ctx, func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
		n := scaled(20_000, s.h.opts.scale, 100)
		for _, stmt := range []func(lo, hi int64) string{insertSQL, updateSQL} {
			if err := changeInBatches(ctx, dsn, 1, n, 1, 2, stmt); err != nil {
				return 0, "", fmt.Errorf("backlog: %w", err)
			}
		}
		return 2 * n, fmt.Sprintf("backlog of %s one-row INSERT transactions + %s one-row UPDATE transactions",
			thousands(n), thousands(n)), nil
	})
}

func (s *oneRowBench) bare(ctx context.Context, run int) (sample, error) {
	f, err := s.walBacklog.bare(ctx, run)
	if err != nil {
		return nil, err
	}
	return s.sample(f), nil
}

func (s *oneRowBench) replicator(ctx context.Context, run int) (sample, error) {
	f, _, err := s.walBacklog.replicator(ctx, run, false)
	if err != nil {
		return nil, err
	}
	return s.sample(f), nil
}

func (s *oneRowBench) sample(f streamFigures) sample {
	return sample{
		"rows_per_s":      float64(s.rows) / f.elapsed.Seconds(),
		"seconds":         f.elapsed.Seconds(),
		"cpu_s":           f.cpu.Seconds(),
		"walsender_cpu_s": f.walCPU.Seconds(),
	}
}
