package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/replicator/replicator/bench/stats"
	"github.com/replicator/replicator/broker"
)

// soakBench is the fixture of the soak: a steady load for long enough that
// the broker's topic passes its compaction threshold, so that compaction
// passes happen during a timed run (issue 14).
type soakBench struct {
	latencyBench
	minDirty int64 // the broker's compaction threshold
	// embedded runs replicator with its embedded broker (the default
	// threshold: replicator has no setting for it) instead of the broker
	// process.
	embedded bool
}

// soakMinDuration is the shortest run the issue calls a soak.
const soakMinDuration = 10 * time.Minute

func soakBenchmark(h *harness) benchmark {
	s := &soakBench{latencyBench: latencyBench{h: h, rate: h.opts.soakRate, duration: h.opts.soak}, minDirty: h.opts.soakMinDirty,
		embedded: h.opts.soakEmbedded}
	subj := subjectBrokerProcess
	if s.embedded {
		subj = subjectEmbedded
	}
	return benchmark{
		name:     "soak",
		optional: true,
		onlyRuns: 1,
		about: "A steady load (one transaction every 10 ms: half inserts, half updates of the rows inserted by the previous " +
			"transaction, as in `latency`) for the soak's duration (`-soak`, default 10 min), at `-soak-rate` rows/s, streamed by " +
			"`replicator run` into the embedded broker's code run as its own process (`bench/cmd/kfakeserver`, " +
			"`broker.StartEmbedded` with the data on disk), so that the broker's peak RSS is its own; with `-soak-embedded`, into " +
			"replicator's embedded broker (default threshold only; the broker's RSS is then replicator's). " +
			"The topic grows past the broker's compaction threshold (`-soak-min-dirty`, default " +
			"`broker.DefaultCompactionMinDirtyBytes`; the workload line says which was used), so compaction passes run while " +
			"the load is timed. Each pass's window is read from the broker's `compacted its topics` log line (its end time and " +
			"`took`). A record's latency is measured as in `latency` (consumer receive time minus `commit_ts`: an upper bound of " +
			"commit→broker ack); records in flight (committed, not yet received) at any moment of a pass are \"during compaction " +
			"passes\", the rest \"outside them\". No ceiling: the figures are absolute. Not in `make bench` (one run takes the soak's duration, ten " +
			"minutes and more): run it alone with `go run ./bench soak`.",
		setup:    s.setup,
		ceiling:  subject{name: "none"},
		subjects: []subject{{name: subj, run: s.replicator}},
		metrics: []metric{
			{key: "p99_during_ms", label: "latency p99, during compaction passes", unit: "ms"},
			{key: "p99_outside_ms", label: "latency p99, outside them", unit: "ms"},
			{key: "max_during_ms", label: "latency max, during passes", unit: "ms"},
			{key: "max_outside_ms", label: "latency max, outside them", unit: "ms"},
			{key: "p99_ms", label: "latency p99, all", unit: "ms"},
			{key: "rows_during", label: "rows in flight during passes", unit: "rows"},
			{key: "passes", label: "compaction passes", unit: "passes"},
			{key: "longest_pass_s", label: "longest pass", unit: "s"},
			{key: "broker_rss_mb", label: "broker process peak RSS", unit: "MB"},
			{key: "reader_rss_mb", label: "replicator peak RSS (embedded broker included, when embedded)", unit: "MB"},
			{key: "topic_mb", label: "broker data on disk at the end", unit: "MB"},
			{key: "rows", label: "rows measured", unit: "rows"},
			{key: "rate", label: "load achieved", unit: "rows/s"},
		},
	}
}

func (s *soakBench) setup(ctx context.Context) (string, func() error, error) {
	what, teardown, err := s.latencyBench.setup(ctx)
	if err != nil {
		return "", nil, err
	}
	return s.describe(what), teardown, nil
}

// describe adds the compaction threshold to the load's description, and
// says when the run is not a soak as the issue asks for it.
func (s *soakBench) describe(what string) string {
	threshold := fmt.Sprintf("compaction threshold %d MiB", s.minDirty>>20)
	if s.minDirty != broker.DefaultCompactionMinDirtyBytes {
		threshold = fmt.Sprintf("**bench-only compaction threshold %d MiB** (the default is %d MiB)",
			s.minDirty>>20, broker.DefaultCompactionMinDirtyBytes>>20)
	}
	if s.duration < soakMinDuration {
		threshold += fmt.Sprintf("; **shorter than a soak** (%s < %s)", s.duration, soakMinDuration)
	}
	return what + "; " + threshold
}

func (s *soakBench) replicator(ctx context.Context, run int) (sample, error) {
	var brokers []string
	var bk *child // the broker process; nil with the embedded broker
	if !s.embedded {
		var addr string
		var err error
		bk, addr, err = s.h.startKfakeServer(fmt.Sprintf("soak-%d-kfake", run), "-compaction-min-dirty", fmt.Sprint(s.minDirty))
		if err != nil {
			return nil, err
		}
		defer bk.kill()
		brokers = []string{addr}
	}
	slot := fmt.Sprintf("soak_%d", run)
	rp, err := s.h.startReplicator(replicatorRun{name: fmt.Sprintf("soak-%d-replicator", run), dsn: s.cl.DSN(""), slot: slot,
		snapshot: "never", brokers: brokers})
	if err != nil {
		return nil, err
	}
	defer rp.kill()
	if _, err := rp.waitLine(ctx, "msg=streaming", 2*time.Minute); err != nil {
		return nil, err
	}
	tr, ld, err := s.measure(ctx, rp)
	if err != nil {
		return nil, err
	}
	// The broker's log, data and process: its own, or replicator's when
	// embedded.
	brokerProc, brokerData := rp.child, filepath.Join(rp.dir, "data")
	if bk != nil {
		brokerProc, brokerData = bk, bk.dir()
	}
	brokerRSS, err1 := procPeakRSS(brokerProc.pid())
	readerRSS, err2 := procPeakRSS(rp.pid())
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	disk, err := dirSize(brokerData)
	if err != nil {
		return nil, err
	}
	if err := rp.stop(); err != nil {
		return nil, err
	}
	if bk != nil {
		if err := bk.stop(); err != nil {
			return nil, err
		}
	}
	logText, err := os.ReadFile(brokerProc.logPath)
	if err != nil {
		return nil, err
	}
	passes, err := parsePasses(logText)
	if err != nil {
		return nil, err
	}
	if err := dropSlot(ctx, s.conn, slot); err != nil {
		return nil, err
	}
	smp := soakSample(tr, passes)
	smp["rate"] = ld.rate
	smp["reader_rss_mb"] = mb(readerRSS)
	if bk != nil {
		smp["broker_rss_mb"] = mb(brokerRSS)
	}
	smp["topic_mb"] = mb(disk)
	var errs []error
	if len(passes) == 0 {
		// The soak is for the latency during compaction: without a pass
		// it measured nothing it is for.
		hint := "raise -soak or -soak-rate, or lower -soak-min-dirty"
		if s.embedded {
			hint = "raise -soak or -soak-rate (the embedded broker's threshold cannot be lowered)"
		}
		errs = append(errs, fmt.Errorf("soak: no compaction pass ran: the topic stayed under the threshold (%d MiB); %s", s.minDirty>>20, hint))
	}
	errs = append(errs, s.h.cleanup(rp.dir))
	if bk != nil {
		errs = append(errs, s.h.cleanup(bk.dir()))
	}
	return smp, errors.Join(errs...)
}

// pass is one compaction pass of the broker.
type pass struct{ start, end time.Time }

// parsePasses reads the compaction passes from the broker's log: each
// "compacted its topics" line is stamped when the pass ended and says how
// long it took.
func parsePasses(log []byte) ([]pass, error) {
	var out []pass
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "compacted its topics") {
			continue
		}
		var end time.Time
		var took time.Duration
		var haveEnd, haveTook bool
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			var err error
			switch k {
			case "time":
				end, err = time.Parse(time.RFC3339Nano, v)
				haveEnd = err == nil
			case "took":
				took, err = time.ParseDuration(v)
				haveTook = err == nil
			}
			if err != nil {
				return nil, fmt.Errorf("broker log line %q: %s: %w", line, k, err)
			}
		}
		if !haveEnd || !haveTook {
			return nil, fmt.Errorf("broker log line %q: want time= and took=", line)
		}
		out = append(out, pass{start: end.Add(-took), end: end})
	}
	return out, sc.Err()
}

// soakSample splits the trace's latencies by whether the record was in
// flight (committed, not yet received) at some moment of a compaction
// pass: a record committed just before a pass waits for it as much as one
// committed during it.
func soakSample(tr latencyTrace, passes []pass) sample {
	var during, outside []time.Duration
	for i, at := range tr.commit {
		in := false
		for _, p := range passes {
			if !at.After(p.end) && !tr.recv[i].Before(p.start) {
				in = true
				break
			}
		}
		if in {
			during = append(during, tr.lat[i])
		} else {
			outside = append(outside, tr.lat[i])
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	all := stats.SummarizeLatencies(append([]time.Duration(nil), tr.lat...))
	smp := sample{"p99_ms": ms(all.P99), "rows": float64(all.Count), "rows_during": float64(len(during)), "passes": float64(len(passes)),
		"longest_pass_s": 0}
	for _, p := range passes {
		smp["longest_pass_s"] = max(smp["longest_pass_s"], p.end.Sub(p.start).Seconds())
	}
	if d := stats.SummarizeLatencies(during); d.Count > 0 {
		smp["p99_during_ms"], smp["max_during_ms"] = ms(d.P99), ms(d.Max)
	}
	if o := stats.SummarizeLatencies(outside); o.Count > 0 {
		smp["p99_outside_ms"], smp["max_outside_ms"] = ms(o.P99), ms(o.Max)
	}
	return smp
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	return n, err
}
