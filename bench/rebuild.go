package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
)

// readModel is the read model every sink benchmark builds: the bench
// table's every column, keyed by id, in a table of the same name.
const readModel = "bench_rm"

// readModelColumns are its columns, each the field of the same name.
var readModelColumns = strings.Split(strings.ReplaceAll(columns, " ", ""), ",")

// rebuildStore is a read-model database a rebuild benchmark writes: what
// differs between PostgreSQL, SQLite and MariaDB.
type rebuildStore interface {
	name() string
	// start prepares the store once (a cluster, a server database).
	start(ctx context.Context, h *harness) error
	// reset empties the store before a subject's run, untimed.
	reset(ctx context.Context) error
	// url is the read model's store: in replicator's config.
	url() string
	// db is a database/sql handle on the store, for the checks.
	db() *sql.DB
	// capture keeps the read model's rows and column types (built by the
	// warm-up run) for the ceiling: the same rows, columns and types.
	capture(ctx context.Context) error
	// ceiling loads the captured rows into a fresh table the store's
	// fastest plain way and returns the sample.
	ceiling(ctx context.Context, rows int64) (sample, error)
	close() error
}

// rebuildMode is what the subject runs.
type rebuildMode int

const (
	modeRebuild rebuildMode = iota // `replicator rebuild`
	modeSink                       // `replicator sink` from offset zero into an empty store, until every offset is stored
)

// rebuildBench is the fixture of a rebuild benchmark: a source table
// snapshotted once onto the topic of a `replicator run` that stays up
// (its embedded broker and registry serve every run), and a store.
type rebuildBench struct {
	h     *harness
	st    rebuildStore
	cl    *pgcluster.Cluster
	conn  *pgx.Conn
	rp    *replicatorProc
	rows  int64
	mode  rebuildMode
	cols  []storeColumn // the read model's columns as the sink created them
	slot  string
	about string
}

// storeColumn is a read-model column and its SQL type as the store reports it.
type storeColumn struct {
	name, typ string
	notNull   bool
}

func rebuildBenchmark(h *harness, st rebuildStore, ceiling string, tgt float64, ceilingAbout string, extra ...metric) benchmark {
	s := &rebuildBench{h: h, st: st}
	b := benchmark{
		name: "rebuild-" + st.name(),
		about: "A topic of N entity records: the bench table's rows (ten columns of the common kinds, among them numeric, " +
			"timestamptz, text[] and jsonb) published by a `replicator run` snapshot (`source.snapshot: initial`, embedded broker) " +
			"in the setup, untimed; that replicator stays up, idle, and its broker and registry serve every run. " +
			"The read model maps every field to a column of the same name, keyed by id. " +
			"Subject: `replicator rebuild --read-model` into an empty store (its database emptied before each run, untimed), " +
			"timed from the process's start to its exit (the new table swapped in); the table must then hold N rows; " +
			"CPU from the process's rusage, peak RSS its VmHWM read every 20 ms while it runs. " +
			"A warm-up rebuild before the runs creates the table whose rows and column types the ceiling loads, and a warm-up " +
			"ceiling load follows it (both unmeasured). " +
			"Ceiling: " + ceilingAbout,
		setup:    s.setup,
		ceiling:  subject{name: ceiling, run: func(ctx context.Context, _ int) (sample, error) { return s.st.ceiling(ctx, s.rows) }},
		subjects: []subject{{name: "replicator rebuild", run: s.subject}},
		metrics: append([]metric{
			{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true, chart: chartRatio,
				target: &target{ofRatio: true, atLeast: true, value: tgt, text: fmt.Sprintf("≥ %g× %s", tgt, ceiling)}},
			{key: "seconds", label: "time", unit: "s"},
			{key: "cpu_s", label: "replicator CPU", unit: "s"},
			{key: "peak_rss_mb", label: "peak RSS", unit: "MB"},
		}, extra...),
	}
	return b
}

func (s *rebuildBench) setup(ctx context.Context) (string, func() error, error) {
	var err error
	s.cl, s.conn, err = startCluster(ctx)
	if err != nil {
		return "", nil, err
	}
	teardown := func() error {
		var errs []error
		if s.rp != nil {
			errs = append(errs, s.rp.stop())
		}
		return errors.Join(append(errs, s.st.close(), s.conn.Close(context.Background()), s.cl.Close())...)
	}
	fail := func(err error) (string, func() error, error) { return "", nil, errors.Join(err, teardown()) }
	s.rows = scaled(1_000_000, s.h.opts.scale, txnRows)
	if err := loadFrozen(ctx, s.cl.DSN(""), s.conn, tableName, s.rows); err != nil {
		return fail(err)
	}
	s.slot = "rebuild_" + s.st.name()
	s.rp, err = s.h.startReplicator(replicatorRun{name: "rebuild-" + s.st.name() + "-source", dsn: s.cl.DSN(""),
		slot: s.slot, snapshot: "initial", patterns: []string{logSnapshotComplete}})
	if err != nil {
		return fail(err)
	}
	if _, err := s.rp.waitLine(ctx, logSnapshotComplete, streamTimeout(s.rows)); err != nil {
		return fail(err)
	}
	if err := checkRecords(ctx, s.rp.brokers, s.rows); err != nil {
		return fail(err)
	}
	if err := s.st.start(ctx, s.h); err != nil {
		return fail(fmt.Errorf("store %s: %w", s.st.name(), err))
	}
	// The warm-up: the subject once, unmeasured, which also tells whether
	// this build rebuilds into the store at all (MySQL/MariaDB was refused
	// until rebuild learnt it: the sink from offset zero stands in then).
	if _, err := s.subject(ctx, 0); err != nil {
		if !strings.Contains(err.Error(), "rebuild is not supported") {
			return fail(fmt.Errorf("warm-up run: %w", err))
		}
		s.mode = modeSink
		if _, err := s.subject(ctx, 0); err != nil {
			return fail(fmt.Errorf("warm-up run: %w", err))
		}
	}
	if err := s.st.capture(ctx); err != nil {
		return fail(fmt.Errorf("capture the read model: %w", err))
	}
	// The ceiling warmed up as the subject is: the first bulk load into
	// a store fresh from its setup ran up to 1.6× the later ones
	// (bench/analysis.md), which made the first run's ratio a measure of
	// that, not of the rebuild.
	if _, err := s.st.ceiling(ctx, s.rows); err != nil {
		return fail(fmt.Errorf("warm-up ceiling: %w", err))
	}
	workload := fmt.Sprintf("topic of %s records (the bench table's rows), into %s", thousands(s.rows), s.st.name())
	if s.mode == modeSink {
		workload += "; this build refuses `replicator rebuild` on this store, so the subject is `replicator sink` " +
			"from offset zero into an empty database, timed from its start until its stored offsets reach the end offsets"
	}
	return workload, teardown, nil
}

// config writes the read-model config of a sink or rebuild run into dir.
func (s *rebuildBench) config(dir string) (string, error) {
	return writeSinkConfig(dir, s.rp, s.st.url())
}

// writeSinkConfig writes into dir the config of a `replicator sink` or
// `rebuild` of the read model into store, on the broker and registry of
// the running replicator rp.
func writeSinkConfig(dir string, rp *replicatorProc, store string) (string, error) {
	cols := map[string]any{}
	for _, c := range readModelColumns {
		cols[c] = c
	}
	cfg := map[string]any{
		"log":      map[string]any{"level": "info"},
		"kafka":    map[string]any{"brokers": rp.brokers},
		"registry": map[string]any{"url": rp.registry},
		"read_models": []map[string]any{{
			"name": readModel, "store": store, "table": readModel, "key": "id",
			"sources": []map[string]any{{"entity": tableName, "key": "id", "owner": true, "columns": cols}},
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sink.yaml")
	return path, os.WriteFile(path, b, 0o600)
}

// subject rebuilds the read model into the emptied store (or, in
// modeSink, runs the sink until it has stored the end offsets).
func (s *rebuildBench) subject(ctx context.Context, run int) (sample, error) {
	if err := s.st.reset(ctx); err != nil {
		return nil, fmt.Errorf("reset the store: %w", err)
	}
	settle()
	name := fmt.Sprintf("rebuild-%s-%d", s.st.name(), run)
	dir, err := s.h.dir(name)
	if err != nil {
		return nil, err
	}
	path, err := s.config(dir)
	if err != nil {
		return nil, err
	}
	var smp sample
	if s.mode == modeRebuild {
		smp, err = s.rebuild(ctx, dir, path)
	} else {
		smp, err = s.catchUp(ctx, dir, path)
	}
	if err != nil {
		return nil, err
	}
	var n int64
	if err := s.st.db().QueryRowContext(ctx, "SELECT COUNT(*) FROM "+readModel).Scan(&n); err != nil {
		return nil, fmt.Errorf("count the read model: %w", err)
	}
	if n != s.rows {
		return nil, fmt.Errorf("read model %s holds %d rows, want %d", readModel, n, s.rows)
	}
	return smp, s.h.cleanup(dir)
}

// replicatorArgs adds --profile-dir under -profile.
func (s *rebuildBench) replicatorArgs(dir string, args ...string) []string {
	return s.h.profileArgs(dir, args...)
}

// profileArgs adds --profile-dir to the args of a replicator run in dir
// under -profile.
func (h *harness) profileArgs(dir string, args ...string) []string {
	if h.opts.profile != "" {
		args = append(args, "--profile-dir", filepath.Join(h.opts.profile, filepath.Base(dir)))
	}
	return args
}

func (s *rebuildBench) rebuild(ctx context.Context, dir, config string) (sample, error) {
	c, err := startChild("replicator rebuild", filepath.Join(dir, "replicator.log"), nil, s.h.replicator,
		s.replicatorArgs(dir, "rebuild", "--config", config, "--read-model", readModel)...)
	if err != nil {
		return nil, err
	}
	t1, rss, err := c.wait(ctx, streamTimeout(s.rows))
	if err != nil {
		return nil, err
	}
	cpu, err := c.cpuUsage()
	if err != nil {
		return nil, err
	}
	d := t1.Sub(c.started)
	return sample{"rows_per_s": float64(s.rows) / d.Seconds(), "seconds": d.Seconds(), "cpu_s": cpu.Seconds(), "peak_rss_mb": mb(rss)}, nil
}

// catchUp runs `replicator sink` from offset zero until the offsets it
// stores with the rows reach the end of the topic.
func (s *rebuildBench) catchUp(ctx context.Context, dir, config string) (sample, error) {
	c, err := startChild("replicator sink", filepath.Join(dir, "replicator.log"), nil, s.h.replicator,
		s.replicatorArgs(dir, "sink", "--config", config)...)
	if err != nil {
		return nil, err
	}
	defer c.kill()
	t1, err := waitStored(ctx, s.st.db(), s.rows, streamTimeout(s.rows), c.alive)
	if err != nil {
		return nil, err
	}
	cpu, err1 := procCPU(c.pid())
	rss, err2 := procPeakRSS(c.pid())
	if err := errors.Join(err1, err2, c.stop()); err != nil {
		return nil, err
	}
	d := t1.Sub(c.started)
	return sample{"rows_per_s": float64(s.rows) / d.Seconds(), "seconds": d.Seconds(), "cpu_s": cpu.Seconds(), "peak_rss_mb": mb(rss)}, nil
}

// waitStored polls the sink's offsets table until the read model's stored
// offsets add up to want (every record of a topic whose offsets start at
// zero) and returns when it saw that. Until the sink has created its
// tables the query fails; the last failure is reported at the deadline.
func waitStored(ctx context.Context, db *sql.DB, want int64, timeout time.Duration, alive func() error) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	q := "SELECT COALESCE(SUM(next_offset), 0) FROM replicator_sink_offsets WHERE read_model = '" + readModel + "'"
	var got int64
	var lastErr error
	for {
		err := db.QueryRowContext(ctx, q).Scan(&got)
		now := time.Now()
		if err == nil && got >= want {
			return now, nil
		}
		lastErr = err
		if err := alive(); err != nil {
			return now, err
		}
		if now.After(deadline) {
			return now, fmt.Errorf("stored offsets add up to %d, not %d, within %s (last error: %v)", got, want, timeout, lastErr)
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// createTableSQL is the CREATE TABLE of a table shaped as the read model
// (same columns, types, NOT NULL and primary key), quoted with q.
func createTableSQL(table string, cols []storeColumn, q func(string) string) string {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = q(c.name) + " " + c.typ
		if c.notNull {
			defs[i] += " NOT NULL"
		}
	}
	return fmt.Sprintf("CREATE TABLE %s (%s, PRIMARY KEY (%s))", q(table), strings.Join(defs, ", "), q("id"))
}

// selectRows reads the read model's rows, columns in readModelColumns'
// order, as the driver returns them.
func selectRows(ctx context.Context, db *sql.DB) ([][]any, error) {
	rows, err := db.QueryContext(ctx, "SELECT "+columns+" FROM "+readModel+" ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(readModelColumns))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}
