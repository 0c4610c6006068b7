package main

import (
	"bytes"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colorSubject = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorCeiling = color.RGBA{R: 0xaa, G: 0xaa, B: 0xaa, A: 0xff}
	colorTarget  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// writeChart draws docs/benchmarks.png: the throughput ratios against
// their ceilings with their targets, and the latency percentiles of
// replicator and the bare reader. A panel without data is left out.
func writeChart(path string, es []storedEntry) error {
	var ratios []ratioBar
	var latencies []latencyBar
	for _, e := range es {
		ratios = append(ratios, e.Ratios...)
		latencies = append(latencies, e.Latencies...)
	}
	var plots []*plot.Plot
	if p, err := ratioPlot(ratios); err != nil {
		return err
	} else if p != nil {
		plots = append(plots, p)
	}
	if p, err := latencyPlot(latencies); err != nil {
		return err
	} else if p != nil {
		plots = append(plots, p)
	}
	if len(plots) == 0 {
		return nil
	}
	img := vgimg.New(vg.Points(float64(460*len(plots))), vg.Points(380))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	return writeFile(path, buf.Bytes())
}

// ratioPlot draws the bars: the median ratio to the ceiling, with the
// target marked.
func ratioPlot(bars []ratioBar) (*plot.Plot, error) {
	var vals plotter.Values
	var names []string
	var targets []float64
	for _, b := range bars {
		vals = append(vals, b.Ratio)
		names = append(names, b.Label)
		targets = append(targets, b.Target)
	}
	if len(vals) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "Throughput, replicator ÷ ceiling (median)"
	p.Y.Label.Text = "ratio to ceiling"
	p.Y.Min = 0
	p.Y.Max = 1.1
	for _, v := range vals {
		p.Y.Max = max(p.Y.Max, v*1.15)
	}
	bc, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	bc.Color = colorSubject
	bc.LineStyle.Width = 0
	p.Add(plotter.NewGrid(), bc)
	if err := addValueLabels(p, vals, 0, "%.2f×"); err != nil {
		return nil, err
	}
	for i, t := range targets {
		if t == 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: float64(i) - 0.35, Y: t}, {X: float64(i) + 0.35, Y: t}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = colorTarget, vg.Points(2)
		p.Add(l)
		if i == 0 || targets[i-1] == 0 {
			p.Legend.Add("target", l)
		}
	}
	p.NominalX(names...)
	p.Legend.Top = true
	return p, nil
}

// addValueLabels writes each value above its bar (bars centred on x = i,
// shifted by offset in data units).
func addValueLabels(p *plot.Plot, vals plotter.Values, offset float64, format string) error {
	xys := make(plotter.XYs, len(vals))
	texts := make([]string, len(vals))
	for i, v := range vals {
		xys[i] = plotter.XY{X: float64(i) + offset, Y: v}
		texts[i] = fmt.Sprintf(format, v)
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
	if err != nil {
		return err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].YAlign = draw.YBottom
		l.TextStyle[i].Font.Size = vg.Points(9)
	}
	p.Add(l)
	return nil
}

// latencyPlot groups p50/p99/max of every latency benchmark, replicator's
// median next to the bare reader's, with the targets marked.
func latencyPlot(bars []latencyBar) (*plot.Plot, error) {
	var subj, ceil plotter.Values
	var names []string
	var targets []float64
	for _, b := range bars {
		subj = append(subj, b.Subject)
		ceil = append(ceil, b.Ceiling)
		names = append(names, b.Label)
		targets = append(targets, b.Target)
	}
	if len(subj) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "Commit → receive latency (median of runs, log scale)"
	p.Y.Label.Text = "ms"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	const floor = 0.1 // ms: the bottom of the log axis
	top := floor
	for i := range subj {
		top = max(top, subj[i], ceil[i], targets[i])
	}
	p.Y.Min, p.Y.Max = floor, top*3
	p.Add(plotter.NewGrid())
	// Bars are thick vertical lines: a bar chart starts at 0, which a log
	// axis cannot show.
	const offset = 0.17
	for _, series := range []struct {
		vals   plotter.Values
		dx     float64
		color  color.Color
		legend string
	}{
		{subj, -offset, colorSubject, "replicator (consumer receive)"},
		{ceil, offset, colorCeiling, "bare reader (reference)"},
	} {
		for i, v := range series.vals {
			l, err := plotter.NewLine(plotter.XYs{{X: float64(i) + series.dx, Y: floor}, {X: float64(i) + series.dx, Y: max(v, floor)}})
			if err != nil {
				return nil, err
			}
			l.Color, l.Width = series.color, vg.Points(16)
			p.Add(l)
			if i == 0 {
				p.Legend.Add(series.legend, l)
			}
		}
		if err := addValueLabels(p, clampFloor(series.vals, floor), series.dx, "%.1f"); err != nil {
			return nil, err
		}
	}
	for i, t := range targets {
		if t == 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: float64(i) - 0.4, Y: t}, {X: float64(i) + 0.4, Y: t}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = colorTarget, vg.Points(2)
		p.Add(l)
		p.Legend.Add("target", l)
	}
	p.X.Min, p.X.Max = -0.6, float64(len(subj))-0.4
	p.NominalX(names...)
	p.Legend.Top = true
	p.Legend.Left = true
	return p, nil
}

func clampFloor(vals plotter.Values, floor float64) plotter.Values {
	out := make(plotter.Values, len(vals))
	for i, v := range vals {
		out[i] = max(v, floor)
	}
	return out
}

func zeroNaN(x float64) float64 {
	if x != x {
		return 0
	}
	return x
}
