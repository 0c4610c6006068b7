package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// toastNoteBytes is the size of the large column of the TOAST benchmark:
// stored out of line (STORAGE EXTERNAL: uncompressed), so an UPDATE that
// does not touch it sends it as "unchanged".
const toastNoteBytes = 8192

// toastCopySQL reads what the TOAST benchmark's updates left unsent, the
// way its ceiling does.
const toastCopySQL = "COPY (SELECT note FROM ONLY public." + tableName + ") TO STDOUT"

// toastBench is the fixture of the TOAST benchmark: rows with an ~8 KB
// text column, loaded before the slots, then a backlog of updates of a
// small column.
type toastBench struct{ walBacklog }

func toastBenchmark(h *harness) benchmark {
	s := &toastBench{walBacklog{h: h, prefix: "toast", readers: []string{readerBare, readerEmbedded, readerPeek, readerDrop}}}
	s.prepare = s.load
	b := benchmark{
		name: "toast",
		about: "A table of N rows whose `note` column holds 8 KB of text stored out of line (`STORAGE EXTERNAL`), loaded " +
			"before the slots; the backlog updates a small column (`quantity`) of every row in 1,000-row transactions, " +
			"default replica identity, so pgoutput sends every `note` as unchanged TOAST and replicator must read it back " +
			"to publish the row's full state (docs/ARCHITECTURE.md). " +
			"Subject: `replicator run` (`source.snapshot: never`, embedded broker), timed as in `stream`; every run checks " +
			"the topic holds one record per update. Ceiling: `COPY (SELECT note FROM …) TO STDOUT` of the same rows (the " +
			"columns the updates left unsent), read to io.Discard, after one unmeasured COPY warmed the cache. " +
			"Reference: the bare reader on the same WAL, which does not read the values back; \"" + subjectPeek + "\", the " +
			"walsender's own decoding of the same WAL (`pg_logical_slot_peek_binary_changes`, no client); and \"" + subjectDrop + "\" " +
			"(`bench/cmd/sourcedrop`, from its own slot): replicator's source, re-reads included, with a handler that " +
			"acknowledges every change at once, so that the re-reads' cost shows apart from mapping and produce (the table after the figures).",
		setup:   s.setup,
		ceiling: subject{name: "COPY of the unsent column", run: s.copy},
		subjects: []subject{
			{name: subjectEmbedded, run: s.replicatorRun},
			{name: "bare reader (no re-read)", run: s.bareRun},
			{name: subjectPeek, reference: true, run: s.peekRun},
			{name: subjectDrop, reference: true, run: s.droppedRun},
		},
		layers: []layer{
			{subject: subjectPeek, adds: "the walsender's decoding of the WAL with pgoutput (no client, no network)"},
			{subject: "bare reader (no re-read)", adds: "sending it to a minimal client, which reads it without the unsent values"},
			{subject: subjectDrop, adds: "replicator's source instead, its re-reads of the unsent values included"},
			{subject: subjectEmbedded, adds: "mapping to Avro, producing to the broker and waiting for its acks"},
		},
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio,
				target: &target{ofRatio: true, atLeast: true, value: 0.5, text: "≥ 0.5× COPY of the unsent column",
					subject: subjectEmbedded}},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "reader CPU", unit: "s"},
			{key: "walsender_cpu_s", label: "walsender CPU", unit: "s"},
		},
	}
	s.runs = h.opts.runsOf(&b)
	return b
}

// load inserts the rows with their 8 KB notes; the backlog (setup) then
// updates them.
func (s *toastBench) load(ctx context.Context, dsn string, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "ALTER TABLE "+tableName+" ALTER COLUMN note SET STORAGE EXTERNAL"); err != nil {
		return fmt.Errorf("note storage: %w", err)
	}
	s.rows = scaled(100_000, s.h.opts.scale, txnRows)
	if err := changeInBatches(ctx, dsn, 1, s.rows, 10_000, 2, toastInsertSQL); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	for _, sql := range []string{"VACUUM (FREEZE, ANALYZE) " + tableName, "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// toastInsertSQL inserts the rows with keys lo..hi as insertSQL does, with
// a note of toastNoteBytes.
func toastInsertSQL(lo, hi int64) string {
	return insertNoteSQL(lo, hi, fmt.Sprintf("repeat(md5(g::text), %d)", toastNoteBytes/32))
}

// toastUpdateSQL changes the small column quantity of the rows with keys
// lo..hi, leaving note unchanged.
func toastUpdateSQL(lo, hi int64) string {
	return fmt.Sprintf(`UPDATE bench_rows SET quantity = quantity + 1 WHERE id BETWEEN %d AND %d`, lo, hi)
}

func (s *toastBench) setup(ctx context.Context) (string, func() error, error) {
	what, teardown, err := s.walBacklog.setup(ctx, func(ctx context.Context, dsn string, _ *pgx.Conn) (int64, string, error) {
		if err := changeInBatches(ctx, dsn, 1, s.rows, txnRows, 2, toastUpdateSQL); err != nil {
			return 0, "", fmt.Errorf("backlog: %w", err)
		}
		return s.rows, fmt.Sprintf("backlog of %s updates of a small column of rows with a %s-byte out-of-line note, in %s-row transactions",
			thousands(s.rows), thousands(toastNoteBytes), thousands(txnRows)), nil
	})
	if err != nil {
		return "", nil, err
	}
	if _, err := s.copy(ctx, 0); err != nil { // warm the cache
		return "", nil, fmt.Errorf("warm-up copy: %w", err)
	}
	return what, teardown, nil
}

func (s *toastBench) copy(ctx context.Context, _ int) (sample, error) {
	return copyRows(ctx, s.conn, toastCopySQL, s.rows)
}
