package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/replicator/replicator/bench/stats"
)

// The report (docs/BENCHMARKS.md) and the chart are rendered from a store
// of results (docs/benchmarks.json), one entry per benchmark, each with the
// run that measured it. A run of some benchmarks replaces only their
// entries and keeps the others; a run of the default set (no names)
// replaces the whole store. An entry keeps its section as rendered when it
// was measured (markdown), its targets and chart bars, and its raw figures
// run by run, so that rendering needs neither the samples nor today's
// definition of a benchmark, and an entry seeded from an older report
// (which kept no samples) renders as before.

// storeVersion is the format of the store file; a file of another version
// is refused rather than misread.
const storeVersion = 1

// store is the content of docs/benchmarks.json.
type store struct {
	Version int           `json:"version"`
	About   string        `json:"about"`
	Results []storedEntry `json:"results"` // in the suite's order
}

// storedRun is one run of the suite: what a reader needs to tell the
// results of different runs apart.
type storedRun struct {
	Date       time.Time `json:"date"`
	Commit     string    `json:"commit"`  // replicator's source measured
	Command    string    `json:"command"` // as it can be pasted back
	Scale      float64   `json:"scale"`
	Runs       int       `json:"runs"`     // -runs
	RunsSet    bool      `json:"runs_set"` // -runs given: it applies to every benchmark
	LoadBefore string    `json:"load_before"`
	WallClock  string    `json:"wall_clock"` // of the whole run
	Note       string    `json:"note,omitempty"`
	// The machine.
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Memory    string `json:"memory"`
	OS        string `json:"os"`
	Postgres  string `json:"postgres"`
	GoVersion string `json:"go"`
}

// storedEntry is one benchmark's result as the report shows it.
type storedEntry struct {
	Name string    `json:"name"`
	Run  storedRun `json:"run"`
	// Section is the markdown under the benchmark's heading: what it
	// measures, the workload and the figures.
	Section   string         `json:"section"`
	Failed    string         `json:"failed,omitempty"` // the run's error
	Targets   []storedTarget `json:"targets,omitempty"`
	Ratios    []ratioBar     `json:"ratio_bars,omitempty"`
	Latencies []latencyBar   `json:"latency_bars,omitempty"`
	// The figures run by run, by metric key (non-finite ones left out);
	// none for an entry seeded from an older report.
	Ceiling  []sample            `json:"ceiling,omitempty"`
	Subjects map[string][]sample `json:"subjects,omitempty"`
}

// storedTarget is one target's outcome (see [targetLine]).
type storedTarget struct {
	Subject  string `json:"subject"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Outcome  string `json:"outcome"`
}

// ratioBar is one bar of the chart's ratio panel.
type ratioBar struct {
	Label  string  `json:"label"`
	Ratio  float64 `json:"ratio"`
	Target float64 `json:"target,omitempty"` // 0: none
}

// latencyBar is one group of the chart's latency panel (ms).
type latencyBar struct {
	Label   string  `json:"label"`
	Subject float64 `json:"subject"`
	Ceiling float64 `json:"ceiling"`
	Target  float64 `json:"target,omitempty"` // 0: none
}

const storeAbout = "Results of `go run ./bench` (bench/), from which docs/BENCHMARKS.md and docs/benchmarks.png are rendered: " +
	"one entry per benchmark, from the run that last measured it. Rerun the benchmarks rather than edit this file."

// newRun describes the run that produced this suite's results.
func newRun(m machine, opts options) storedRun {
	return storedRun{
		Date: m.date, Commit: m.commit, Command: m.command, Scale: opts.scale, Runs: opts.runs, RunsSet: opts.runsSet,
		LoadBefore: m.loadBefore, WallClock: m.suiteTotal.Round(time.Second).String(), Note: opts.note,
		CPUs: m.cpus, CPUModel: m.cpuModel, Memory: m.memory, OS: m.kernel, Postgres: m.postgres, GoVersion: m.goVersion,
	}
}

// entries renders results as store entries of run.
func entries(run storedRun, results []*result) []storedEntry {
	out := make([]storedEntry, 0, len(results))
	for _, r := range results {
		var sec bytes.Buffer
		fmt.Fprintf(&sec, "%s\n\n", r.bench.about)
		fmt.Fprintf(&sec, "Workload: %s. %d run(s); the benchmark took %s.\n\n", r.workload, r.runs(), r.elapsed.Round(time.Second))
		markdownTable(&sec, r)
		e := storedEntry{Name: r.bench.name, Run: run, Section: strings.TrimSpace(sec.String()),
			Ratios: ratioBars(r), Latencies: latencyBars(r), Ceiling: finite(r.ceiling)}
		if r.err != nil {
			e.Failed = oneLine(r.err.Error())
		}
		for _, t := range targets([]*result{r}) {
			e.Targets = append(e.Targets, storedTarget{Subject: t.subject, Target: t.target, Measured: t.measured, Outcome: t.outcome})
		}
		for i, s := range r.bench.subjects {
			if len(r.subjects[i]) > 0 {
				if e.Subjects == nil {
					e.Subjects = map[string][]sample{}
				}
				e.Subjects[s.name] = finite(r.subjects[i])
			}
		}
		out = append(out, e)
	}
	return out
}

// finite copies samples without their NaN and infinite figures, which
// JSON cannot hold (a missing figure reads back as NaN, see [values]).
func finite(samples []sample) []sample {
	if samples == nil {
		return nil
	}
	out := make([]sample, len(samples))
	for i, s := range samples {
		out[i] = sample{}
		for k, x := range s {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				out[i][k] = x
			}
		}
	}
	return out
}

// merge returns old with fresh's entries in place of old's of the same
// name, every other entry of old kept, ordered as order (the suite's
// benchmarks; names no longer in it go last, as they were). full replaces
// old entirely: a run of the default set.
func merge(old, fresh []storedEntry, full bool, order []string) []storedEntry {
	byName := map[string]storedEntry{}
	var names []string
	add := func(e storedEntry) {
		if _, ok := byName[e.Name]; !ok {
			names = append(names, e.Name)
		}
		byName[e.Name] = e
	}
	if !full {
		for _, e := range old {
			add(e)
		}
	}
	for _, e := range fresh {
		add(e)
	}
	rank := func(n string) int {
		if i := slices.Index(order, n); i >= 0 {
			return i
		}
		return len(order) + slices.Index(names, n)
	}
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	out := make([]storedEntry, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out
}

// readStore reads the store at path; errNoStore when there is none.
func readStore(path string) (*store, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoStore
	}
	if err != nil {
		return nil, err
	}
	var st store
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if st.Version != storeVersion {
		return nil, fmt.Errorf("read %s: version %d, want %d", path, st.Version, storeVersion)
	}
	return &st, nil
}

// errNoStore is returned by readStore when the file does not exist yet.
var errNoStore = errors.New("no results file")

func writeStore(path string, st *store) error {
	st.Version, st.About = storeVersion, storeAbout
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	return writeFile(path, append(b, '\n'))
}

// seedStore reads back a report written before the store existed (doc, the
// markdown), so that its sections survive the first partial run: each
// section verbatim, the targets, failures, the run from the header table,
// and the chart's bars from the figures of the benchmarks defs still has.
func seedStore(doc string, defs []benchmark) (*store, error) {
	lines := strings.Split(doc, "\n")
	header := map[string]string{}
	i := 0
	for ; i < len(lines) && lines[i] != "## Targets"; i++ {
		if k, v, ok := tableCells2(lines[i]); ok {
			header[k] = v
		}
	}
	if i == len(lines) || header["date"] == "" {
		return nil, errors.New("no header table followed by ## Targets")
	}
	date, err := time.Parse("2006-01-02 15:04 MST", header["date"])
	if err != nil {
		return nil, fmt.Errorf("header date: %w", err)
	}
	run := storedRun{Date: date, Commit: header["replicator"], Command: strings.Trim(header["command"], "`"),
		LoadBefore: strings.TrimSpace(strings.Split(header["load average before"], "(")[0]),
		WallClock:  strings.TrimSuffix(header["wall clock"], " for the whole suite"), Memory: header["memory"],
		OS: header["OS"], GoVersion: header["Go"], Postgres: strings.Split(header["PostgreSQL"], " (throwaway")[0]}
	if n, model, ok := strings.Cut(header["CPUs (nproc)"], " × "); ok {
		run.CPUs, _ = strconv.Atoi(n)
		run.CPUModel = model
	}
	if run.Scale, err = strconv.ParseFloat(strings.Fields(header["scale"] + " x")[0], 64); err != nil {
		return nil, fmt.Errorf("header scale: %w", err)
	}
	if run.Runs, err = strconv.Atoi(strings.Fields(header["runs"] + " x")[0]); err != nil {
		return nil, fmt.Errorf("header runs: %w", err)
	}
	run.RunsSet = !strings.Contains(header["runs"], "more where")

	tgts := map[string][]storedTarget{}
	failed := map[string]string{}
	for i++; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
		c := tableCells(lines[i])
		if len(c) == 5 && c[0] != "benchmark" && c[0] != "---" {
			tgts[c[0]] = append(tgts[c[0]], storedTarget{Subject: c[1], Target: c[2], Measured: c[3], Outcome: c[4]})
		}
		if name, rest, ok := strings.Cut(strings.TrimPrefix(lines[i], "**"), " failed:** `"); ok && strings.HasPrefix(lines[i], "**") {
			failed[name] = strings.TrimSuffix(rest, "`")
		}
	}
	end := strings.SplitN(strings.TrimSpace(analysis), "\n", 2)[0]
	st := &store{}
	for i < len(lines) {
		name, ok := strings.CutPrefix(lines[i], "## ")
		if !ok {
			i++
			continue
		}
		if lines[i] == end || strings.ContainsAny(name, " \t") { // benchmark names are one word
			break
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "## ") {
			j++
		}
		body := strings.TrimSpace(strings.Join(lines[i+1:j], "\n"))
		if strings.HasPrefix(body, "_Measured by the run of ") { // rendered from a store: it is added again
			_, body, _ = strings.Cut(body, "\n")
			body = strings.TrimSpace(body)
		}
		e := storedEntry{Name: name, Run: run, Section: body,
			Targets: tgts[name], Failed: failed[name]}
		for k := range defs {
			if defs[k].name == name {
				e.Ratios, e.Latencies = seededBars(&defs[k], lines[i+1:j])
			}
		}
		st.Results = append(st.Results, e)
		i = j
	}
	if len(st.Results) == 0 {
		return nil, errors.New("no benchmark sections")
	}
	return st, nil
}

// seededBars recovers a benchmark's chart bars from the figures table of
// its section (median column for latencies, ratio column for ratios).
func seededBars(b *benchmark, section []string) ([]ratioBar, []latencyBar) {
	type key struct{ metric, measured string }
	rows := map[key][]string{}
	label := ""
	for _, l := range section {
		c := tableCells(l)
		if len(c) != 8 || c[0] == "metric" || strings.HasPrefix(c[0], "---") {
			continue
		}
		if c[0] != "" {
			label = c[0]
		}
		if _, seen := rows[key{label, c[1]}]; !seen {
			rows[key{label, c[1]}] = c
		}
	}
	lead := func(s string) float64 {
		f := strings.Fields(strings.ReplaceAll(strings.ReplaceAll(s, ",", ""), "×", " "))
		if len(f) == 0 {
			return math.NaN()
		}
		x, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return math.NaN()
		}
		return x
	}
	r := &result{bench: b}
	ratio := func(subj int, m metric) float64 {
		if c, ok := rows[key{m.label, b.subjects[subj].name}]; ok {
			return lead(c[5])
		}
		return math.NaN()
	}
	median := func(subj int, m metric) float64 {
		name := b.ceiling.name + " (ceiling)"
		if subj >= 0 {
			name = b.subjects[subj].name
		}
		if c, ok := rows[key{m.label, name}]; ok {
			return lead(c[2])
		}
		return math.NaN()
	}
	return r.ratioBarsOf(ratio), r.latencyBarsOf(median)
}

// tableCells splits a markdown table row into its trimmed cells; nil for
// any other line.
func tableCells(line string) []string {
	if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") || len(line) < 2 {
		return nil
	}
	c := strings.Split(line[1:len(line)-1], " | ")
	for i := range c {
		c[i] = strings.TrimSpace(c[i])
	}
	return c
}

// tableCells2 returns the two cells of a two-column table row.
func tableCells2(line string) (string, string, bool) {
	c := tableCells(line)
	if len(c) != 2 {
		return "", "", false
	}
	return c[0], c[1], true
}

// ratioBars are r's bars in the chart's ratio panel.
func ratioBars(r *result) []ratioBar {
	return r.ratioBarsOf(func(subj int, m metric) float64 {
		s := stats.Summarize(r.ratios(subj, m.key))
		if s.N == 0 {
			return math.NaN()
		}
		return s.Median
	})
}

// ratioBarsOf has one bar per subject of every chartRatio metric, the
// median ratio to the ceiling given by ratio (NaN: none), with its target.
func (r *result) ratioBarsOf(ratio func(subj int, m metric) float64) []ratioBar {
	var out []ratioBar
	for _, m := range r.bench.metrics {
		if m.chart != chartRatio {
			continue
		}
		for i, s := range r.bench.subjects {
			if s.reference {
				continue
			}
			x := ratio(i, m)
			if math.IsNaN(x) {
				continue
			}
			bar := ratioBar{Label: r.bench.name + "\n" + strings.TrimPrefix(s.name, "replicator, "), Ratio: x}
			if m.target != nil && m.target.ofRatio && (m.target.subject == "" || m.target.subject == s.name) {
				bar.Target = m.target.value
			}
			out = append(out, bar)
		}
	}
	return out
}

// latencyBars are r's groups in the chart's latency panel.
func latencyBars(r *result) []latencyBar {
	return r.latencyBarsOf(func(subj int, m metric) float64 {
		xs := values(r.ceiling, m.key)
		if subj >= 0 {
			xs = values(r.subjects[subj], m.key)
		}
		s := stats.Summarize(xs)
		if s.N == 0 {
			return math.NaN()
		}
		return s.Median
	})
}

// latencyBarsOf has one group per chartLatency metric: the first
// subject's and the ceiling's (subj -1) medians given by median (NaN:
// none), with the target.
func (r *result) latencyBarsOf(median func(subj int, m metric) float64) []latencyBar {
	if len(r.bench.subjects) == 0 {
		return nil
	}
	var out []latencyBar
	for _, m := range r.bench.metrics {
		if m.chart != chartLatency {
			continue
		}
		s, c := median(0, m), median(-1, m)
		if math.IsNaN(s) && math.IsNaN(c) {
			continue
		}
		name := r.bench.chartName
		if name == "" {
			name = strings.TrimPrefix(r.bench.name, "latency-") + " rows/s"
		}
		bar := latencyBar{Label: name + "\n" + strings.TrimPrefix(m.label, "latency "), Subject: zeroNaN(s), Ceiling: zeroNaN(c)}
		if m.target != nil && !m.target.ofRatio {
			bar.Target = m.target.value
		}
		out = append(out, bar)
	}
	return out
}
