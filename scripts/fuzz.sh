#!/usr/bin/env bash
# Fuzzing: runs every cargo-fuzz target in fuzz/ (or the ones named as arguments) for a
# bounded time each, prints libFuzzer's final figures per target (executions, coverage,
# exec/s), and fails when any target crashed. Not part of `make test`.
#
#   make fuzz                          # 30 s per target
#   FUZZ_SECONDS=300 make fuzz         # longer
#   scripts/fuzz.sh token_parse        # one target
#
# cargo-fuzz is installed from crates.io into .tools/cargo when missing (about a minute).
# The targets are built on the stable toolchain with `--sanitizer none`: cargo-fuzz adds a
# `-Zsanitizer=...` flag only for a real sanitizer, and the rest of its flags (SanitizerCoverage
# through -Cpasses / -Cllvm-args, --cfg fuzzing) are stable, so neither nightly nor
# RUSTC_BOOTSTRAP is needed. What these targets look for are panics and failed assertions,
# which need no sanitizer (the workspace forbids unsafe code).
#
# Each run grows a working corpus in fuzz/target/corpus-run/<target> (kept between runs,
# gitignored) on top of the committed seeds in fuzz/corpus/<target>. A crash leaves its input
# in fuzz/artifacts/<target>/ with the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi

CARGO_FUZZ_VERSION=0.13.2
# CARGO_TOOLS_ROOT may point elsewhere (e.g. a cache kept between CI runs).
tools_root="${CARGO_TOOLS_ROOT:-$PWD/.tools/cargo}"
export PATH="$tools_root/bin:$PATH"
if [[ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools_root"
    start=$SECONDS
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$tools_root"
    echo "== cargo-fuzz installed in $((SECONDS - start)) s"
fi

fuzz=(cargo fuzz)
build_flags=(--fuzz-dir fuzz --sanitizer none)

mapfile -t all_targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
if (($# > 0)); then
    targets=("$@")
    for target in "${targets[@]}"; do
        if ! printf '%s\n' "${all_targets[@]}" | grep -qxF -- "$target"; then
            echo "no fuzz target '$target'; there are: ${all_targets[*]}" >&2
            exit 2
        fi
    done
else
    targets=("${all_targets[@]}")
fi

echo "== building ${#targets[@]} fuzz targets (release, debug assertions, stable toolchain)"
"${fuzz[@]}" build "${build_flags[@]}"

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
declare -A figures
failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/target/corpus-run/$target"
    seeds="fuzz/corpus/$target"
    mkdir -p "$corpus" "$seeds"
    log="$logs/$target.log"
    echo "== $target: ${seconds} s (log: $log)"
    status=0
    # The first corpus directory receives what the run finds; the seeds are only read.
    "${fuzz[@]}" run "${build_flags[@]}" "$target" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    if ((status != 0)) || [[ -z "$done_line" ]]; then
        failed+=("$target")
        figures[$target]="FAILED (exit $status)"
        echo "!! $target failed; the end of its log:" >&2
        tail -n 40 "$log" >&2
    else
        figures[$target]="$done_line"
        echo "   $done_line"
    fi
done

echo
echo "== fuzzing summary (${seconds} s per target; #executions DONE cov: edges ft: features ...)"
for target in "${targets[@]}"; do
    printf '%-20s %s\n' "$target" "${figures[$target]}"
done
if ((${#failed[@]} > 0)); then
    echo "!! failed: ${failed[*]} (crash inputs in fuzz/artifacts/<target>/, logs in $logs/)" >&2
    exit 1
fi
