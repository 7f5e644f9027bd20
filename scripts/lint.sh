#!/usr/bin/env bash
# `make lint`: formatting, clippy with warnings as errors, and the dependency policy in
# deny.toml (licenses, bans, sources). Cheapest first, so it fails fast.
#
# cargo-deny is installed from crates.io into .tools/cargo when that version is not there
# (a few minutes of compiling on two cores, once per machine; CI's fresh clone pays it on
# every run unless the same version is already on PATH). Advisories are not checked: they
# need the RustSec database from git, which this project's machines cannot reach (deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
# CARGO_TOOLS_ROOT may point elsewhere (e.g. a cache kept between CI runs).
tools_root="${CARGO_TOOLS_ROOT:-$PWD/.tools/cargo}"
export PATH="$tools_root/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

if [[ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    echo "== installing cargo-deny $CARGO_DENY_VERSION into $tools_root"
    start=$SECONDS
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" --root "$tools_root"
    echo "== cargo-deny installed in $((SECONDS - start)) s"
fi

echo "== cargo deny check licenses bans sources"
cargo deny check licenses bans sources
