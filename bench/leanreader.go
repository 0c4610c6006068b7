package main

import "context"

// readerLean names the lean bare reader's slots.
const readerLean = "lean"

// leanReaderBenchmark checks the stream benchmark's ceiling rather than
// replicator: the bare reader against one that does as little as a client
// can (no parsing or decoding of rows, no context per receive). If the
// lean one were faster, the bare reader would be a low ceiling. Optional:
// it runs only when named.
func leanReaderBenchmark(h *harness) benchmark {
	s := &streamBench{walBacklog{h: h, prefix: "lean", readers: []string{readerBare, readerLean}}}
	b := benchmark{
		name:     "lean-reader",
		optional: true,
		about: "The stream benchmark's backlog and measurement, read by the bare reader (the stream benchmark's ceiling) " +
			"and by the same reader with `-lean`: a read deadline moved a few times a second instead of a deadline context " +
			"per receive, and of each row change only its first byte (counted, not parsed or decoded). " +
			"It checks the ceiling, not replicator: on loopback the walsender's cost depends on how its client reads " +
			"(bench/analysis.md), so a client that does less is not necessarily read faster.",
		setup:   s.setup,
		ceiling: subject{name: "bare reader", run: s.bare},
		subjects: []subject{{name: "bare reader, lean", run: func(ctx context.Context, run int) (sample, error) {
			f, err := s.bareAs(ctx, run, readerLean, "-lean")
			if err != nil {
				return nil, err
			}
			return s.sample(f), nil
		}}},
		metrics:    append([]metric{{key: "rows_per_s", label: "throughput", unit: "rows/s", ratio: true}}, readerMetrics()...),
		reportRuns: 7,
	}
	s.runs = h.opts.runsOf(&b)
	return b
}
