package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/bench/stats"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// republishLoadRate is the writer of republish-latency, in rows per second.
const republishLoadRate = 5_000

// republishTable is the table republish-latency republishes; the load
// writes the bench table, whose topic the latency consumer reads.
const republishTable = "bench_repub"

// republishBench is the fixture of the republish benchmark: a loaded,
// vacuumed, cached table that nothing writes.
type republishBench struct {
	h    *harness
	cl   *pgcluster.Cluster
	conn *pgx.Conn
	rows int64
}

func republishBenchmark(h *harness) benchmark {
	s := &republishBench{h: h}
	return benchmark{
		name: "republish",
		about: "A table of N rows, vacuumed (frozen) and read once before the runs by each reader (a COPY, and one republish, neither measured) " +
			"so that every reader finds it and its key index in shared buffers; nothing writes while a run lasts. " +
			"Subject: a fresh `replicator run` (`source.snapshot: never`, new slot, embedded broker) streaming an idle slot, " +
			"timed from `source.RequestRepublish` (what `replicator republish` calls: a message in the WAL) to the moment the " +
			"topic's end offset reaches N (polled every 20 ms), which the broker moves only once it has acknowledged the records; " +
			"the topic is then read back and must hold exactly N records, each with the request's `republish` header. " +
			"Replicator's CPU is sampled over the same window. Ceiling: `COPY (SELECT …) TO STDOUT` of the same table " +
			"in text format, read to io.Discard through pgconn's CopyTo.",
		setup:    s.setup,
		ceiling:  subject{name: "COPY TO STDOUT", run: s.copy},
		subjects: []subject{{name: "replicator republish, embedded broker", run: s.replicator}},
		metrics: []metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio,
				target: &target{ofRatio: true, atLeast: true, value: 0.7, text: "≥ 0.7× COPY"}},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "replicator CPU", unit: "s"},
			{key: "peak_rss_mb", label: "peak RSS", unit: "MB"},
		},
	}
}

func (s *republishBench) setup(ctx context.Context) (string, func() error, error) {
	var err error
	s.cl, s.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		return errors.Join(s.conn.Close(context.Background()), s.cl.Close())
	}
	fail := func(err error) (string, func() error, error) { return "", nil, errors.Join(err, teardown()) }
	s.rows = scaled(1_000_000, s.h.opts.scale, txnRows)
	if err := loadFrozen(ctx, s.cl.DSN(""), s.conn, tableName, s.rows); err != nil {
		return fail(err)
	}
	if _, err := s.copy(ctx, 0); err != nil { // warm the cache
		return fail(err)
	}
	// And one unmeasured republish, as the snapshot benchmark does, so
	// that the key index is in shared buffers for the subject too.
	if _, err := s.replicator(ctx, 0); err != nil {
		return fail(fmt.Errorf("warm-up run: %w", err))
	}
	size, row, err := tableSize(ctx, s.conn, tableName)
	if err != nil {
		return fail(err)
	}
	return fmt.Sprintf("table of %s rows (%.0f bytes per row on average), %.0f MB, idle stream", thousands(s.rows), row, mb(size)), teardown, nil
}

func (s *republishBench) copy(ctx context.Context, _ int) (sample, error) {
	return copyRows(ctx, s.conn, copySQL, s.rows)
}

func (s *republishBench) replicator(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("repub_%d", run)
	rp, err := s.h.startReplicator(replicatorRun{name: fmt.Sprintf("republish-%d-replicator", run), dsn: s.cl.DSN(""),
		slot: slot, snapshot: "never"})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	w, err := newTopicWatch(rp.brokers)
	if err != nil {
		return nil, err
	}
	defer w.close()
	cpu0, err := procCPU(rp.pid())
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	id, err := source.RequestRepublish(ctx, s.conn, slot, []string{"public." + tableName}, source.RepublishOptions{})
	if err != nil {
		return nil, err
	}
	t1, err := w.waitEnd(ctx, tableName, s.rows, streamTimeout(s.rows), rp.alive)
	if err != nil {
		return nil, err
	}
	return finishLoad(ctx, s.h, s.conn, rp, slot, s.rows, cpu0, t0, t1,
		func() error {
			extra, err := checkRepublished(ctx, rp, tableName, id, s.rows)
			if extra > 0 {
				s.h.logf("republish: run %d: %d records more than rows: chunks read again, the time measured ends when the topic first held one record per row", run, extra)
			}
			return err
		})
}

// republishLatencyBench is the fixture of republish-latency: the latency
// benchmark's cluster and load, and a second table to republish.
type republishLatencyBench struct {
	lat  *latencyBench
	rows int64
}

func republishLatencyBenchmark(h *harness) benchmark {
	s := &republishLatencyBench{lat: &latencyBench{h: h, rate: republishLoadRate, duration: h.opts.duration}}
	subj := "replicator, republishing"
	return benchmark{
		name: "republish-latency",
		about: fmt.Sprintf("The latency benchmark's load (%s rows/s on the bench table, one transaction every 10 ms) and its measurement "+
			"(a franz-go consumer of the bench table's topic; a record's latency is its receive time minus its `commit_ts` header), "+
			"while a second table of N rows, `%s`, frozen and idle, is republished. "+
			"Subject: `replicator run` (embedded broker, both tables in `entities:`); once the load's first transaction is on the "+
			"topic the benchmark requests the republish of `%s`, and the figures are of the load's records committed between the "+
			"request and the moment the republished topic's end offset reached N (the run fails if the load ended first: raise -duration). "+
			"Reference: the same replicator and load without a republish (every record of the load).",
			thousands(republishLoadRate), republishTable, republishTable),
		setup:    s.setup,
		ceiling:  subject{name: "replicator, no republish", run: s.quiet},
		subjects: []subject{{name: subj, run: s.republishing}},
		// Not in the chart: its latency panel is of the latency
		// benchmarks, by rate, against the bare reader; the report's
		// targets table judges this one.
		metrics: []metric{
			{key: "p50_ms", label: "latency p50", unit: "ms"},
			{key: "p99_ms", label: "latency p99", unit: "ms",
				target: &target{atLeast: false, value: 100, text: "p99 ≤ 100 ms during a republish", subject: subj}},
			{key: "max_ms", label: "latency max", unit: "ms"},
			{key: "rows", label: "rows measured", unit: "rows"},
			{key: "rate", label: "load achieved", unit: "rows/s"},
			{key: "republish_s", label: "republish time", unit: "s"},
			{key: "republish_rows_per_s", label: "republish throughput", unit: "rows/s"},
			{key: "rows_again", label: "records sent again (chunks read again)", unit: "rows"},
		},
	}
}

func (s *republishLatencyBench) setup(ctx context.Context) (string, func() error, error) {
	workload, teardown, err := s.lat.setup(ctx)
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, func() error, error) { return "", nil, errors.Join(err, teardown()) }
	conn := s.lat.conn
	for _, sql := range []string{
		strings.Replace(createTable, "CREATE TABLE "+tableName, "CREATE TABLE "+republishTable, 1),
		"ALTER PUBLICATION " + publication + " ADD TABLE " + republishTable,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fail(fmt.Errorf("%s: %w", firstLine(sql), err))
		}
	}
	s.rows = scaled(1_000_000, s.lat.h.opts.scale, txnRows)
	if err := loadFrozen(ctx, s.lat.cl.DSN(""), conn, republishTable, s.rows); err != nil {
		return fail(err)
	}
	if _, err := conn.PgConn().CopyTo(ctx, io.Discard, strings.Replace(copySQL, tableName, republishTable, 1)); err != nil { // warm the cache
		return fail(fmt.Errorf("copy: %w", err))
	}
	size, row, err := tableSize(ctx, conn, republishTable)
	if err != nil {
		return fail(err)
	}
	return fmt.Sprintf("%s; republished: %s rows (%.0f bytes per row on average), %.0f MB", workload, thousands(s.rows), row, mb(size)), teardown, nil
}

// start starts a replicator on both tables and waits until it streams.
func (s *republishLatencyBench) start(ctx context.Context, name, slot string) (*replicatorProc, error) {
	rp, err := s.lat.h.startReplicator(replicatorRun{name: name, dsn: s.lat.cl.DSN(""), slot: slot, snapshot: "never",
		tables: []string{tableName, republishTable}})
	if err != nil {
		return nil, err
	}
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		rp.kill()
		return nil, err
	}
	return rp, nil
}

// finish stops rp and drops its slot.
func (s *republishLatencyBench) finish(ctx context.Context, rp *replicatorProc, slot string) error {
	if err := rp.stop(); err != nil {
		return err
	}
	if err := dropSlot(ctx, s.lat.conn, slot); err != nil {
		return err
	}
	return s.lat.h.cleanup(rp.dir)
}

func (s *republishLatencyBench) quiet(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("repub_lat_quiet_%d", run)
	rp, err := s.start(ctx, fmt.Sprintf("republish-latency-%d-quiet", run), slot)
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	tr, ld, err := s.lat.measure(ctx, rp)
	if err != nil {
		return nil, err
	}
	return latencySample(stats.SummarizeLatencies(tr.lat), ld), s.finish(ctx, rp, slot)
}

func (s *republishLatencyBench) republishing(ctx context.Context, run int) (sample, error) {
	slot := fmt.Sprintf("repub_lat_%d", run)
	rp, err := s.start(ctx, fmt.Sprintf("republish-latency-%d-republishing", run), slot)
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	w, err := newTopicWatch(rp.brokers)
	if err != nil {
		return nil, err
	}
	defer w.close()

	var tr latencyTrace
	var ld loadFigures
	var t0, t1 time.Time
	var id string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		tr, ld, err = s.lat.measure(gctx, rp)
		return err
	})
	g.Go(func() error {
		// The warm-up's records are on the topic before measure starts
		// the load: one more record means the load is running.
		warm := int64(s.lat.perTick() / 2)
		if _, err := w.waitEnd(gctx, tableName, warm+1, time.Minute, rp.alive); err != nil {
			return fmt.Errorf("waiting for the load to start: %w", err)
		}
		t0 = time.Now()
		var err error
		if id, err = source.RequestRepublish(gctx, s.lat.conn, slot, []string{"public." + republishTable}, source.RepublishOptions{}); err != nil {
			return err
		}
		t1, err = w.waitEnd(gctx, republishTable, s.rows, streamTimeout(s.rows), rp.alive)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	extra, err := checkRepublished(ctx, rp, republishTable, id, s.rows)
	if err != nil {
		return nil, err
	}
	lat, err := duringRepublish(tr, t0, t1)
	if err != nil {
		return nil, err
	}
	smp := latencySample(stats.SummarizeLatencies(lat), ld)
	smp["republish_s"] = t1.Sub(t0).Seconds()
	smp["republish_rows_per_s"] = float64(s.rows) / t1.Sub(t0).Seconds()
	smp["rows_again"] = float64(extra) // chunks read again (a transaction a chunk's snapshot missed)
	return smp, s.finish(ctx, rp, slot)
}

// duringRepublish returns the latencies of tr's records committed from
// start to end, the republish's window. It fails when the load did not
// outlast the window (its figures would leave out the end of the
// republish) or when no record falls in it.
func duringRepublish(tr latencyTrace, start, end time.Time) ([]time.Duration, error) {
	if len(tr.commit) == 0 || tr.commit[len(tr.commit)-1].Before(end) {
		return nil, fmt.Errorf("the load ended before the republish did (%s long): raise -duration", end.Sub(start).Round(time.Millisecond))
	}
	var lat []time.Duration
	for i, c := range tr.commit {
		if !c.Before(start) && !c.After(end) {
			lat = append(lat, tr.lat[i])
		}
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("no record of the load was committed during the republish (%s to %s)",
			start.Format("15:04:05.000"), end.Format("15:04:05.000"))
	}
	return lat, nil
}

// loadFrozen fills table (shaped as the bench table) with rows rows, then
// vacuums (freezes) it and checkpoints, as the snapshot benchmark does.
func loadFrozen(ctx context.Context, dsn string, conn *pgx.Conn, table string, rows int64) error {
	insert := func(lo, hi int64) string {
		return strings.Replace(insertSQL(lo, hi), "INSERT INTO "+tableName+" ", "INSERT INTO "+table+" ", 1)
	}
	if err := changeInBatches(ctx, dsn, 1, rows, 50_000, 2, insert); err != nil {
		return fmt.Errorf("load %s: %w", table, err)
	}
	for _, sql := range []string{"VACUUM (FREEZE, ANALYZE) " + table, "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// tableSize returns table's size on disk and its average row size.
func tableSize(ctx context.Context, conn *pgx.Conn, table string) (int64, float64, error) {
	var size int64
	var row float64
	err := conn.QueryRow(ctx, "SELECT pg_table_size('"+table+"'), avg(pg_column_size(t.*)) FROM "+table+" t").Scan(&size, &row)
	return size, row, err
}

// topicWatch polls topics' end offsets on one client.
type topicWatch struct {
	cl  *kgo.Client
	adm *kadm.Client
}

func newTopicWatch(brokers []string) (*topicWatch, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	return &topicWatch{cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (w *topicWatch) close() { w.cl.Close() }

// waitEnd polls until topic holds at least want records (the sum of its
// partitions' end offsets, which the broker moves once it has acknowledged
// a produce) and returns when it saw it. It fails after timeout, or once
// alive reports that the replicator died.
func (w *topicWatch) waitEnd(ctx context.Context, topic string, want int64, timeout time.Duration, alive func() error) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last error
	var got int64
	for {
		ends, err := broker.EndOffsets(ctx, w.adm, topic)
		now := time.Now()
		if err == nil {
			got = 0
			for _, o := range ends {
				got += o
			}
			if got >= want {
				return now, nil
			}
		}
		last = err // the topic may not exist yet
		if err := alive(); err != nil {
			return time.Time{}, err
		}
		if now.After(deadline) {
			return time.Time{}, errors.Join(fmt.Errorf("topic %s holds %d records after %s, want %d", topic, got, timeout, want), last)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// checkRepublished waits for rp to log republish id complete, then reads
// topic from its start to its end and fails unless it holds a record of
// every one of the want rows (want distinct keys), each with the republish
// header of id. A chunk read again (source/commitring.go: a transaction
// the chunk's snapshot missed) sends the chunks read after it again: extra
// is how many records that added.
func checkRepublished(ctx context.Context, rp *replicatorProc, topic, id string, want int64) (extra int64, err error) {
	if err := waitLogged(ctx, rp, id, streamTimeout(want)); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, streamTimeout(want))
	defer cancel()
	// Read to the end offsets, not to a count: the broker may have
	// compacted away the older records of keys sent again.
	var seen, marked int64
	keys := make(map[string]struct{}, want)
	ends, err := broker.ReadToEnd(ctx, []kgo.Opt{kgo.SeedBrokers(rp.brokers...)}, topic, nil, func(r *kgo.Record) error {
		seen++
		keys[string(r.Key)] = struct{}{}
		if v, ok := cdc.Header(r.Headers, cdc.HeaderRepublish); ok && bytes.Equal(v, []byte(id)) {
			marked++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading %s back: %w", topic, err)
	}
	if marked != seen {
		return 0, fmt.Errorf("topic %s: %d of %d records carry the %s header %q, want all", topic, marked, seen, cdc.HeaderRepublish, id)
	}
	if int64(len(keys)) != want {
		return 0, fmt.Errorf("topic %s: records of %d keys, want %d (one per republished row)", topic, len(keys), want)
	}
	// Records sent again: the offsets past one per row (those compaction
	// removed since included).
	var end int64
	for _, o := range ends {
		end += o
	}
	return end - want, nil
}

// waitLogged waits until rp's log says republish id is complete.
func waitLogged(ctx context.Context, rp *replicatorProc, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		log, err := os.ReadFile(rp.logPath)
		if err != nil {
			return err
		}
		for _, line := range bytes.Split(log, []byte("\n")) {
			if bytes.Contains(line, []byte(source.LogRepublishDone)) && bytes.Contains(line, []byte(id)) {
				return nil
			}
		}
		if err := rp.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replicator did not log %q for %s within %s", source.LogRepublishDone, id, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}
