package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func entryNames(es []storedEntry) string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name+"@"+e.Run.Commit)
	}
	return strings.Join(out, " ")
}

// A partial run replaces the entries it ran and keeps every other one; a
// full run replaces them all.
func TestMerge(t *testing.T) {
	t.Parallel()
	order := []string{"stream", "latency-1k", "snapshot", "republish"}
	at := func(name, commit string) storedEntry { return storedEntry{Name: name, Run: storedRun{Commit: commit}} }
	old := []storedEntry{at("stream", "old"), at("latency-1k", "old"), at("snapshot", "old"), at("retired", "old")}
	tests := []struct {
		name  string
		fresh []storedEntry
		full  bool
		want  string
	}{
		{"one replaced", []storedEntry{at("latency-1k", "new")}, false,
			"stream@old latency-1k@new snapshot@old retired@old"},
		{"new one in the suite's order", []storedEntry{at("republish", "new"), at("stream", "new")}, false,
			"stream@new latency-1k@old snapshot@old republish@new retired@old"},
		{"full run replaces all", []storedEntry{at("stream", "new"), at("snapshot", "new")}, true,
			"stream@new snapshot@new"},
		{"nothing run", nil, false, "stream@old latency-1k@old snapshot@old retired@old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := entryNames(merge(old, tt.fresh, tt.full, order)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// The report committed before the results file existed reads back whole:
// every section verbatim, its targets, its run, and the chart's bars.
func TestSeedStoreFromReport(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/BENCHMARKS-7c2bcfb.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	h := &harness{opts: options{runs: 3, scale: 1, duration: 10 * time.Second}}
	st, err := seedStore(doc, allBenchmarks(h))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := entryNames(st.Results), "stream@7c2bcfb latency-1k@7c2bcfb latency-10k@7c2bcfb large-txn@7c2bcfb snapshot@7c2bcfb"; got != want {
		t.Fatalf("entries: got %s, want %s", got, want)
	}
	r := st.Results[0].Run
	if r.Date != time.Date(2026, 11, 26, 15, 28, 0, 0, time.UTC) || r.Scale != 1 || r.Runs != 3 || r.RunsSet || r.LoadBefore != "1.59 1.49 1.42" || r.Command != "go run ./bench" {
		t.Errorf("run: got %+v", r)
	}
	var nTargets, nRatios, nLatencies int
	for _, e := range st.Results {
		if !strings.Contains(doc, "## "+e.Name+"\n\n"+e.Section+"\n\n") {
			t.Errorf("%s: section not verbatim:\n%s", e.Name, e.Section)
		}
		nTargets += len(e.Targets)
		nRatios += len(e.Ratios)
		nLatencies += len(e.Latencies)
	}
	if nTargets != 5 || nRatios != 3 || nLatencies != 6 {
		t.Errorf("got %d targets, %d ratio bars, %d latency bars; want 5, 3, 6", nTargets, nRatios, nLatencies)
	}
	if got, want := st.Results[0].Ratios[1], (ratioBar{Label: "stream\nbroker process", Ratio: 0.93, Target: 0.9}); got != want {
		t.Errorf("stream's second bar: got %+v, want %+v", got, want)
	}
	if got, want := st.Results[2].Latencies[1], (latencyBar{Label: "10k rows/s\np99", Subject: 6.5, Ceiling: 4.2, Target: 50}); got.Label != want.Label || got.Subject != want.Subject || got.Target != want.Target {
		t.Errorf("latency-10k p99: got %+v, want %+v", got, want)
	}
	if _, err := seedStore("# Benchmarks\n\nsomething else\n", nil); err == nil {
		t.Error("a document of another shape: got no error, want one")
	}
}

// A partial run against the report of before: the first merge seeds from
// the report, the results file keeps it, and a second partial run keeps
// the first one's section as well as the report's.
func TestMergeResultsKeepsOtherRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old, err := os.ReadFile("testdata/BENCHMARKS-7c2bcfb.md")
	if err != nil {
		t.Fatal(err)
	}
	doc, results := filepath.Join(dir, "BENCHMARKS.md"), filepath.Join(dir, "benchmarks.json")
	if err := os.WriteFile(doc, old, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &harness{opts: options{runs: 3, scale: 0.1, duration: 10 * time.Second}}
	all := allBenchmarks(h)
	fr := fakeResults() // stream and latency-10k at scale 0.1
	var stderr strings.Builder
	run1 := newRun(machine{date: time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC), commit: "aaaaaaa", command: "go run ./bench latency-10k"},
		options{runs: 3, scale: 0.1, names: []string{"latency-10k"}})
	es, err := mergeResults(results, doc, options{names: []string{"latency-10k"}}, all, entries(run1, fr[1:]), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(doc, es, "", "benchmarks.json"); err != nil {
		t.Fatal(err)
	}
	run2 := newRun(machine{date: time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC), commit: "bbbbbbb", command: "go run ./bench -runs 3 stream"},
		options{runs: 3, runsSet: true, scale: 0.1, names: []string{"stream"}})
	if es, err = mergeResults(results, doc, options{names: []string{"stream"}}, all, entries(run2, fr[:1]), &stderr); err != nil {
		t.Fatal(err)
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
	if got, want := entryNames(es), "stream@bbbbbbb latency-1k@7c2bcfb latency-10k@aaaaaaa large-txn@7c2bcfb snapshot@7c2bcfb"; got != want {
		t.Fatalf("entries: got %s, want %s", got, want)
	}
	if err := writeDoc(doc, es, "benchmarks.png", "benchmarks.json"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	oldDoc := string(old)
	largeTxn := oldDoc[strings.Index(oldDoc, "## large-txn\n")+len("## large-txn\n\n") : strings.Index(oldDoc, "## snapshot\n")]
	for _, want := range []string{
		"## large-txn\n\n_Measured by the run of 2026-11-26 15:28 UTC: replicator 7c2bcfb, scale 1, runs 3 by default, load average before 1.59 1.49 1.42 (`go run ./bench`)._\n\n" + largeTxn,
		"## latency-10k\n\n_Measured by the run of 2026-12-07 04:00 UTC: replicator aaaaaaa, scale 0.1, runs 3 by default, load",
		"## stream\n\n_Measured by the run of 2026-12-07 05:00 UTC: replicator bbbbbbb, scale 0.1, -runs 3, load",
		"| 2026-11-26 15:28 UTC | 7c2bcfb | `go run ./bench` | 1 | 3 | 1.59 1.49 1.42 | latency-1k, large-txn, snapshot |",
		"| stream | replicator, embedded broker | ≥ 0.9× bare reader | 0.67× (0.65× – 0.70×) of bare reader | **MISS** |",
		"| snapshot | replicator, embedded broker | ≥ 0.8× COPY | 0.98× (0.94× – 0.98×) of COPY TO STDOUT | met |",
		"| latency-10k | replicator, embedded broker | p99 ≤ 50 ms at 10k rows/s | 983.0 ms (912.0 – 1236.0) | **MISS** |",
		"**Scaled runs: these are not full-scale figures:** stream (`-scale 0.1`), latency-10k (`-scale 0.1`).",
		"The figures are kept in benchmarks.json, from which",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| latency-10k | replicator, embedded broker | p99 ≤ 50 ms at 10k rows/s | 6.5 ms") {
		t.Error("report keeps the replaced latency-10k target")
	}
	if err := writeChart(filepath.Join(dir, "benchmarks.png"), es); err != nil {
		t.Fatal(err)
	}
}

// A report that cannot be read back is said so, and only this run's
// sections remain; a results file of another version is refused.
func TestMergeResultsUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	doc, results := filepath.Join(dir, "BENCHMARKS.md"), filepath.Join(dir, "benchmarks.json")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	fresh := []storedEntry{{Name: "snapshot", Run: storedRun{Commit: "new"}}}
	es, err := mergeResults(results, doc, options{names: []string{"snapshot"}}, nil, fresh, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got := entryNames(es); got != "snapshot@new" {
		t.Errorf("entries: got %s, want snapshot@new", got)
	}
	if !strings.Contains(stderr.String(), "could not read back") {
		t.Errorf("stderr: got %q, want it to say the report could not be read back", stderr.String())
	}
	if err := os.WriteFile(results, []byte(`{"version": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := mergeResults(results, doc, options{names: []string{"snapshot"}}, nil, fresh, &stderr); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("version 99: got %v, want an error naming it", err)
	}
}
