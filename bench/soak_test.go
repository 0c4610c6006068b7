package main

import (
	"strings"
	"testing"
	"time"
)

func TestParsePasses(t *testing.T) {
	t.Parallel()
	log := `time=2026-12-06T22:00:00.000Z level=INFO msg=listening addr=127.0.0.1:1
time=2026-12-06T22:01:02.500Z level=INFO msg="embedded broker compacted its topics" bytes_before=300000000 bytes_after=150000000 took=1.5s
time=2026-12-06T22:01:03.000Z level=WARN msg="something else" took=9s
time=2026-12-06T22:04:00.25Z level=INFO msg="embedded broker compacted its topics" bytes_before=460000000 bytes_after=160000000 took=750ms
`
	got, err := parsePasses([]byte(log))
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		x, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	want := []pass{
		{start: at("2026-12-06T22:01:01Z"), end: at("2026-12-06T22:01:02.5Z")},
		{start: at("2026-12-06T22:03:59.5Z"), end: at("2026-12-06T22:04:00.25Z")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d passes %v, want %v", len(got), got, want)
	}
	for i := range want {
		if !got[i].start.Equal(want[i].start) || !got[i].end.Equal(want[i].end) {
			t.Errorf("pass %d: got %v – %v, want %v – %v", i, got[i].start, got[i].end, want[i].start, want[i].end)
		}
	}
}

// A pass line the soak cannot read fails it rather than count the pass's
// records as outside compaction.
func TestParsePassesRefusesUnreadableLine(t *testing.T) {
	t.Parallel()
	_, err := parsePasses([]byte(`time=2026-12-06T22:01:02.500Z msg="embedded broker compacted its topics" bytes_after=1` + "\n"))
	if err == nil || !strings.Contains(err.Error(), "took=") {
		t.Fatalf("got %v, want an error asking for time= and took=", err)
	}
}

// Records are "during compaction" when they were in flight (committed,
// not yet received) at some moment of a pass, window ends included; the
// rest are outside.
func TestSoakSampleSplitsByPass(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC)
	passes := []pass{{start: t0.Add(10 * time.Second), end: t0.Add(12 * time.Second)}}
	var tr latencyTrace
	add := func(commit time.Duration, lat time.Duration) {
		tr.commit = append(tr.commit, t0.Add(commit))
		tr.lat = append(tr.lat, lat)
		tr.recv = append(tr.recv, t0.Add(commit+lat))
	}
	for i := range 100 {
		add(time.Duration(i)*10*time.Millisecond, time.Duration(i+1)*time.Millisecond) // outside: 1..100 ms
	}
	add(9*time.Second, 1000*time.Millisecond)  // committed before, received at the pass's start
	add(11*time.Second, 2000*time.Millisecond) // committed during it
	add(12*time.Second, 30*time.Millisecond)   // committed at its end
	add(13*time.Second, 5*time.Millisecond)    // after it: outside
	s := soakSample(tr, passes)
	for k, want := range map[string]float64{
		"rows": 104, "rows_during": 3, "passes": 1, "longest_pass_s": 2,
		"p99_during_ms": 2000, "max_during_ms": 2000,
		"p99_outside_ms": 99, "max_outside_ms": 100, // 101 outside (1..100 ms and 5 ms): the 100th smallest
		"p99_ms": 1000,
	} {
		if s[k] != want {
			t.Errorf("%s = %v, want %v (sample %v)", k, s[k], want, s)
		}
	}
	// The trace is left in its order (writeTrace reads it after).
	if tr.lat[101] != 2000*time.Millisecond {
		t.Errorf("soakSample reordered the trace")
	}
}

// Without a pass, nothing is "during": the report shows "–" for it rather
// than a zero latency.
func TestSoakSampleWithoutPasses(t *testing.T) {
	t.Parallel()
	tr := latencyTrace{commit: []time.Time{time.Now()}, lat: []time.Duration{time.Millisecond}, recv: []time.Time{time.Now()}}
	s := soakSample(tr, nil)
	if _, ok := s["p99_during_ms"]; ok {
		t.Errorf("p99 during compaction with no pass: %v", s)
	}
	if s["passes"] != 0 || s["p99_outside_ms"] != 1 {
		t.Errorf("got %v, want 0 passes and p99 outside 1 ms", s)
	}
}
