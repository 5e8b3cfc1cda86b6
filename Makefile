# tpmid: make build | test | demo | fuzz | bench | bench-load | bench-spire | deps
#
# `make test` runs every test (unit, plugin, simulator, swtpm, integration);
# it first makes sure swtpm, a C compiler and SPIRE are there (`make deps`).
# The simulator tests need cgo and the tpmsimulator build tag (the in-process
# simulator is only compiled in with it, never into shipped binaries):
# `make test` sets CGO_ENABLED=1, and test, unit, fuzz and bench pass
# -tags $(TEST_TAGS).

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
# Integration tests start real spire-server/agent processes and swtpm.
TEST_TIMEOUT ?= 20m
TEST_TAGS ?= tpmsimulator

SPIRE_VERSION ?= v1.13.3
export SPIRE_VERSION

.PHONY: all build test unit deps swtpm spire demo fuzz bench bench-all bench-load bench-spire clean dist

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/tpmid ./cmd/tpmid-server-plugin ./cmd/tpmid-agent-plugin

# deps: swtpm + swtpm-tools, and a C compiler (the simulator
# tests and SPIRE's sqlite3 driver use cgo), with apt-get only if missing
# (sudo when not root); then spire-server/spire-agent $(SPIRE_VERSION) built
# into .cache.
deps: swtpm spire

swtpm:
	@need=""; \
	command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null || need="swtpm swtpm-tools"; \
	command -v $${CC:-cc} >/dev/null || command -v gcc >/dev/null || need="$$need gcc libc6-dev"; \
	if [ -n "$$need" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "deps: apt-get install$$need"; \
		$$sudo apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need; \
	else \
		echo "swtpm: $$(command -v swtpm)"; \
	fi

spire:
	@echo "spire: $$(./scripts/ensure-spire.sh)"

# Every test. Integration tests are ordinary Go tests in test/integration.
# -count=1: they build the plugins and run SPIRE in subprocesses, which Go's
# test cache cannot see, so a cached "ok" could hide a broken plugin.
# internal/testsummary prints what plain go test would, then one line:
# passed, failed, skipped, naming every skipped test (each with its reason
# on a SKIP line above); its exit status is go test's.
test: deps
	CGO_ENABLED=1 $(GO) run ./internal/testsummary -- $(GO) test -json -count=1 -tags $(TEST_TAGS) -timeout $(TEST_TIMEOUT) ./...

# Unit tests only: everything but test/integration and test/stepca (real
# SPIRE, step-ca), no deps needed but a C compiler for the simulator.
unit:
	CGO_ENABLED=1 $(GO) test -tags $(TEST_TAGS) $$($(GO) list ./... | grep -v -e /test/integration -e /test/stepca)

demo:
	$(GO) run ./cmd/tpmid-demo

# Each fuzz target for FUZZTIME; go test -fuzz takes one target per run.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -tags $(TEST_TAGS) -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -tags $(TEST_TAGS) -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
		done; \
	done

# bench: the server's verification of one attestation with the real 45 KB
# and 73 KB event logs, and its crypto floor measured in the same run, with
# their ratio (internal/benchreport runs the benchmarks and prints the table).
bench:
	CGO_ENABLED=1 $(GO) run ./internal/benchreport

# Every benchmark in the module.
bench-all:
	CGO_ENABLED=1 $(GO) test -tags $(TEST_TAGS) -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# bench-load: the server plugin process under many concurrent software
# TPMs, with the SQLite store then PostgreSQL: attestations/s, p50/p99 and
# the plugin's peak RSS.
bench-load: build
	CGO_ENABLED=1 $(GO) run ./test/bench/load -plugin $(BIN)/tpmid-server-plugin

# bench-spire: spire-agent start to attested, interleaved: tpmid on a new
# machine and on a known one (AK and AK certificate kept: the fast path),
# a no-op external plugin pair (SPIRE's floor for any external plugin) and
# join_token; medians and ratios.
bench-spire: deps
	CGO_ENABLED=1 $(GO) run -tags $(TEST_TAGS) ./test/bench/spire

# Release: linux amd64 and arm64 tarballs of the three binaries (static,
# CGO_ENABLED=0) in dist/, SHA256SUMS, and the plugin_checksum line of each
# plugin binary. VERSION defaults to git describe.
dist:
	GO=$(GO) ./scripts/dist.sh

clean:
	rm -rf $(BIN) out demo-logs
