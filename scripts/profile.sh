#!/usr/bin/env bash
# `make profile`: where the token server's CPU goes per call, in instructions (valgrind
# callgrind), which stay stable on a shared machine where timings do not. Runs the release
# token-server under callgrind against a dedicated redis-server, drives it with token-bench
# (PROFILE_MODE: refresh (default), introspect or echo; PROFILE_CONCURRENCY callers, default
# 16), counts only the measured window (instrumentation switched on and off around it), and
# prints instructions per call and the top functions. Output kept in target/profile/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${PROFILE_MODE:-refresh}"
concurrency="${PROFILE_CONCURRENCY:-16}"
duration="${PROFILE_DURATION:-20s}"
out=target/profile
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "profile: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet -p token-server -p token-bench
bin=target/release
source scripts/bench-env.sh
start_redis
grpc_port=$(free_port)
make_keyring "$bin/token-server"
make_operator profile
# Instrumentation starts off: start-up, registration and issuing are not counted.
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$out/callgrind.out.$mode" \
  "$bin/token-server" --listen "127.0.0.1:$grpc_port" --admin-listen off \
  --operator-policy "$work/operators.toml" \
  --redis-url "redis://127.0.0.1:$redis_port" --keyring "$work/keyring" 2>"$work/valgrind.log" &
server_pid=$!
pids+=("$server_pid")
target=(--endpoint "http://127.0.0.1:$grpc_port" --redis-url "redis://127.0.0.1:$redis_port")
"$bin/token-bench" wait-ready "${target[@]}"

case "$mode" in
  refresh) extra=() ;;
  introspect) extra=(--introspect-share 1.0) ;;
  echo) extra=(--echo-duration "$duration") ;; # then refreshes, not counted
  *) echo "profile: PROFILE_MODE is refresh, introspect or echo, not $mode" >&2; exit 2 ;;
esac
# The window: instrumentation on for the measured run only (token-bench's warm-up is 2 s; the
# switch happens 2 s in, so both see the same calls within a fraction of a second).
seconds=$(sed 's/s$//' <<<"$duration")
( sleep 2; callgrind_control -i on "$server_pid" >/dev/null
  # The echo phase comes before token-bench's refreshes: switch off when it ends.
  if [ "$mode" = echo ]; then sleep "$seconds"; callgrind_control -i off "$server_pid" >/dev/null; fi ) &
line=$("$bin/token-bench" throughput "${target[@]}" --concurrency "$concurrency" \
  --families 256 --warmup 2s --duration "$duration" "${extra[@]}" | tee "$out/bench.$mode")
callgrind_control -i off "$server_pid" >/dev/null || true
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null || true

case "$mode" in
  refresh) calls=$(grep -m1 '^bench throughput:' <<<"$line" | sed -n 's/.*refresh_per_s=\([0-9.]*\).*/\1/p') ;;
  introspect) calls=$(grep -m1 '^bench introspect:' <<<"$line" | sed -n 's/.*introspect_per_s=\([0-9.]*\).*/\1/p') ;;
  echo) calls=$(grep -m1 '^bench echo:' <<<"$line" | sed -n 's/.*echo_per_s=\([0-9.]*\).*/\1/p') ;;
esac
total=$(callgrind_annotate "$out/callgrind.out.$mode" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "profile $mode: instructions=$total calls=$(awk "BEGIN {print int($calls * $seconds)}")" \
  "instructions_per_call=$(awk "BEGIN {printf \"%.0f\", $total / ($calls * $seconds)}")"
callgrind_annotate --inclusive=no "$out/callgrind.out.$mode" 2>/dev/null | sed -n '/^Ir/,$p' | head -40 || true
