# resil — see README.md. Targets: build test e2e torture bench lint run fuzz clean
GO        ?= go
BIN       ?= bin/reconciler
STATE     ?= $(CURDIR)/.state
FUZZTIME  ?= 10s
STATICCHECK_VERSION ?= v0.8.2
export GOFLAGS := -buildvcs=false

.PHONY: all build test test-deps unit e2e torture fuzz bench lint run clean schema

all: build

build:
	$(GO) build -o $(BIN) ./cmd/reconciler

# The test command of README.md: the Debian packages the tests need (installed
# with apt-get when run as root and some are missing), unit + integration tests
# (the e2e packages boot a sandboxed systemd when run as root), then a short run
# of every fuzz target.
test: test-deps
	$(MAKE) --no-print-directory unit fuzz

test-deps:
	@./scripts/test-deps.sh

unit:
	$(GO) test -count=1 -timeout 20m ./...

e2e:
	RESIL_E2E_REQUIRE=1 $(GO) test -count=1 -timeout 20m -v ./e2e/...

# The full torture suite (e2e/torture_test.go): per backend at least 10,000
# random operations on the manifests dir and 500 kill -9 of the agent, kill
# after every step k of a pass, and the diff-fidelity check. Seeds are
# printed; replay with RESIL_TORTURE_SEED=N. make test runs a short version.
torture:
	RESIL_TORTURE=1 $(GO) test -count=1 -timeout 60m -v -run 'Torture|Fidelity' ./e2e/...

# Each fuzz target for $(FUZZTIME) (go test allows one -fuzz target per run).
# A failing run prints its output and runs once more: a crasher it found was
# written to testdata/fuzz and fails the second run at once, so only a
# failure of the fuzzing engine itself (a worker that did not answer on a
# loaded machine; seen once in CI, with no crasher written) passes the rerun.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t"; \
	    out=$$(mktemp); \
	    if ! $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg >$$out 2>&1; then \
	      echo "fuzz $$pkg $$t failed:"; tail -n 60 $$out; echo "fuzz $$pkg $$t: second run"; \
	      $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || { rm -f $$out; exit 1; }; \
	    fi; \
	    rm -f $$out; \
	  done; \
	done

# Go benchmarks; the systemd benchmarks (e2e/bench_test.go): section 0 is
# resil vs the shell baseline e2e/bench/baseline.sh in alternating fresh
# sandboxes (100 services x3 pairs, 1000 x1; RESIL_BENCH_TRIALS=3,1;
# RESIL_BENCH_PARTS=compare,calls,detail picks parts), written to
# e2e/bench/results-systemd.txt with heap/CPU profiles beside it; the
# whole agent on the process backend; the process backend vs its peers.
bench:
	@if [ "$$(id -u)" = 0 ] && ! { [ -x /usr/bin/time ] && command -v strace >/dev/null; }; then \
	  apt-get install -y -qq --no-install-recommends time strace >/dev/null; fi
	@if [ "$$(id -u)" = 0 ] && [ ! -x /usr/bin/nc ]; then apt-get install -y -qq --no-install-recommends netcat-openbsd >/dev/null; fi
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@echo "event store: insert throughput (events/s) and events --since 24h over 100k rows (ms/op):"
	$(GO) test -run '^$$' -bench 'BenchmarkAdd|BenchmarkEventsSince24h' -benchtime 2s ./reconcile/store/
	RESIL_BENCH=1 RESIL_BENCH_RESULTS=$(CURDIR)/e2e/bench/results-systemd.txt $(GO) test -count=1 -run TestBenchSystemd -v -timeout 60m ./e2e/
	@echo "rollouts: 10 and 100 services ready 1 s after start, --max-parallel-restarts 2 vs all at once (real systemd):"
	RESIL_BENCH=1 $(GO) test -count=1 -run TestRolloutFigureSystemd -v -timeout 30m ./e2e/
	OUT=$(CURDIR)/e2e/bench ./scripts/bench-process-agent.sh
	@if [ -x actuators/process/bench/peers.sh ]; then actuators/process/bench/peers.sh; fi

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...

# The main job on this machine: the agent on the built-in process backend,
# supervising the examples in manifests/ (state under .state/).
run: build
	./scripts/run-examples.sh $(BIN) $(STATE)

# Regenerate schema/resil.dev_v1.json from the manifest types (make test
# fails while it is out of date: schema.TestSchemaUpToDate).
schema:
	RESIL_UPDATE_SCHEMA=1 $(GO) test -count=1 -run TestSchemaUpToDate ./schema/

clean:
	rm -rf bin .state
