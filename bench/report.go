package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/replicator/replicator/bench/stats"
)

// formatValue renders x in unit.
func formatValue(x float64, unit string) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	switch unit {
	case "rows/s", "tx/s", "rows", "segments":
		return thousands(int64(math.Round(x))) + " " + unit
	case "s":
		return fmt.Sprintf("%.2f s", x)
	case "ms":
		return fmt.Sprintf("%.1f ms", x)
	case "µs":
		return fmt.Sprintf("%.2f µs", x)
	case "MB":
		return fmt.Sprintf("%.0f MB", x)
	case "%":
		if x < 10 {
			return fmt.Sprintf("%.1f %%", x)
		}
		return fmt.Sprintf("%.0f %%", x)
	}
	return fmt.Sprintf("%.3g %s", x, unit)
}

// formatNumber renders x in unit without the unit, for ranges.
func formatNumber(x float64, unit string) string {
	s := formatValue(x, unit)
	return strings.TrimSpace(strings.TrimSuffix(s, unit))
}

func formatRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

// row is one line of a result table: one metric of one subject.
type row struct {
	metric, measured       string
	median, span, spread   string
	ratio, target, outcome string
}

// rows renders r's figures: per metric, the ceiling and then each subject.
func (r *result) rows() []row {
	var out []row
	for _, m := range r.bench.metrics {
		first := true
		add := func(who string, samples []sample, subj int) {
			xs := values(samples, m.key)
			s := stats.Summarize(xs)
			if s.N == 0 {
				return
			}
			rw := row{measured: who, median: formatValue(s.Median, m.unit),
				span:   fmt.Sprintf("%s – %s", formatNumber(s.Min, m.unit), formatNumber(s.Max, m.unit)),
				spread: fmt.Sprintf("%.0f %%", 100*s.Spread())}
			if s.N == 1 {
				rw.span, rw.spread = "", ""
			}
			if first {
				rw.metric = m.label
				first = false
			}
			if subj >= 0 {
				if m.ratio {
					rs := stats.Summarize(r.ratios(subj, m.key))
					if rs.N > 0 {
						rw.ratio = fmt.Sprintf("%s (%s – %s)", formatRatio(rs.Median), formatRatio(rs.Min), formatRatio(rs.Max))
					}
				}
				if v, ok := r.check(m, subj); ok {
					rw.target = m.target.text
					rw.outcome = "MISS"
					if v.met {
						rw.outcome = "pass"
					}
					if v.summary.N == 0 {
						rw.outcome = "no data"
					}
				}
			}
			out = append(out, rw)
		}
		add(r.bench.ceiling.name+" (ceiling)", r.ceiling, -1)
		for i, s := range r.bench.subjects {
			add(s.name, r.subjects[i], i)
		}
	}
	return out
}

// header returns the one-line description of a result.
func (r *result) header() string {
	runs := r.runs()
	return fmt.Sprintf("%s: %s; %d run(s), %s", r.bench.name, r.workload, runs, r.elapsed.Round(time.Second))
}

// printResult writes r as an aligned table.
func printResult(w io.Writer, r *result) {
	fmt.Fprintf(w, "\n== %s\n", r.header())
	if r.err != nil {
		fmt.Fprintf(w, "FAILED: %v\n", r.err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tmeasured\tmedian\tmin – max\tspread\tratio to ceiling (min – max)\ttarget\tresult")
	for _, rw := range r.rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rw.metric, rw.measured, rw.median, rw.span, rw.spread, rw.ratio, rw.target, rw.outcome)
	}
	tw.Flush()
	for _, l := range r.extraLines() {
		fmt.Fprintln(w, l)
	}
}

// layerRow is one line of a breakdown of where the time goes.
type layerRow struct {
	subject, adds string
	time          string // median seconds of the layer
	added         string // median (min – max) of the run-by-run difference with the layer before
	share         string // of the last layer's median time
}

// layerRows renders r's breakdown (benchmark.layers): each layer's median
// time, and what it adds over the layer before, run by run. Nil when the
// benchmark has none, or some layer has no figures (a failed run).
func (r *result) layerRows() []layerRow {
	ls := r.bench.layers
	if len(ls) == 0 {
		return nil
	}
	secs := make([][]float64, len(ls))
	for i, l := range ls {
		smp, ok := r.samples(l.subject)
		if !ok {
			return nil
		}
		secs[i] = values(smp, "seconds")
		if stats.Summarize(secs[i]).N == 0 {
			return nil
		}
	}
	total := stats.Summarize(secs[len(ls)-1]).Median
	out := make([]layerRow, len(ls))
	for i, l := range ls {
		med := stats.Summarize(secs[i]).Median
		out[i] = layerRow{subject: l.subject, adds: l.adds, time: formatValue(med, "s"), added: "–", share: "–"}
		if i == 0 {
			out[i].share = fmt.Sprintf("%.0f %%", 100*med/total)
			continue
		}
		n := min(len(secs[i]), len(secs[i-1]))
		diff := make([]float64, n)
		for k := range n {
			diff[k] = secs[i][k] - secs[i-1][k]
		}
		d := stats.Summarize(diff)
		if d.N == 0 {
			continue
		}
		out[i].added = fmt.Sprintf("%+.2f s (%+.2f – %+.2f)", d.Median, d.Min, d.Max)
		out[i].share = fmt.Sprintf("%.0f %%", 100*d.Median/total)
	}
	return out
}

// pairLines renders r's pairs: a ÷ b run by run, median (min – max).
func (r *result) pairLines() []string {
	var out []string
	for _, p := range r.bench.pairs {
		a, okA := r.samples(p.a)
		b, okB := r.samples(p.b)
		if !okA || !okB {
			continue
		}
		xa, xb := values(a, p.key), values(b, p.key)
		n := min(len(xa), len(xb))
		xs := make([]float64, n)
		for i := range n {
			xs[i] = xa[i] / xb[i]
		}
		s := stats.Summarize(xs)
		if s.N == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s, %s ÷ %s, run by run: %s (%s – %s) over %d run(s)",
			p.label, p.a, p.b, formatRatio(s.Median), formatRatio(s.Min), formatRatio(s.Max), s.N))
	}
	return out
}

// extraLines are the breakdown and the pairs as plain text, after the
// table printed on the terminal.
func (r *result) extraLines() []string {
	var out []string
	if rows := r.layerRows(); rows != nil {
		out = append(out, "where the time goes (median time; added over the layer before, run by run; share of the last layer's time):")
		for _, l := range rows {
			out = append(out, fmt.Sprintf("  %s: %s, added %s, %s", l.subject, l.time, l.added, l.share))
		}
	}
	return append(out, r.pairLines()...)
}

// targetLine is one target's outcome, for the summary.
type targetLine struct {
	bench, subject, target, measured, outcome string
}

// targets lists every target of every result.
func targets(results []*result) []targetLine {
	var out []targetLine
	for _, r := range results {
		for _, m := range r.bench.metrics {
			for i, s := range r.bench.subjects {
				v, ok := r.check(m, i)
				if !ok {
					continue
				}
				tl := targetLine{bench: r.bench.name, subject: s.name, target: m.target.text, outcome: "**MISS**"}
				if v.met {
					tl.outcome = "met"
				}
				switch {
				case v.summary.N == 0:
					tl.measured, tl.outcome = "no data (failed)", "**not measured**"
				case m.target.ofRatio:
					tl.measured = fmt.Sprintf("%s (%s – %s) of %s", formatRatio(v.summary.Median), formatRatio(v.summary.Min), formatRatio(v.summary.Max), r.bench.ceiling.name)
				default:
					tl.measured = fmt.Sprintf("%s (%s – %s)", formatValue(v.summary.Median, m.unit), formatNumber(v.summary.Min, m.unit), formatNumber(v.summary.Max, m.unit))
				}
				out = append(out, tl)
			}
		}
	}
	return out
}

// markdownTable writes r's figures as a markdown table.
func markdownTable(w io.Writer, r *result) {
	fmt.Fprintln(w, "| metric | measured | median | min – max | spread | ratio to ceiling (min – max) | target | result |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
	for _, rw := range r.rows() {
		outcome := rw.outcome
		if outcome == "MISS" {
			outcome = "**MISS**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.metric, rw.measured, rw.median, rw.span, rw.spread, rw.ratio, rw.target, outcome)
	}
	if rows := r.layerRows(); rows != nil {
		fmt.Fprint(w, "\nWhere the time goes: each row stops one stage later on the same backlog; \"added\" is its time minus the row above's, run by run "+
			"(median, min – max), and its share of the last row's median time; a negative one means that row was faster than the one above "+
			"(the bare reader is a deliberately plain client, bench/barereader).\n\n")
		fmt.Fprintln(w, "| stops after | what it adds | time (median) | added | share |")
		fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: |")
		for _, l := range rows {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", l.subject, l.adds, l.time, l.added, l.share)
		}
	}
	if ps := r.pairLines(); len(ps) > 0 {
		fmt.Fprintln(w)
		for _, p := range ps {
			fmt.Fprintf(w, "- %s\n", p)
		}
	}
}
