package stats

import (
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"odd", []float64{3, 1, 2}, Summary{N: 3, Median: 2, Min: 1, Max: 3}},
		{"even", []float64{4, 1, 2, 3}, Summary{N: 4, Median: 2.5, Min: 1, Max: 4}},
		{"one", []float64{7}, Summary{N: 1, Median: 7, Min: 7, Max: 7}},
		{"nan ignored", []float64{math.NaN(), 5, 1}, Summary{N: 2, Median: 3, Min: 1, Max: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Summarize(tt.in); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSummarizeEmpty(t *testing.T) {
	t.Parallel()
	got := Summarize([]float64{math.NaN()})
	if got.N != 0 || !math.IsNaN(got.Median) || !math.IsNaN(got.Spread()) {
		t.Errorf("got %+v, want N 0 and NaN figures", got)
	}
}

func TestSpread(t *testing.T) {
	t.Parallel()
	if got := (Summary{N: 3, Median: 100, Min: 90, Max: 110}).Spread(); got != 0.2 {
		t.Errorf("got %v, want 0.2", got)
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond // 100ms … 1ms, unsorted
	}
	got := SummarizeLatencies(ds)
	want := Latencies{Count: 100, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := SummarizeLatencies(nil); got != (Latencies{}) {
		t.Errorf("empty: got %+v, want zero", got)
	}
	if got := Percentile([]time.Duration{5}, 99); got != 5 {
		t.Errorf("one sample: got %v, want 5ns", got)
	}
}
