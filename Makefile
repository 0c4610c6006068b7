# The README test command is `make test`; CI runs it through .ci/run.
# The e2e tag enables the whole-binary tests in test/e2e; they need the
# PostgreSQL server binaries (see pgcluster.FindBinaries), never skip.

GO ?= go

.PHONY: test build demo bench

test:
	$(GO) vet ./... && $(GO) test -race -tags e2e -count=1 -timeout 20m ./...

# Stamped into `replicator --version`; the commit comes from the VCS
# information `go build` embeds (-buildvcs, off in some environments' GOFLAGS).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
BIN ?= bin/replicator

build:
	$(GO) build -buildvcs=auto -ldflags "-X main.version=$(VERSION) -X main.buildDate=$(BUILD_DATE)" -o $(BIN) ./cmd/replicator

demo:
	$(GO) run ./cmd/replicator demo

# The benchmark suite (bench/, docs/BENCHMARKS.md): full size by default,
# e.g. `make bench BENCH_ARGS='-scale 0.1 -runs 3'` for a quick run.
BENCH_ARGS ?=

bench:
	$(GO) run ./bench $(BENCH_ARGS)
