package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// "republish" on the command line selects that benchmark alone (names are
// exact: it is not a prefix of republish-latency), and each is in the
// default set (make bench runs them).
func TestSelectRepublish(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{duration: 10 * time.Second, scale: 1}}
	all := []benchmark{snapshotBenchmark(h), republishBenchmark(h), republishLatencyBenchmark(h)}
	for _, name := range []string{"republish", "republish-latency"} {
		got, err := selectBenchmarks(all, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, b := range got {
			names = append(names, b.name)
		}
		if !slices.Equal(names, []string{name}) {
			t.Errorf("%s selects %v, want %s alone", name, names, name)
		}
	}
	var err error
	var got []*benchmark
	if got, err = selectBenchmarks(all, nil); err != nil || len(got) != 3 {
		t.Errorf("the default set has %d of the 3 benchmarks, want the republish ones in it", len(got))
	}
}

// The report judges republish throughput against 0.7× COPY of the same
// run, and the latency during a republish against 100 ms for the
// republishing subject only.
func TestRepublishReportRows(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{duration: 10 * time.Second, scale: 1}}
	outcome := func(b benchmark, ceiling, subject []sample, label string) string {
		t.Helper()
		r := &result{bench: &b, ceiling: ceiling, subjects: [][]sample{subject}}
		var out []string
		for _, rw := range r.rows() {
			if rw.target != "" && strings.HasPrefix(rw.measured, b.subjects[0].name) {
				out = append(out, rw.target+": "+rw.outcome)
			}
		}
		if len(out) != 1 {
			t.Fatalf("%s: judged rows %q, want one", label, out)
		}
		return out[0]
	}
	rep := republishBenchmark(h)
	copyRun := []sample{{"rows_per_s": 100_000, "seconds": 10}}
	if got := outcome(rep, copyRun, []sample{{"rows_per_s": 70_000, "seconds": 14.3, "cpu_s": 9}}, "at 0.7×"); got != "≥ 0.7× COPY: pass" {
		t.Errorf("republish at 0.7× COPY: %s", got)
	}
	if got := outcome(rep, copyRun, []sample{{"rows_per_s": 69_000, "seconds": 14.5, "cpu_s": 9}}, "at 0.69×"); got != "≥ 0.7× COPY: MISS" {
		t.Errorf("republish at 0.69× COPY: %s", got)
	}

	lat := republishLatencyBenchmark(h)
	quiet := []sample{{"p50_ms": 3, "p99_ms": 500, "max_ms": 900}} // the reference is never judged
	if got := outcome(lat, quiet, []sample{{"p50_ms": 5, "p99_ms": 100, "max_ms": 150}}, "p99 100 ms"); got != "p99 ≤ 100 ms during a republish: pass" {
		t.Errorf("p99 of 100 ms: %s", got)
	}
	if got := outcome(lat, quiet, []sample{{"p50_ms": 5, "p99_ms": 101, "max_ms": 150}}, "p99 101 ms"); got != "p99 ≤ 100 ms during a republish: MISS" {
		t.Errorf("p99 of 101 ms: %s", got)
	}
}

// Only the records committed during the republish count, and a load that
// ended before the republish did fails the run rather than report a
// window it did not cover.
func TestDuringRepublish(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := latencyTrace{
		commit: []time.Time{at(0), at(10), at(20), at(30), at(40)},
		lat:    []time.Duration{1, 2, 3, 4, 5},
	}
	got, err := duringRepublish(tr, at(10), at(30))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []time.Duration{2, 3, 4}) {
		t.Errorf("window 10–30 ms: %v, want the records committed at 10, 20 and 30 ms", got)
	}
	if _, err := duringRepublish(tr, at(10), at(50)); err == nil || !strings.Contains(err.Error(), "raise -duration") {
		t.Errorf("load ended at 40 ms, republish at 50 ms: got %v, want an error saying to raise -duration", err)
	}
	if _, err := duringRepublish(tr, at(11), at(19)); err == nil || !strings.Contains(err.Error(), "no record") {
		t.Errorf("empty window: got %v, want an error", err)
	}
}

// The usage text names every benchmark and group, and says names are exact.
func TestUsageNamesBenchmarks(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if _, err := parseOptions([]string{"-h"}, &b); err == nil {
		t.Fatal("-h: want flag.ErrHelp")
	}
	usage := strings.Join(strings.Fields(b.String()), " ")
	h := &harness{opts: options{duration: 10 * time.Second, scale: 1}}
	for _, bm := range allBenchmarks(h) {
		for _, n := range []string{bm.name, bm.group} {
			if n != "" && !regexp.MustCompile(`(^|[^a-z0-9-])`+regexp.QuoteMeta(n)+`([^a-z0-9-]|$)`).MatchString(usage) {
				t.Errorf("usage does not name %q:\n%s", n, b.String())
			}
		}
	}
	if !strings.Contains(usage, "exactly that name (no prefixes: republish is not republish-latency)") {
		t.Errorf("usage does not say names are exact:\n%s", b.String())
	}
}
