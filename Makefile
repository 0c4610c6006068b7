# The README test command is `make test`; CI runs it through .ci/run.
# The e2e tag enables the whole-binary tests in test/e2e; they need the
# PostgreSQL server binaries (see pgcluster.FindBinaries), never skip.

GO ?= go

.PHONY: test build demo

test:
	$(GO) vet ./... && $(GO) test -race -tags e2e -count=1 -timeout 20m ./...

build:
	$(GO) build -o bin/replicator ./cmd/replicator

demo:
	$(GO) run ./cmd/replicator demo
