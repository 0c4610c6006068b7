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

// walBacklog is the fixture of the benchmarks that stream WAL written
// before any reader starts (stream, large-txn): a cluster with one slot per
// reader and run, created before the WAL is written, so that every run of
// every reader streams exactly the same WAL.
type walBacklog struct {
	h      *harness
	prefix string // names each run's directory: <prefix>-<run>-<slot>
	cl     *pgcluster.Cluster
	conn   *pgx.Conn
	runs   int           // runs to create slots for (runsOf the benchmark)
	rows   int64         // changes in the backlog
	target pglogrepl.LSN // pg_current_wal_lsn() after the backlog
	// readers name the readers that stream the backlog in every run, each
	// from its own slot <reader>_<run>; default bare, emb and ext (the bare
	// reader, replicator with its embedded broker and with the broker
	// process).
	readers []string
	// prepare, when set, runs after the cluster started and before the
	// slots are created: data the backlog changes, kept out of the WAL the
	// readers stream.
	prepare func(ctx context.Context, dsn string, conn *pgx.Conn) error
	// tables are replicator's entities (schema public); nil: the bench
	// table alone.
	tables []string

	segmentsNoted bool // why segments could not be counted was logged
}

// noteSegments logs, once, why a run's walsender segments could not be
// counted (e.g. no ss): the report then shows "–" for them.
func (b *walBacklog) noteSegments(f streamFigures) {
	if f.segsErr != nil && !b.segmentsNoted {
		b.segmentsNoted = true
		b.h.logf("%s: walsender TCP segments not counted: %v", b.prefix, f.segsErr)
	}
}

// backlogWriter writes the backlog and returns how many changes it holds
// and a description of it.
type backlogWriter func(ctx context.Context, dsn string, conn *pgx.Conn) (rows int64, what string, err error)

// Readers of the stream benchmarks, naming their slots.
const (
	readerBare     = "bare"
	readerEmbedded = "emb"
	readerExternal = "ext"
)

// slotName is reader's slot in run.
func slotName(reader string, run int) string { return fmt.Sprintf("%s_%d", reader, run) }

// setup starts the cluster, creates every run's slots and writes the
// backlog; the description it returns adds the WAL's size.
func (b *walBacklog) setup(ctx context.Context, write backlogWriter) (string, func() error, error) {
	var err error
	b.cl, b.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		return errors.Join(b.conn.Close(context.Background()), b.cl.Close())
	}
	fail := func(err error) (string, func() error, error) { return "", nil, errors.Join(err, teardown()) }
	if b.prepare != nil {
		if err := b.prepare(ctx, b.cl.DSN(""), b.conn); err != nil {
			return fail(err)
		}
	}
	readers := b.readers
	if len(readers) == 0 {
		readers = []string{readerBare, readerEmbedded, readerExternal}
	}
	for run := 1; run <= b.runs; run++ {
		slots := make([]string, len(readers))
		for i, r := range readers {
			slots[i] = slotName(r, run)
		}
		if err := createSlots(ctx, b.conn, slots...); err != nil {
			return fail(err)
		}
	}
	start, err := currentLSN(ctx, b.conn)
	if err != nil {
		return fail(err)
	}
	rows, what, err := write(ctx, b.cl.DSN(""), b.conn)
	if err != nil {
		return fail(err)
	}
	if b.target, err = currentLSN(ctx, b.conn); err != nil {
		return fail(err)
	}
	if _, err := b.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fail(err)
	}
	b.rows = rows
	return fmt.Sprintf("%s, %.0f MB of WAL", what, mb(int64(b.target-start))), teardown, nil
}

// bare streams the backlog with the bare reader and checks it read every
// change.
func (b *walBacklog) bare(ctx context.Context, run int) (streamFigures, error) {
	return b.bareAs(ctx, run, readerBare)
}

// bareAs streams the backlog with the bare reader from reader's slot,
// passing it args (e.g. -lean), and checks it read every change.
func (b *walBacklog) bareAs(ctx context.Context, run int, reader string, args ...string) (streamFigures, error) {
	slot := slotName(reader, run)
	c, err := b.h.startBareReader(fmt.Sprintf("%s-%d-%s", b.prefix, run, reader), b.cl.DSN(""), slot, -1, args...)
	if err != nil {
		return streamFigures{}, err
	}
	defer c.kill()
	f, err := measureStream(ctx, b.conn, c, slot, bareApp, b.target, streamTimeout(b.rows))
	b.noteSegments(f)
	if err != nil {
		return f, err
	}
	res, err := bareResult(c)
	if err != nil {
		return f, err
	}
	if res.Rows != b.rows {
		return f, fmt.Errorf("bare reader read %d rows, want %d", res.Rows, b.rows)
	}
	return f, nil
}

// brokerFigures are the broker process's, when there is one.
type brokerFigures struct {
	cpu     time.Duration // over the replicator's timed window (and its start-up)
	peakRSS int64
}

// replicator streams the backlog with `replicator run`, with its embedded
// broker or with kfake in a separate process (external), and checks that
// the topic holds exactly one record per change.
func (b *walBacklog) replicator(ctx context.Context, run int, external bool) (streamFigures, brokerFigures, error) {
	reader := readerEmbedded
	if external {
		reader = readerExternal
	}
	return b.replicatorAs(ctx, run, reader, external, false)
}

// replicatorAs is replicator from reader's slot, with metrics.listen on
// when metrics is set.
func (b *walBacklog) replicatorAs(ctx context.Context, run int, reader string, external, metrics bool) (streamFigures, brokerFigures, error) {
	var bf brokerFigures
	slot := slotName(reader, run)
	var brokers []string
	var broker *child
	var brokerCPU0 time.Duration
	if external {
		var addr string
		var err error
		if broker, addr, err = b.h.startKfakeServer(fmt.Sprintf("%s-%d-kfake", b.prefix, run)); err != nil {
			return streamFigures{}, bf, err
		}
		defer broker.kill()
		brokers = []string{addr}
		if brokerCPU0, err = procCPU(broker.pid()); err != nil {
			return streamFigures{}, bf, err
		}
	}
	// The run's directory (and profile) is named by its slot: one per subject.
	rp, err := b.h.startReplicator(replicatorRun{name: fmt.Sprintf("%s-%d-%s", b.prefix, run, slot), dsn: b.cl.DSN(""), slot: slot, snapshot: "never", brokers: brokers, tables: b.tables, metrics: metrics})
	if err != nil {
		return streamFigures{}, bf, err
	}
	defer rp.kill()
	f, err := measureStream(ctx, b.conn, rp.child, slot, "replicator", b.target, streamTimeout(b.rows))
	b.noteSegments(f)
	if err != nil {
		return f, bf, err
	}
	if broker != nil {
		cpu, err1 := procCPU(broker.pid())
		rss, err2 := procPeakRSS(broker.pid())
		if err := errors.Join(err1, err2); err != nil {
			return f, bf, err
		}
		bf = brokerFigures{cpu: cpu - brokerCPU0, peakRSS: rss}
	}
	if err := checkRecords(ctx, rp.brokers, b.rows, b.tables...); err != nil {
		return f, bf, err
	}
	if err := rp.stop(); err != nil {
		return f, bf, err
	}
	if broker != nil {
		if err := broker.stop(); err != nil {
			return f, bf, err
		}
		if err := b.h.cleanup(broker.dir()); err != nil {
			return f, bf, err
		}
	}
	return f, bf, b.h.cleanup(rp.dir)
}

// cleanup removes a run's directory (broker data can be large) unless the
// scratch directory is kept.
func (h *harness) cleanup(dir string) error {
	if h.opts.keep {
		return nil
	}
	return os.RemoveAll(dir)
}

// streamSample is the throughput sample of a stream over the backlog:
// rows per second, seconds, and the CPU of the reader and of the
// walsender.
func (b *walBacklog) streamSample(f streamFigures) sample {
	return sample{
		"rows_per_s":      float64(b.rows) / f.elapsed.Seconds(),
		"seconds":         f.elapsed.Seconds(),
		"cpu_s":           f.cpu.Seconds(),
		"walsender_cpu_s": f.walCPU.Seconds(),
	}
}

// bareRun, replicatorRun, droppedRun and peekRun stream the backlog with
// the bare reader, replicator (embedded broker), replicator's source with
// changes dropped, or the walsender peek, and give its streamSample: the
// subjects of a benchmark measuring the stream alone.
func (b *walBacklog) bareRun(ctx context.Context, run int) (sample, error) {
	f, err := b.bare(ctx, run)
	if err != nil {
		return nil, err
	}
	return b.streamSample(f), nil
}

func (b *walBacklog) replicatorRun(ctx context.Context, run int) (sample, error) {
	f, _, err := b.replicator(ctx, run, false)
	if err != nil {
		return nil, err
	}
	return b.streamSample(f), nil
}

func (b *walBacklog) droppedRun(ctx context.Context, run int) (sample, error) {
	f, err := b.sourceDropped(ctx, run)
	if err != nil {
		return nil, err
	}
	return b.streamSample(f), nil
}

func (b *walBacklog) peekRun(ctx context.Context, run int) (sample, error) {
	f, err := b.peek(ctx, run)
	if err != nil {
		return nil, err
	}
	return peekSample(b.streamSample(f)), nil
}
