package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// backlogShape is a workload shape streamed by replicator against the bare
// reader on the same WAL (one-row, jsonb, wide, tables): a backlog written
// after the slots were created, as in `stream`, with its own writer.
type backlogShape struct {
	walBacklog
	write backlogWriter
}

// shapeBenchmark builds the benchmark of a backlogShape. prepare (may be
// nil) runs before the slots are created; tables are replicator's
// entities (nil: the bench table); tgt, when set, is the throughput
// ratio's target.
func shapeBenchmark(h *harness, name, about string, tables []string, prepare func(context.Context, string, *pgx.Conn) error,
	write backlogWriter, tgt *target) benchmark {
	s := &backlogShape{walBacklog: walBacklog{h: h, prefix: name, readers: []string{readerBare, readerEmbedded, readerPeek, readerDrop},
		prepare: prepare, tables: tables}, write: write}
	b := benchmark{
		name: name,
		about: about + " Subject: `replicator run` (`source.snapshot: never`, embedded broker), timed as in `stream`; every run " +
			"checks the topics hold one record per change. Ceiling: the bare reader on the same WAL. " + truerCeilingsAbout,
		setup:   func(ctx context.Context) (string, func() error, error) { return s.walBacklog.setup(ctx, s.write) },
		ceiling: subject{name: "bare reader", run: s.bareRun},
		subjects: []subject{
			{name: subjectEmbedded, run: s.replicatorRun},
			{name: subjectPeek, reference: true, run: s.peekRun},
			{name: subjectDrop, reference: true, run: s.droppedRun},
		},
		layers: streamLayers(subjectEmbedded),
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio, target: tgt},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s", ratio: true},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s", ratio: true},
		},
	}
	s.runs = h.opts.runsOf(&b)
	return b
}

// oneRowBenchmark: transactions of one row each, where the cost per
// transaction (BEGIN, COMMIT, a checkpoint slot) is no longer spread over
// a thousand rows.
func oneRowBenchmark(h *harness) benchmark {
	scale := h.opts.scale
	return shapeBenchmark(h, "one-row",
		"A backlog of N single-row transactions (N/2 INSERTs, then N/2 UPDATEs of the same rows), written on two connections.",
		nil, nil,
		func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
			n := scaled(20_000, scale, 100)
			for _, stmt := range []func(lo, hi int64) string{insertSQL, updateSQL} {
				if err := changeInBatches(ctx, dsn, 1, n, 1, 2, stmt); err != nil {
					return 0, "", fmt.Errorf("backlog: %w", err)
				}
			}
			return 2 * n, fmt.Sprintf("backlog of %s one-row INSERT transactions + %s one-row UPDATE transactions",
				thousands(n), thousands(n)), nil
		},
		&target{ofRatio: true, atLeast: true, value: 0.9, text: "≥ 0.9× bare reader"})
}

// jsonbBenchmark: rows with a large jsonb value, sent in full.
func jsonbBenchmark(h *harness) benchmark {
	scale := h.opts.scale
	return shapeBenchmark(h, "jsonb",
		"A backlog of N INSERTs of rows whose `attrs` jsonb holds about 50 KB (an array of 1,400 md5 strings), in 100-row transactions.",
		nil, nil,
		func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
			n := scaled(10_000, scale, 100)
			if err := changeInBatches(ctx, dsn, 1, n, 100, 2, jsonbInsertSQL); err != nil {
				return 0, "", fmt.Errorf("backlog: %w", err)
			}
			return n, fmt.Sprintf("backlog of %s INSERTs of rows with ~50 KB of jsonb, in 100-row transactions", thousands(n)), nil
		}, nil)
}

// wideColumns is the number of columns of the wide table, key included.
const wideColumns = 100

// wideBenchmark: rows of a hundred columns of the common kinds.
func wideBenchmark(h *harness) benchmark {
	scale := h.opts.scale
	return shapeBenchmark(h, "wide",
		"A table of 100 columns (the key and, in turn, int, text, numeric(12,2) and timestamptz columns); a backlog of "+
			"N INSERTs in 1,000-row transactions.",
		[]string{"bench_wide"},
		func(ctx context.Context, _ string, conn *pgx.Conn) error {
			cols := []string{"id bigint PRIMARY KEY"}
			for i := 1; i < wideColumns; i++ {
				cols = append(cols, fmt.Sprintf("c%d %s", i, []string{"int", "text", "numeric(12,2)", "timestamptz"}[i%4]))
			}
			for _, sql := range []string{
				"CREATE TABLE bench_wide (" + strings.Join(cols, ", ") + ")",
				"ALTER PUBLICATION " + publication + " ADD TABLE bench_wide",
			} {
				if _, err := conn.Exec(ctx, sql); err != nil {
					return fmt.Errorf("%s: %w", firstLine(sql), err)
				}
			}
			return nil
		},
		func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
			n := scaled(100_000, scale, txnRows)
			if err := changeInBatches(ctx, dsn, 1, n, txnRows, 2, wideInsertSQL); err != nil {
				return 0, "", fmt.Errorf("backlog: %w", err)
			}
			return n, fmt.Sprintf("backlog of %s INSERTs of %d-column rows in %s-row transactions", thousands(n), wideColumns, thousands(txnRows)), nil
		}, nil)
}

// wideInsertSQL inserts the rows with keys lo..hi into bench_wide.
func wideInsertSQL(lo, hi int64) string {
	exprs := []string{"g"}
	for i := 1; i < wideColumns; i++ {
		exprs = append(exprs, []string{
			fmt.Sprintf("((g + %d) %% 100000)::int", i),
			fmt.Sprintf("'value ' || g || '-%d'", i),
			fmt.Sprintf("((g * %d) %% 1000000) / 100.0", i),
			fmt.Sprintf("timestamptz '2024-01-01 00:00:00+00' + (g + %d) * interval '1 second'", i),
		}[i%4])
	}
	return fmt.Sprintf("INSERT INTO bench_wide SELECT %s FROM generate_series(%d::bigint, %d::bigint) g", strings.Join(exprs, ", "), lo, hi)
}

// manyTables is the number of tables of the tables benchmark.
const manyTables = 50

// tablesBenchmark: fifty tables written at once.
func tablesBenchmark(h *harness) benchmark {
	scale := h.opts.scale
	names := make([]string, manyTables)
	for i := range names {
		names[i] = fmt.Sprintf("bench_t%02d", i+1)
	}
	return shapeBenchmark(h, "tables",
		"Fifty tables shaped as the bench table, all in `entities:`; a backlog of N INSERTs in 1,000-row transactions, each "+
			"transaction on the next table in turn, written on two connections.",
		names,
		func(ctx context.Context, _ string, conn *pgx.Conn) error {
			for _, t := range names {
				for _, sql := range []string{
					strings.Replace(createTable, "CREATE TABLE "+tableName, "CREATE TABLE "+t, 1),
					"ALTER PUBLICATION " + publication + " ADD TABLE " + t,
				} {
					if _, err := conn.Exec(ctx, sql); err != nil {
						return fmt.Errorf("%s: %w", firstLine(sql), err)
					}
				}
			}
			return nil
		},
		func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
			n := scaled(200_000, scale, manyTables*txnRows)
			err := changeInBatches(ctx, dsn, 1, n, txnRows, 2, func(lo, hi int64) string {
				t := names[((lo-1)/txnRows)%manyTables]
				return strings.Replace(insertSQL(lo, hi), "INSERT INTO "+tableName, "INSERT INTO "+t, 1)
			})
			if err != nil {
				return 0, "", fmt.Errorf("backlog: %w", err)
			}
			return n, fmt.Sprintf("backlog of %s INSERTs into %d tables, in %s-row transactions", thousands(n), manyTables, thousands(txnRows)), nil
		}, nil)
}
