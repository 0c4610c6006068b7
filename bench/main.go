// Command bench is replicator's benchmark suite. Every benchmark measures
// replicator against a ceiling (the least a minimal program needs for the
// same work) in the same run, repeats it, and reports the median, the
// spread and the ratio, against the targets of the issue. It writes the
// figures to docs/BENCHMARKS.md and docs/benchmarks.png.
//
//	go run ./bench [-scale F] [-runs N] [-duration D] [name...]
//
// Names are matched exactly (or name a group: latency, rebuild). The
// results are kept in docs/benchmarks.json, from which the report and the
// chart are rendered: a run of some benchmarks replaces only theirs, each
// section saying which run measured it; a run of the default set replaces
// them all (store.go).
//
// It needs the PostgreSQL server binaries (as the tests do) and starts its
// own throwaway clusters; everything runs on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/replicator/replicator/broker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	scale    float64
	runs     int
	runsSet  bool          // -runs was given: it applies to every benchmark
	duration time.Duration // of each latency load
	doc      string        // markdown report; "" writes none
	chart    string        // PNG chart; "" draws none
	results  string        // results kept across runs (store.go); "": report this run alone
	work     string        // parent of the scratch directory
	keep     bool          // keep the scratch directory (logs, broker data)
	note     string        // added to the report's header
	profile  string        // directory for pprof profiles of every replicator run; "" for none
	linger   time.Duration // kafka.linger of every replicator run (0: its default)
	metrics  bool          // stream adds a subject with metrics.listen on
	// The soak: its duration, load and the broker's compaction threshold.
	soak         time.Duration
	soakRate     int
	soakMinDirty int64
	soakEmbedded bool
	names        []string
}

// defaultDoc is the kept report, rendered from every benchmark's latest
// kept result.
const defaultDoc = "docs/BENCHMARKS.md"

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Float64Var(&o.scale, "scale", 1, "workload size relative to the issue's (1M-row backlog, 5M-row transaction, 1M-row table)")
	fs.IntVar(&o.runs, "runs", 3, "runs per benchmark (at least 3 for a report)")
	fs.DurationVar(&o.duration, "duration", 0, "length of each latency load (default 60s × scale, at least 10s)")
	fs.StringVar(&o.doc, "doc", defaultDoc, "markdown report to write, relative to the module root (\"\" for none)")
	fs.StringVar(&o.chart, "chart", "docs/benchmarks.png", "PNG chart to write, relative to the module root (\"\" for none; default none when -doc is given)")
	fs.StringVar(&o.results, "results", "docs/benchmarks.json", "results kept across runs, relative to the module root: this run's benchmarks replace theirs (all of them when none is named), "+
		"and the report and chart show them all (\"\" for a report of this run alone; default \"\" when -doc is given)")
	fs.StringVar(&o.work, "work", "", "directory for scratch files (default the system temp dir)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory: logs and broker data of every run")
	fs.StringVar(&o.profile, "profile", "", "write CPU and allocation profiles of every `replicator run` into DIR/<run> (its --profile-dir)")
	fs.DurationVar(&o.linger, "linger", 0, "set kafka.linger of every `replicator run` (default: replicator's own default)")
	fs.BoolVar(&o.metrics, "metrics", false, "stream: also run replicator (embedded broker) with metrics.listen on a free loopback port, in the same runs, and report metrics on ÷ off (nothing scrapes it)")
	fs.DurationVar(&o.soak, "soak", soakMinDuration, "soak: length of its steady load (the issue asks for at least 10m)")
	// 5,000 rows/s: a record took about 270 bytes on the broker's disk in
	// a scaled run, so 10 minutes write some 800 MB, past the default
	// 256 MiB threshold more than once, without a bench-only threshold.
	fs.IntVar(&o.soakRate, "soak-rate", 5_000, "soak: rows per second of its steady load")
	fs.Int64Var(&o.soakMinDirty, "soak-min-dirty", broker.DefaultCompactionMinDirtyBytes, "soak: the broker's compaction threshold in bytes (a lower one is bench-only; the report says so)")
	fs.BoolVar(&o.soakEmbedded, "soak-embedded", false, "soak: stream into replicator's embedded broker instead of the broker process (default threshold only)")
	fs.StringVar(&o.note, "note", "", "a sentence to add to the report's header (e.g. why the run is scaled)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: go run ./bench [flags] [name...]

Each name selects the benchmark of exactly that name (no prefixes: republish
is not republish-latency), or every benchmark of a group; none selects all
but the optional ones.

benchmarks: stream, latency-1k, latency-10k, latency-onerow, large-txn, snapshot,
  toast, one-row, jsonb, wide, tables, republish, republish-latency,
  rebuild-pg, rebuild-sqlite, rebuild-mysql (MariaDB on 127.0.0.1:3306 as root),
  sink-latency
groups: latency (latency-1k, latency-10k, latency-onerow),
  rebuild (rebuild-pg, rebuild-sqlite, rebuild-mysql)
optional (only when named): lean-reader (the stream backlog read by the bare
  reader and by a leaner one), soak (a steady load over compaction passes of
  the broker, -soak long, 10m)

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.names = fs.Args()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.runsSet = set["runs"]
	// A report elsewhere (docs/bench-runs/…) is of this run alone, and
	// leaves the kept results and their chart as they are. The default
	// doc named explicitly is still the kept report.
	elsewhere := set["doc"] && filepath.Clean(o.doc) != defaultDoc
	if elsewhere && !set["results"] {
		o.results = ""
	}
	if elsewhere && !set["chart"] {
		o.chart = ""
	}
	switch {
	case o.scale <= 0 || o.scale > 10:
		return o, fmt.Errorf("-scale %g: want 0 < scale ≤ 10", o.scale)
	case o.runs < 1 || o.runs > 10:
		return o, fmt.Errorf("-runs %d: want 1..10", o.runs)
	case o.duration < 0 || o.duration > 10*time.Minute:
		return o, fmt.Errorf("-duration %s: want up to 10m", o.duration)
	case o.soak < 10*time.Second || o.soak > 2*time.Hour:
		return o, fmt.Errorf("-soak %s: want 10s..2h (a soak is at least 10m)", o.soak)
	case o.soakRate < 200 || o.soakRate > 50_000:
		return o, fmt.Errorf("-soak-rate %d: want 200..50000 rows/s", o.soakRate)
	case o.soakMinDirty < 1<<20:
		return o, fmt.Errorf("-soak-min-dirty %d: want at least 1 MiB (1048576)", o.soakMinDirty)
	case o.soakEmbedded && o.soakMinDirty != broker.DefaultCompactionMinDirtyBytes:
		return o, fmt.Errorf("-soak-embedded with -soak-min-dirty %d: replicator's embedded broker has no setting for its compaction threshold; "+
			"drop -soak-min-dirty, or -soak-embedded to soak the broker process", o.soakMinDirty)
	}
	if o.profile != "" {
		abs, err := filepath.Abs(o.profile) // the replicator runs in another directory
		if err != nil {
			return o, fmt.Errorf("-profile %s: %w", o.profile, err)
		}
		o.profile = abs
	}
	if o.duration == 0 {
		o.duration = max(10*time.Second, time.Duration(float64(time.Minute)*o.scale).Round(time.Second))
	}
	return o, nil
}

// runsOf is how many times b runs: -runs when given, else at least b's
// own reportRuns.
func (o options) runsOf(b *benchmark) int {
	if o.runsSet {
		return o.runs
	}
	if b.onlyRuns > 0 {
		return b.onlyRuns
	}
	return max(o.runs, b.reportRuns)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(opts.work, "replicator-bench-*")
	if err != nil {
		return err
	}
	if opts.keep {
		fmt.Fprintln(stderr, "scratch directory (kept):", work)
	} else {
		defer os.RemoveAll(work)
	}
	h := &harness{opts: opts, root: root, work: work, progress: stderr}

	all := allBenchmarks(h)
	selected, err := selectBenchmarks(all, opts.names)
	if err != nil {
		return err
	}

	load := loadAvg()
	start := time.Now()
	// The source measured is the one built now, whatever is committed or
	// edited while the suite runs.
	built := gitDescribe(ctx, root)
	h.logf("building replicator, bare reader, broker process and sourcedrop")
	if err := h.build(ctx); err != nil {
		return err
	}
	var results []*result
	var failed []error
	for _, b := range selected {
		r := runBenchmark(ctx, b, opts.runsOf(b), h.logf)
		printResult(stdout, r)
		results = append(results, r)
		if r.err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", b.name, r.err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return ctx.Err() // interrupted: leave the report as it was
	}
	m := describeMachine(ctx, root, args)
	m.commit = built
	m.suiteTotal = time.Since(start)
	m.loadBefore = load
	fmt.Fprintf(stdout, "\nsuite: %s, scale %g, %d runs\n", m.suiteTotal.Round(time.Second), opts.scale, opts.runs)

	inRoot := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	es := entries(newRun(m, opts), results)
	if opts.results != "" {
		if es, err = mergeResults(inRoot(opts.results), inRoot(opts.doc), opts, all, es, stderr); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	chart := ""
	if opts.chart != "" {
		path := inRoot(opts.chart)
		if err := writeChart(path, es); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		if opts.doc != "" {
			if chart, err = filepath.Rel(filepath.Dir(inRoot(opts.doc)), path); err != nil {
				return err
			}
		}
	}
	if opts.doc != "" {
		path := inRoot(opts.doc)
		kept := ""
		if opts.results != "" {
			if kept, err = filepath.Rel(filepath.Dir(path), inRoot(opts.results)); err != nil {
				return err
			}
		}
		if err := writeDoc(path, es, chart, kept); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	return errors.Join(failed...)
}

// mergeResults merges this run's entries (fresh) into the results kept at
// path and returns them all. Without a results file yet, the report at doc
// (written before the file existed) is read back first so that its
// sections survive; if it cannot be, that is said on stderr and only this
// run's sections remain (a full run replaces them all anyway).
func mergeResults(path, doc string, opts options, all []benchmark, fresh []storedEntry, stderr io.Writer) ([]storedEntry, error) {
	st, err := readStore(path)
	if errors.Is(err, errNoStore) {
		st = &store{}
		if b, rerr := os.ReadFile(doc); rerr == nil && len(opts.names) > 0 {
			if seeded, serr := seedStore(string(b), all); serr != nil {
				fmt.Fprintf(stderr, "bench: could not read back %s (%v): its other sections are dropped; a full run replaces it anyway\n", doc, serr)
			} else {
				st = seeded
			}
		}
	} else if err != nil {
		return nil, err
	}
	order := make([]string, len(all))
	for i, b := range all {
		order[i] = b.name
	}
	st.Results = merge(st.Results, fresh, len(opts.names) == 0, order)
	if err := writeStore(path, st); err != nil {
		return nil, err
	}
	return st.Results, nil
}

// allBenchmarks is every benchmark, in the order they run; the optional
// ones run only when named.
func allBenchmarks(h *harness) []benchmark {
	return []benchmark{
		streamBenchmark(h),
		inGroup("latency", latencyBenchmark(h, 1_000)),
		inGroup("latency", latencyBenchmark(h, 10_000)),
		inGroup("latency", oneRowLatencyBenchmark(h)),
		largeTxnBenchmark(h),
		snapshotBenchmark(h),
		toastBenchmark(h),
		oneRowBenchmark(h),
		jsonbBenchmark(h),
		wideBenchmark(h),
		tablesBenchmark(h),
		republishBenchmark(h),
		republishLatencyBenchmark(h),
		inGroup("rebuild", rebuildBenchmark(h, &pgStore{}, "COPY FROM STDIN", 0.6,
			"`COPY … FROM STDIN` (text format, pgconn's CopyFrom) of the same rows into a new table of the same columns, types and "+
				"primary key in the same database, the rows read from the warm-up's table with `COPY … TO STDOUT` before the runs.")),
		inGroup("rebuild", rebuildBenchmark(h, &sqliteStore{}, "prepared INSERTs", 0.5,
			"prepared INSERTs (modernc.org/sqlite), one per row, in one transaction, of the same rows (read from the warm-up's "+
				"table) into a new file with the sink's pragmas (WAL, synchronous=NORMAL) and a table of the same columns, types and primary key.")),
		inGroup("rebuild", rebuildBenchmark(h, &mysqlStore{}, "bulk load", 0.5,
			"the faster of MariaDB's two bulk loads of the same rows (read from the warm-up's table) into a new table of the same "+
				"columns, types and primary key: `LOAD DATA LOCAL INFILE` of them as text, and multi-row INSERTs of 1,000 rows "+
				"(parameters interpolated by the client) in one transaction; both are reported.",
			metric{key: "load_data_rows_per_s", label: "LOAD DATA", unit: "rows/s"},
			metric{key: "insert_rows_per_s", label: "multi-row INSERT", unit: "rows/s"})),
		sinkLatencyBenchmark(h),
		leanReaderBenchmark(h),
		soakBenchmark(h),
	}
}

// inGroup puts b in group g, a name that selects every benchmark of the
// group (names are matched exactly, never as prefixes: "republish" is not
// "republish-latency").
func inGroup(g string, b benchmark) benchmark {
	b.group = g
	return b
}

// selectBenchmarks returns the benchmarks named, each name being a
// benchmark's exact name or a group's (see [inGroup]), or all but the
// optional ones when none is named.
func selectBenchmarks(all []benchmark, names []string) ([]*benchmark, error) {
	var out []*benchmark
	for i := range all {
		if len(names) == 0 && !all[i].optional {
			out = append(out, &all[i])
		}
	}
	for _, n := range names {
		found := false
		for i := range all {
			if all[i].name == n || all[i].group == n {
				out = append(out, &all[i])
				found = true
			}
		}
		if !found {
			var known []string
			groups := map[string]bool{}
			for _, b := range all {
				known = append(known, b.name)
				if b.group != "" && !groups[b.group] {
					groups[b.group] = true
					known = append(known, b.group+" (group)")
				}
			}
			return nil, fmt.Errorf("no benchmark %q (have %s)", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// moduleRoot finds the directory of replicator's go.mod, from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/replicator/replicator\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run bench inside the replicator module (go run ./bench)")
		}
		dir = parent
	}
}
