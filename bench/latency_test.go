package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// "latency" selects the one-row latency benchmark with the other two, it
// is in the default set, the usage names it, and its p99 is judged
// against 50 ms for replicator only.
func TestSelectOneRowLatency(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{duration: 10 * time.Second, scale: 1, runs: 3}}
	all := allBenchmarks(h)
	got, err := selectBenchmarks(all, []string{"latency"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range got {
		names = append(names, b.name)
	}
	if want := []string{"latency-1k", "latency-10k", "latency-onerow"}; !slices.Equal(names, want) {
		t.Errorf("latency selects %v, want %v", names, want)
	}
	def, err := selectBenchmarks(all, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(def, func(b *benchmark) bool { return b.name == "latency-onerow" }) {
		t.Error("latency-onerow is not in the default set")
	}

	var usage strings.Builder
	if _, err := parseOptions([]string{"-h"}, &usage); err == nil {
		t.Fatal("-h: want flag.ErrHelp")
	}
	if !strings.Contains(usage.String(), "latency-onerow") {
		t.Errorf("usage does not name latency-onerow:\n%s", usage.String())
	}

	b := oneRowLatencyBenchmark(h)
	r := &result{bench: &b, ceiling: []sample{{"p99_ms": 5}}, subjects: [][]sample{{{"p99_ms": 60}}}}
	var p99 metric
	for _, m := range b.metrics {
		if m.key == "p99_ms" {
			p99 = m
		}
	}
	if v, ok := r.check(p99, 0); !ok || v.met || v.summary.Median != 60 {
		t.Errorf("p99 60 ms: got verdict %+v (judged %v), want a miss against 50 ms", v, ok)
	}
}

// The one-row load writes every row change as its own transaction, as
// many as it says, over connections that split the keys unevenly (5 keys
// per tick over 4 writers), and updates every row inserted before the
// last tick exactly once.
func TestOneRowLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &latencyBench{h: &harness{progress: io.Discard}, rate: 1_000, duration: 200 * time.Millisecond, writers: 4}
	_, teardown, err := s.setup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := teardown(); err != nil {
			t.Error(err)
		}
	})
	k := int64(s.perTick() / 2)
	if k != 5 {
		t.Fatalf("perTick()/2 = %d, want 5", k)
	}
	if _, err := s.warmUp(ctx); err != nil {
		t.Fatal(err)
	}
	ld, err := s.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ticks := int64(s.duration / tickInterval)
	if want := 2 * k * ticks; ld.rows != want {
		t.Errorf("load wrote %d rows, want %d", ld.rows, want)
	}
	if ld.rate <= 0 {
		t.Errorf("load rate %g, want > 0", ld.rate)
	}
	var rows, xids, updated int64
	// A row's xmin is the transaction that wrote its current version:
	// one transaction per change leaves every row a different one.
	err = s.conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text), count(*) FILTER (WHERE quantity = id % 1000 + 1)
FROM `+tableName).Scan(&rows, &xids, &updated)
	if err != nil {
		t.Fatal(err)
	}
	if want := k + k*ticks; rows != want {
		t.Errorf("table holds %d rows, want %d (warm-up %d, %d ticks of %d inserts)", rows, want, k, ticks, k)
	}
	if xids != rows {
		t.Errorf("%d distinct writing transactions for %d rows, want one each", xids, rows)
	}
	if want := k * ticks; updated != want {
		t.Errorf("%d rows updated once, want %d (every row but the last tick's)", updated, want)
	}
	if s.next != 1+k+k*ticks {
		t.Errorf("next key %d, want %d", s.next, 1+k+k*ticks)
	}
}

// CPU figures are per row measured, and a run that measured no row does
// not divide by zero.
func TestCPUFiguresPerRow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name           string
		rows           float64
		reader, walsnd float64
	}{
		{"200,000 rows", 200_000, 20, 10},
		{"no rows", 0, 4e6, 2e6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			smp := sample{"rows": tt.rows}
			cpuFigures{reader: 4 * time.Second, walsender: 2 * time.Second}.add(smp)
			if smp["cpu_us"] != tt.reader || smp["walsender_cpu_us"] != tt.walsnd {
				t.Errorf("got reader %g µs, walsender %g µs per row; want %g, %g", smp["cpu_us"], smp["walsender_cpu_us"], tt.reader, tt.walsnd)
			}
		})
	}
}

// The latency benchmarks keep their runs' logs and profiles apart.
func TestLatencyRunNames(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{duration: 10 * time.Second}}
	a, b := &latencyBench{h: h, rate: 10_000}, &latencyBench{h: h, rate: 10_000, writers: oneRowWriters}
	a.benchmark("latency-10k", "rows/s", "")
	b.benchmark("latency-onerow", "tx/s", "")
	if x, y := a.runName(1, "replicator"), b.runName(1, "replicator"); x == y {
		t.Errorf("latency-10k and latency-onerow both name run 1 %q, want different names", x)
	}
}
