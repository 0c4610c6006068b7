package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// jsonbBench is the fixture of the large-jsonb benchmark: inserts of rows
// whose jsonb column holds about 50 KB, in 100-row transactions.
type jsonbBench struct{ walBacklog }

func jsonbBenchmark(h *harness) benchmark {
	s := &jsonbBench{walBacklog{h: h, prefix: "jsonb", readers: []string{readerBare, readerEmbedded}}}
	b := benchmark{
		name: "jsonb",
		about: "A backlog of N INSERTs of rows whose `attrs` jsonb holds about 50 KB (an array of 1,400 md5 strings), " +
			"in 100-row transactions, written after the slots were created. Subject: `replicator run` (`source.snapshot: never`, " +
			"embedded broker), timed as in `stream`; every run checks the topic holds one record per change. Ceiling: the bare " +
			"reader on the same WAL.",
		setup:   s.setup,
		ceiling: subject{name: "bare reader", run: s.bare},
		subjects: []subject{
			{name: "replicator, embedded broker", run: s.replicator},
		},
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s", ratio: true},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s", ratio: true},
		},
	}
	s.runs = h.opts.runsOf(&b)
	return b
}

func (s *jsonbBench) setup(ctx context.Context) (string, func() error, error) {
	return s.walBacklog.setup(ctx, func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
		n := scaled(10_000, s.h.opts.scale, 100)
		if err := changeInBatches(ctx, dsn, 1, n, 100, 2, jsonbInsertSQL); err != nil {
			return 0, "", fmt.Errorf("backlog: %w", err)
		}
		return n, fmt.Sprintf("backlog of %s INSERTs of rows with ~50 KB of jsonb, in 100-row transactions", thousands(n)), nil
	})
}

// jsonbInsertSQL inserts the rows with keys lo..hi as insertSQL does, with
// about 50 KB of jsonb in attrs.
func jsonbInsertSQL(lo, hi int64) string {
	return strings.Replace(insertSQL(lo, hi),
		"jsonb_build_object('plan', 'pro', 'seats', g % 50, 'region', 'eu-west-' || g % 3)",
		"jsonb_build_object('plan', 'pro', 'blob', (SELECT jsonb_agg(md5(g::text || '.' || i)) FROM generate_series(1, 1400) i))", 1)
}

func (s *jsonbBench) bare(ctx context.Context, run int) (sample, error) {
	f, err := s.walBacklog.bare(ctx, run)
	if err != nil {
		return nil, err
	}
	return s.sample(f), nil
}

func (s *jsonbBench) replicator(ctx context.Context, run int) (sample, error) {
	f, _, err := s.walBacklog.replicator(ctx, run, false)
	if err != nil {
		return nil, err
	}
	return s.sample(f), nil
}

func (s *jsonbBench) sample(f streamFigures) sample {
	return sample{
		"rows_per_s":      float64(s.rows) / f.elapsed.Seconds(),
		"seconds":         f.elapsed.Seconds(),
		"cpu_s":           f.cpu.Seconds(),
		"walsender_cpu_s": f.walCPU.Seconds(),
	}
}
