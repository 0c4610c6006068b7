package main

import (
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/broker"
)

func TestCheckTargets(t *testing.T) {
	t.Parallel()
	throughput := metric{key: "rows_per_s", ratio: true, target: &target{ofRatio: true, atLeast: true, value: 0.9}}
	rss := metric{key: "peak_rss_mb", target: &target{atLeast: false, value: 300}}
	b := &benchmark{subjects: []subject{{name: "s"}}, metrics: []metric{throughput, rss}}
	tests := []struct {
		name    string
		ceiling []sample
		subject []sample
		m       metric
		want    bool
		median  float64
	}{
		{"ratio met", []sample{{"rows_per_s": 100}, {"rows_per_s": 200}, {"rows_per_s": 100}},
			[]sample{{"rows_per_s": 95}, {"rows_per_s": 150}, {"rows_per_s": 90}}, throughput, true, 0.9},
		{"ratio missed", []sample{{"rows_per_s": 100}, {"rows_per_s": 100}, {"rows_per_s": 100}},
			[]sample{{"rows_per_s": 80}, {"rows_per_s": 95}, {"rows_per_s": 85}}, throughput, false, 0.85},
		{"absolute met", nil, []sample{{"peak_rss_mb": 120}, {"peak_rss_mb": 310}, {"peak_rss_mb": 130}}, rss, true, 130},
		{"no data", nil, []sample{{}, {}, {}}, rss, false, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &result{bench: b, ceiling: tt.ceiling, subjects: [][]sample{tt.subject}}
			v, ok := r.check(tt.m, 0)
			if !ok {
				t.Fatal("got no verdict, want one")
			}
			if v.met != tt.want {
				t.Errorf("met: got %v, want %v (summary %+v)", v.met, tt.want, v.summary)
			}
			got := v.summary.Median
			if math.IsNaN(got) != math.IsNaN(tt.median) || math.Abs(got-tt.median) > 1e-9 {
				t.Errorf("median: got %v, want %v", got, tt.median)
			}
		})
	}
}

func TestSelectBenchmarks(t *testing.T) {
	t.Parallel()
	all := []benchmark{{name: "stream"}, {name: "latency-1k", group: "latency"}, {name: "latency-10k", group: "latency"}, {name: "snapshot"},
		{name: "republish"}, {name: "republish-latency"}, {name: "lean-reader", optional: true}}
	tests := []struct {
		names []string
		want  []string
	}{
		{nil, []string{"stream", "latency-1k", "latency-10k", "snapshot", "republish", "republish-latency"}},
		{[]string{"republish"}, []string{"republish"}}, // exact: not republish-latency
		{[]string{"republish-latency"}, []string{"republish-latency"}},
		{[]string{"latency"}, []string{"latency-1k", "latency-10k"}},
		{[]string{"snapshot", "latency-10k"}, []string{"snapshot", "latency-10k"}},
		{[]string{"lean-reader"}, []string{"lean-reader"}}, // optional: only by name
	}
	for _, tt := range tests {
		got, err := selectBenchmarks(all, tt.names)
		if err != nil {
			t.Fatalf("%v: %v", tt.names, err)
		}
		var names []string
		for _, b := range got {
			names = append(names, b.name)
		}
		if len(names) != len(tt.want) {
			t.Fatalf("%v: got %v, want %v", tt.names, names, tt.want)
		}
		for i := range names {
			if names[i] != tt.want[i] {
				t.Errorf("%v: got %v, want %v", tt.names, names, tt.want)
			}
		}
	}
	for _, n := range []string{"nope", "latency-1", "republish-"} { // a prefix is no name
		if _, err := selectBenchmarks(all, []string{n}); err == nil {
			t.Errorf("%q: got no error, want one", n)
		}
	}
}

func TestThousands(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 2200000: "2,200,000", -12345: "-12,345"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d): got %q, want %q", in, got, want)
		}
	}
}

// A benchmark that asks for more runs gets them in a report, unless -runs
// was given: then it applies to all.
func TestRunsOf(t *testing.T) {
	stream := &benchmark{name: "stream", reportRuns: 5}
	plain := &benchmark{name: "snapshot"}
	soak := &benchmark{name: "soak", onlyRuns: 1}
	for _, tt := range []struct {
		args                   []string
		stream, snapshot, soak int
	}{
		{nil, 5, 3, 1},
		{[]string{"-runs", "3"}, 3, 3, 3},
		{[]string{"-runs", "1"}, 1, 1, 1},
		{[]string{"-runs", "7"}, 7, 7, 7},
	} {
		o, err := parseOptions(tt.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got, got2, got3 := o.runsOf(stream), o.runsOf(plain), o.runsOf(soak); got != tt.stream || got2 != tt.snapshot || got3 != tt.soak {
			t.Errorf("%v: runs %d (stream), %d (snapshot), %d (soak); want %d, %d, %d", tt.args, got, got2, got3, tt.stream, tt.snapshot, tt.soak)
		}
	}
}

// The soak's flags default to the soak (10 minutes, the broker's
// own compaction threshold) and refuse what is not a load.
func TestSoakOptions(t *testing.T) {
	t.Parallel()
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.soak != 10*time.Minute || o.soakRate != 5_000 || o.soakMinDirty != broker.DefaultCompactionMinDirtyBytes || o.soakEmbedded {
		t.Errorf("defaults: -soak %s, -soak-rate %d, -soak-min-dirty %d", o.soak, o.soakRate, o.soakMinDirty)
	}
	o, err = parseOptions([]string{"-soak", "1m", "-soak-rate", "2000", "-soak-min-dirty", "4194304"}, io.Discard)
	if err != nil || o.soak != time.Minute || o.soakRate != 2000 || o.soakMinDirty != 4<<20 {
		t.Errorf("got %+v, %v; want a 1m soak at 2000 rows/s with a 4 MiB threshold", o, err)
	}
	for _, args := range [][]string{
		{"-soak", "1s"}, {"-soak", "3h"}, {"-soak-rate", "0"}, {"-soak-rate", "1000000"}, {"-soak-min-dirty", "1000"},
		{"-soak-embedded", "-soak-min-dirty", "4194304"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: got %v, want an error naming %s", args, err, args[0])
		}
	}
}

// The soak's report says when its run is not what the issue calls a soak:
// shorter than ten minutes, or with a bench-only compaction threshold.
func TestSoakWorkloadSaysWhatIsNotDefault(t *testing.T) {
	t.Parallel()
	s := &soakBench{latencyBench: latencyBench{duration: time.Minute}, minDirty: 4 << 20}
	got := s.describe("load")
	for _, want := range []string{"bench-only compaction threshold 4 MiB", "(the default is 256 MiB)", "shorter than a soak"} {
		if !strings.Contains(got, want) {
			t.Errorf("workload %q lacks %q", got, want)
		}
	}
	s = &soakBench{latencyBench: latencyBench{duration: 10 * time.Minute}, minDirty: broker.DefaultCompactionMinDirtyBytes}
	if got := s.describe("load"); got != "load; compaction threshold 256 MiB" {
		t.Errorf("workload of a default soak: %q", got)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "go run ./bench"},
		{[]string{"-runs", "3", "stream"}, "go run ./bench -runs 3 stream"},
		{[]string{"-chart", "", "-note", "it's scaled"}, `go run ./bench -chart '' -note 'it'\''s scaled'`},
		{[]string{"-note", "{a,b}!", "-work", "/tmp/x-1"}, `go run ./bench -note '{a,b}!' -work /tmp/x-1`},
	} {
		if got := commandLine(tt.args); got != tt.want {
			t.Errorf("commandLine(%q): got %s, want %s", tt.args, got, tt.want)
		}
	}
}

// The kept results and their chart are the default report's; a report
// written elsewhere (-doc, docs/bench-runs/) is of its run alone and
// leaves both alone unless asked.
func TestReportDestinations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args                []string
		doc, chart, results string
	}{
		{nil, "docs/BENCHMARKS.md", "docs/benchmarks.png", "docs/benchmarks.json"},
		{[]string{"-doc", "docs/bench-runs/x.md"}, "docs/bench-runs/x.md", "", ""},
		{[]string{"-doc", "x.md", "-results", "r.json", "-chart", "c.png"}, "x.md", "c.png", "r.json"},
		{[]string{"-results", ""}, "docs/BENCHMARKS.md", "docs/benchmarks.png", ""},
		// The default doc named explicitly keeps the kept results and chart.
		{[]string{"-doc", "docs/BENCHMARKS.md"}, "docs/BENCHMARKS.md", "docs/benchmarks.png", "docs/benchmarks.json"},
		{[]string{"-doc", "./docs/BENCHMARKS.md"}, "./docs/BENCHMARKS.md", "docs/benchmarks.png", "docs/benchmarks.json"},
	}
	for _, tt := range tests {
		o, err := parseOptions(tt.args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if o.doc != tt.doc || o.chart != tt.chart || o.results != tt.results {
			t.Errorf("%q: got doc %q, chart %q, results %q; want %q, %q, %q", tt.args, o.doc, o.chart, o.results, tt.doc, tt.chart, tt.results)
		}
	}
}
