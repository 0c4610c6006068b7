// Package stats summarises benchmark measurements: the median and spread of
// repeated runs, and percentiles of latency samples. Pure functions, no I/O.
package stats

import (
	"math"
	"slices"
	"time"
)

// Summary is the median and range of repeated measurements of one figure.
type Summary struct {
	N      int
	Median float64
	Min    float64
	Max    float64
}

// Summarize returns the median and range of xs, ignoring NaNs (a run that
// did not produce the figure). With no values every field but N is NaN.
func Summarize(xs []float64) Summary {
	vs := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			vs = append(vs, x)
		}
	}
	if len(vs) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(vs)
	return Summary{N: len(vs), Median: median(vs), Min: vs[0], Max: vs[len(vs)-1]}
}

// median of sorted, non-empty vs: the middle value, or the mean of the two
// middle values.
func median(vs []float64) float64 {
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// Spread is (max − min) / median: the relative width of the range.
func (s Summary) Spread() float64 {
	if s.N == 0 || s.Median == 0 {
		return math.NaN()
	}
	return (s.Max - s.Min) / math.Abs(s.Median)
}

// Latencies is a summary of latency samples.
type Latencies struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// SummarizeLatencies sorts ds in place and returns its percentiles, by the
// nearest-rank method (p99 of 100 samples is the 99th smallest).
func SummarizeLatencies(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	slices.Sort(ds)
	return Latencies{Count: len(ds), P50: Percentile(ds, 50), P99: Percentile(ds, 99), Max: ds[len(ds)-1]}
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted, non-empty
// ds by the nearest-rank method.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
