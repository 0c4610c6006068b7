package main

import (
	"io"
	"math"
	"testing"
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
	all := []benchmark{{name: "stream"}, {name: "latency-1k"}, {name: "latency-10k"}, {name: "snapshot"}, {name: "lean-reader", optional: true}}
	tests := []struct {
		names []string
		want  []string
	}{
		{nil, []string{"stream", "latency-1k", "latency-10k", "snapshot"}},
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
	if _, err := selectBenchmarks(all, []string{"nope"}); err == nil {
		t.Error("unknown name: got no error, want one")
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
	for _, tt := range []struct {
		args             []string
		stream, snapshot int
	}{
		{nil, 5, 3},
		{[]string{"-runs", "3"}, 3, 3},
		{[]string{"-runs", "1"}, 1, 1},
		{[]string{"-runs", "7"}, 7, 7},
	} {
		o, err := parseOptions(tt.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got, got2 := o.runsOf(stream), o.runsOf(plain); got != tt.stream || got2 != tt.snapshot {
			t.Errorf("%v: runs %d (stream), %d (snapshot); want %d, %d", tt.args, got, got2, tt.stream, tt.snapshot)
		}
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
