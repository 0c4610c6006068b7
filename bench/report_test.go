package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeResults are results shaped like the suite's, for rendering tests.
func fakeResults() []*result {
	h := &harness{opts: options{runs: 3, scale: 0.1, duration: 10 * time.Second}}
	stream := streamBenchmark(h)
	lat := latencyBenchmark(h, 10_000)
	return []*result{
		{bench: &stream, workload: "backlog", elapsed: time.Minute,
			ceiling: []sample{{"rows_per_s": 150_000}, {"rows_per_s": 140_000}, {"rows_per_s": 155_000}},
			subjects: [][]sample{
				{{"rows_per_s": 100_000}, {"rows_per_s": 98_000}, {"rows_per_s": 101_000}},
				{{"rows_per_s": 60_000}, {"rows_per_s": 50_000}, {"rows_per_s": 82_000}},
			}},
		{bench: &lat, workload: "10k rows/s", elapsed: time.Minute,
			ceiling:  []sample{{"p50_ms": 1.3, "p99_ms": 4.2, "max_ms": 20}, {"p50_ms": 1.2, "p99_ms": 4.1, "max_ms": 14}, {"p50_ms": 0.05, "p99_ms": 4.2, "max_ms": 24}},
			subjects: [][]sample{{{"p50_ms": 2.9, "p99_ms": 983, "max_ms": 2100}, {"p50_ms": 2.8, "p99_ms": 912, "max_ms": 2050}, {"p50_ms": 3, "p99_ms": 1236, "max_ms": 2270}}}},
	}
}

func TestWriteChart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "chart.png")
	if err := writeChart(path, fakeResults()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("got %d bytes starting %q, want a PNG", len(b), b[:min(8, len(b))])
	}
}

func TestWriteDoc(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	m := machine{cpus: 2, date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), command: "go run ./bench -scale 0.1"}
	if err := writeDoc(path, m, options{runs: 3, scale: 0.1}, fakeResults(), "benchmarks.png"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{
		"not full-scale figures",
		"| stream | replicator, embedded broker | ≥ 0.9× bare reader | 0.67× (0.65× – 0.70×) of bare reader | **MISS** |",
		"| latency-10k | replicator, embedded broker | p99 ≤ 50 ms at 10k rows/s | 983.0 ms (912.0 – 1236.0) | **MISS** |",
		"![throughput ratios and latency percentiles](benchmarks.png)",
		"## What the profiles showed, and what changed",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
}

// A report of benchmarks without targets (lean-reader) says so rather
// than print an empty table.
func TestWriteDocWithoutTargets(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{runs: 3, scale: 1}}
	lean := leanReaderBenchmark(h)
	res := []*result{{bench: &lean, workload: "backlog", elapsed: time.Minute,
		ceiling:  []sample{{"rows_per_s": 260_000}, {"rows_per_s": 250_000}, {"rows_per_s": 270_000}},
		subjects: [][]sample{{{"rows_per_s": 170_000}, {"rows_per_s": 180_000}, {"rows_per_s": 175_000}}}}}
	path := filepath.Join(t.TempDir(), "lean.md")
	if err := writeDoc(path, machine{cpus: 2}, options{runs: 3, scale: 1}, res, ""); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.Contains(doc, "None: the benchmarks run here have no target.") || strings.Contains(doc, "| benchmark | subject | target |") {
		t.Errorf("report of lean-reader: want no target table:\n%s", doc)
	}
	if !strings.Contains(doc, "|  | bare reader, lean | 175,000 rows/s |") {
		t.Errorf("report of lean-reader lacks the lean reader's throughput:\n%s", doc)
	}
}
