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
				nil, nil, // the reference rows (peek, source with changes dropped) failed
			}},
		{bench: &lat, workload: "10k rows/s", elapsed: time.Minute,
			ceiling:  []sample{{"p50_ms": 1.3, "p99_ms": 4.2, "max_ms": 20}, {"p50_ms": 1.2, "p99_ms": 4.1, "max_ms": 14}, {"p50_ms": 0.05, "p99_ms": 4.2, "max_ms": 24}},
			subjects: [][]sample{{{"p50_ms": 2.9, "p99_ms": 983, "max_ms": 2100}, {"p50_ms": 2.8, "p99_ms": 912, "max_ms": 2050}, {"p50_ms": 3, "p99_ms": 1236, "max_ms": 2270}}}},
	}
}

func TestWriteChart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "chart.png")
	if err := writeChart(path, entries(storedRun{}, fakeResults())); err != nil {
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
	if err := writeDoc(path, entries(newRun(m, options{runs: 3, scale: 0.1}), fakeResults()), "benchmarks.png", ""); err != nil {
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
	if err := writeDoc(path, entries(newRun(machine{cpus: 2}, options{runs: 3, scale: 1}), res), "", ""); err != nil {
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

// The stream benchmark's truer ceilings are reported beside the subjects,
// never judged, and the report says where the time goes, layer by layer,
// from the same runs; with -metrics it compares metrics on with off.
func TestStreamReferenceRowsAndBreakdown(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{runs: 2, scale: 1, metrics: true}}
	stream := streamBenchmark(h)
	names := make([]string, len(stream.subjects))
	for i, s := range stream.subjects {
		names[i] = s.name
	}
	want := []string{subjectEmbedded, subjectBrokerProcess, subjectPeek, subjectDrop, subjectMetricsOn}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Fatalf("stream subjects %q, want %q", names, want)
	}
	sec := func(s, r float64) sample { return sample{"seconds": s, "rows_per_s": r} }
	res := &result{bench: &stream, workload: "backlog", elapsed: time.Minute,
		ceiling: []sample{sec(4, 550), sec(6, 367)}, // bare reader
		subjects: [][]sample{
			{sec(10, 220), sec(11, 200)}, // embedded
			{sec(12, 183), sec(13, 169)}, // broker process
			{sec(1, 2200), sec(2, 1100)}, // peek
			{sec(5, 440), sec(8, 275)},   // source, dropped
			{sec(10, 198), sec(11, 190)}, // metrics on
		}}
	var b bytes.Buffer
	markdownTable(&b, res)
	doc := b.String()
	for _, wantLine := range []string{
		"| " + subjectPeek + " | the walsender's decoding of the WAL with pgoutput (no client, no network) | 1.50 s | – | 14 % |",
		"| bare reader | sending it over loopback, and a minimal client parsing and decoding it | 5.00 s | +3.50 s (+3.00 – +4.00) | 33 % |",
		"| " + subjectDrop + " | replicator's source instead of the minimal client (its parsing, decoding, checkpoint) | 6.50 s | +1.50 s (+1.00 – +2.00) | 14 % |",
		"| " + subjectEmbedded + " | mapping to Avro, producing to the broker and waiting for its acks | 10.50 s | +4.00 s (+3.00 – +5.00) | 38 % |",
		"- throughput, " + subjectMetricsOn + " ÷ " + subjectEmbedded + ", run by run: 0.93× (0.90× – 0.95×) over 2 run(s)",
	} {
		if !strings.Contains(doc, wantLine) {
			t.Errorf("report lacks %q:\n%s", wantLine, doc)
		}
	}
	// The reference rows are not judged: only the two replicator subjects
	// (and metrics on) carry the stream's target.
	var judged []string
	for _, tl := range targets([]*result{res}) {
		judged = append(judged, tl.subject)
	}
	if got := strings.Join(judged, "|"); got != subjectEmbedded+"|"+subjectBrokerProcess+"|"+subjectMetricsOn {
		t.Errorf("targets judged for %q, want the replicator subjects only", got)
	}
}

// Every breakdown layer and compared pair names a ceiling or subject of its
// benchmark, so that no report silently leaves its breakdown out.
func TestLayersAndPairsNameSubjects(t *testing.T) {
	t.Parallel()
	h := &harness{opts: options{runs: 3, scale: 1, metrics: true}}
	all := []benchmark{streamBenchmark(h), toastBenchmark(h), oneRowBenchmark(h), jsonbBenchmark(h), wideBenchmark(h), tablesBenchmark(h)}
	for i := range all {
		b := &all[i]
		r := &result{bench: b, subjects: make([][]sample, len(b.subjects))}
		if len(b.layers) == 0 {
			t.Errorf("%s: no breakdown of where the time goes", b.name)
		}
		for _, l := range b.layers {
			if _, ok := r.samples(l.subject); !ok {
				t.Errorf("%s: layer %q is no subject of it", b.name, l.subject)
			}
		}
		for _, p := range b.pairs {
			for _, n := range []string{p.a, p.b} {
				if _, ok := r.samples(n); !ok {
					t.Errorf("%s: pair names %q, no subject of it", b.name, n)
				}
			}
		}
	}
}
