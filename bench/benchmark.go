package main

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"

	"github.com/replicator/replicator/bench/stats"
)

// A benchmark measures one or more subjects against a ceiling, the best a
// minimal program can do with the same work, measured in the same run, so
// that every figure comes with a ratio that does not depend on the machine.
//
// Adding a benchmark is a constructor returning this struct (closures over
// its own fixture) and one line in main's list.
type benchmark struct {
	name string // selects it on the command line, matched exactly
	// group, when set, is a name that selects it with the rest of its
	// group (latency, rebuild); see inGroup.
	group string
	// chartName, when set, names it in the chart's latency panel (default
	// its name without "latency-", followed by "rows/s").
	chartName string
	about     string // what is measured and how, for docs/BENCHMARKS.md (markdown)

	// setup prepares what every run needs (a cluster, data, slots) and
	// describes the workload. teardown is called once all runs are done,
	// also after a failure.
	setup func(ctx context.Context) (workload string, teardown func() error, err error)

	ceiling  subject
	subjects []subject // usually one; compared with the ceiling one by one
	metrics  []metric

	// reportRuns, when more than -runs' default, is how many runs a report
	// takes (-runs given on the command line wins): for a benchmark whose
	// runs vary more than the others', a median over more of them.
	reportRuns int

	// onlyRuns, when set, is how many runs it takes unless -runs is
	// given: the soak, whose one run is ten minutes.
	onlyRuns int

	// optional leaves it out of the default set (all): it runs only when
	// named. For measurements that check the suite itself rather than
	// replicator.
	optional bool

	// layers, when set, name the ceiling and subjects that each add one
	// stage of the same work, from the least to the whole pipeline: the
	// report shows what each adds to the time (see [result.layers]).
	layers []layer

	// pairs are subjects compared with each other run by run (e.g. metrics
	// on ÷ off), beside their ratios to the ceiling.
	pairs []pair
}

// A layer is one stage of a breakdown of where a benchmark's time goes:
// the subject (or ceiling) that stops after it, and what it adds over the
// layer before.
type layer struct {
	subject string
	adds    string
}

// A pair compares subject a with subject b on a metric, run by run (a ÷ b).
type pair struct {
	a, b, key, label string
}

// A subject is one measured program. run is called once per run (1-based)
// and returns that run's figures, keyed by metric.
type subject struct {
	name string
	run  func(ctx context.Context, run int) (sample, error)
	// reference marks a figure reported beside the subjects to explain
	// them (a truer ceiling, a stage of the pipeline): it is never judged
	// against a target nor drawn in the chart.
	reference bool
}

// sample holds the figures of one run of one subject, by metric key.
type sample map[string]float64

// A metric is one figure every subject (or just some) reports.
type metric struct {
	key   string
	label string
	unit  string
	// ratio prints subject/ceiling for every subject.
	ratio  bool
	target *target
	chart  chartKind
}

// chartKind says where a metric appears in docs/benchmarks.png.
type chartKind int

const (
	chartNone    chartKind = iota
	chartRatio             // a bar of the subject/ceiling ratio, with its target
	chartLatency           // bars of the subject's and the ceiling's medians (ms)
)

// A target is the bar a subject's figure must clear.
type target struct {
	ofRatio bool    // compares subject/ceiling, else the subject's own figure
	atLeast bool    // ≥ value, else ≤ value
	value   float64 // in the metric's unit, or a plain ratio
	text    string  // as stated in the issue, e.g. "≥ 0.9× bare reader"
	// subject, when set, is the only subject the target applies to (the
	// benchmark's about text says why); the others are reported, not judged.
	subject string
}

// met reports whether x clears the target.
func (t *target) met(x float64) bool {
	if math.IsNaN(x) {
		return false
	}
	if t.atLeast {
		return x >= t.value
	}
	return x <= t.value
}

// result is what running one benchmark produced.
type result struct {
	bench    *benchmark
	workload string
	ceiling  []sample   // by run
	subjects [][]sample // by subject, then run
	elapsed  time.Duration
	err      error // the first failure; the samples before it are kept
}

// runs is how many runs r holds (of its ceiling, or of its first subject
// when it has no ceiling).
func (r *result) runs() int {
	n := len(r.ceiling)
	for _, s := range r.subjects {
		n = max(n, len(s))
	}
	return n
}

// samples returns the samples of the ceiling or subject called name, and
// whether there is one.
func (r *result) samples(name string) ([]sample, bool) {
	if name == r.bench.ceiling.name {
		return r.ceiling, true
	}
	for i, s := range r.bench.subjects {
		if s.name == name {
			return r.subjects[i], true
		}
	}
	return nil, false
}

// value returns the figures of key for samples (NaN where missing).
func values(samples []sample, key string) []float64 {
	xs := make([]float64, len(samples))
	for i, s := range samples {
		x, ok := s[key]
		if !ok {
			x = math.NaN()
		}
		xs[i] = x
	}
	return xs
}

// ratios returns subject/ceiling of key, run by run.
func (r *result) ratios(subj int, key string) []float64 {
	s := values(r.subjects[subj], key)
	c := values(r.ceiling, key)
	n := min(len(s), len(c))
	xs := make([]float64, n)
	for i := range n {
		xs[i] = s[i] / c[i]
	}
	return xs
}

// verdict is a target checked against the median of the runs.
type verdict struct {
	summary stats.Summary // of the figure the target is about
	met     bool
}

// check evaluates m's target for subject subj.
func (r *result) check(m metric, subj int) (verdict, bool) {
	if m.target == nil || r.bench.subjects[subj].reference ||
		(m.target.subject != "" && m.target.subject != r.bench.subjects[subj].name) {
		return verdict{}, false
	}
	var xs []float64
	if m.target.ofRatio {
		xs = r.ratios(subj, m.key)
	} else {
		xs = values(r.subjects[subj], m.key)
	}
	s := stats.Summarize(xs)
	return verdict{summary: s, met: s.N > 0 && m.target.met(s.Median)}, true
}

// runBenchmark sets b up and runs its ceiling and subjects runs times,
// alternating which goes first so that neither always meets a warmer or
// colder machine.
func runBenchmark(ctx context.Context, b *benchmark, runs int, progress func(format string, args ...any)) *result {
	start := time.Now()
	r := &result{bench: b, subjects: make([][]sample, len(b.subjects))}
	defer func() { r.elapsed = time.Since(start) }()

	progress("%s: setting up", b.name)
	workload, teardown, err := b.setup(ctx)
	if err != nil {
		r.err = fmt.Errorf("setup: %w", err)
		return r
	}
	r.workload = workload
	defer func() {
		if err := teardown(); err != nil && r.err == nil {
			r.err = fmt.Errorf("teardown: %w", err)
		}
	}()
	progress("%s: %s (setup %s)", b.name, workload, time.Since(start).Round(time.Second))

	for run := 1; run <= runs; run++ {
		order := make([]int, 0, len(b.subjects)+1) // -1 is the ceiling
		for i := range b.subjects {
			order = append(order, i)
		}
		switch {
		case b.ceiling.run == nil: // a benchmark without a ceiling (the soak)
		case run%2 == 1:
			order = append([]int{-1}, order...)
		default:
			order = append(order, -1)
		}
		for _, i := range order {
			s := b.ceiling
			if i >= 0 {
				s = b.subjects[i]
			}
			if d := settle(); d > time.Second {
				progress("%s: run %d/%d %s: wrote back earlier writes first (%s)", b.name, run, runs, s.name, d.Round(100*time.Millisecond))
			}
			t := time.Now()
			smp, err := s.run(ctx, run)
			if err != nil {
				r.err = fmt.Errorf("run %d, %s: %w", run, s.name, err)
				return r
			}
			if i < 0 {
				r.ceiling = append(r.ceiling, smp)
			} else {
				r.subjects[i] = append(r.subjects[i], smp)
			}
			progress("%s: run %d/%d %s: %s (%s)", b.name, run, runs, s.name, b.brief(smp), time.Since(t).Round(100*time.Millisecond))
		}
	}
	return r
}

// brief renders a sample on one line for progress output.
func (b *benchmark) brief(s sample) string {
	out := ""
	for _, m := range b.metrics {
		x, ok := s[m.key]
		if !ok {
			continue
		}
		if out != "" {
			out += ", "
		}
		out += m.label + " " + formatValue(x, m.unit)
	}
	return out
}

// settle writes every dirty page out before a timed run and returns how
// long that took. The setup's and the previous runs' writes (PostgreSQL
// runs with fsync off; the broker keeps its log in files) are otherwise
// written back by the kernel some thirty seconds later, on the same two
// cores, during whichever run happens to be timed then: it was seen to
// land in the stream's runs (up to 600 MB at once).
func settle() time.Duration {
	t := time.Now()
	syscall.Sync()
	return time.Since(t)
}
