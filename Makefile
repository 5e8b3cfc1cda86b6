# tpmid: make build | test | demo | fuzz | bench | deps
#
# `make test` runs every test (unit, plugin, simulator, swtpm, integration);
# it first makes sure swtpm and SPIRE are there (`make deps`). The simulator
# tests need cgo, so CGO_ENABLED=1 and a C compiler.

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
# Integration tests start real spire-server/agent processes and swtpm.
TEST_TIMEOUT ?= 20m
export CGO_ENABLED = 1

SPIRE_VERSION ?= v1.13.3
export SPIRE_VERSION

.PHONY: all build test unit deps swtpm spire demo fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/tpmid ./cmd/tpmid-server-plugin ./cmd/tpmid-agent-plugin

# deps: swtpm + swtpm-tools + tpm2-tools (apt-get, only if missing; sudo when
# not root) and spire-server/spire-agent $(SPIRE_VERSION) built into .cache.
deps: swtpm spire

swtpm:
	@if command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null; then \
		echo "swtpm: $$(command -v swtpm)"; \
	else \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "swtpm: installing swtpm swtpm-tools tpm2-tools with apt-get"; \
		$$sudo apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends swtpm swtpm-tools tpm2-tools; \
	fi

spire:
	@echo "spire: $$(./scripts/ensure-spire.sh)"

# Every test. Integration tests are ordinary Go tests in test/integration.
# -count=1: they build the plugins and run SPIRE in subprocesses, which Go's
# test cache cannot see, so a cached "ok" could hide a broken plugin.
test: deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Unit tests only: everything but test/integration, no deps needed.
unit:
	$(GO) test $$($(GO) list ./... | grep -v /test/integration)

demo:
	$(GO) run ./cmd/tpmid-demo

# Each fuzz target for FUZZTIME; go test -fuzz takes one target per run.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

clean:
	rm -rf $(BIN) out demo-logs
