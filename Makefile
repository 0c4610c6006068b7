# The README test command is `make test`; CI runs it through .ci/run.
# The e2e tag enables the whole-binary tests in test/e2e; they need the
# PostgreSQL server binaries (see pgcluster.FindBinaries), never skip.

GO ?= go

.PHONY: test build demo bench

test:
	$(GO) vet ./... && $(GO) test -race -tags e2e -count=1 -timeout 20m ./...

build:
	$(GO) build -o bin/replicator ./cmd/replicator

demo:
	$(GO) run ./cmd/replicator demo

# The benchmark suite (bench/, docs/BENCHMARKS.md): full size by default,
# e.g. `make bench BENCH_ARGS='-scale 0.1 -runs 3'` for a quick run.
BENCH_ARGS ?=

bench:
	$(GO) run ./bench $(BENCH_ARGS)
