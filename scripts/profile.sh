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
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
grpc_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory-policy noeviction --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

(umask 077 && "$bin/token-server" keygen > "$work/keyring")
TOKEN_OPERATOR_CREDENTIAL=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
export TOKEN_OPERATOR_CREDENTIAL
printf '[[operator]]\nname = "profile"\nbearer_sha256 = "%s"\n' \
  "$(printf '%s' "$TOKEN_OPERATOR_CREDENTIAL" | sha256sum | cut -d' ' -f1)" > "$work/operators.toml"
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
callgrind_annotate --inclusive=no "$out/callgrind.out.$mode" 2>/dev/null | sed -n "/^Ir/,$p" | head -40 || true
