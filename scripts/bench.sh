#!/usr/bin/env bash
# `make bench`: release build, a dedicated redis-server and token-server on free loopback
# ports, then in one run: the EVALSHA ceiling (redis-benchmark), refresh throughput at 64
# callers (printed as a ratio of the ceiling), a mixed and an introspection-only load, storms
# of 1,000, and Redis bytes per family. Each mode ends with a `bench <mode>:` line.
# BENCH_DURATION (default 10s) sets each timed run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
duration="${BENCH_DURATION:-10s}"

echo "bench: building (release)"
cargo build --release --quiet -p token-server -p token-bench
bin=target/release
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
grpc_port=$(free_port)
admin_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

(umask 077 && "$bin/token-server" keygen > "$work/keyring")
RUST_LOG=warn "$bin/token-server" --listen "127.0.0.1:$grpc_port" \
  --admin-listen "127.0.0.1:$admin_port" \
  --redis-url "redis://127.0.0.1:$redis_port" --keyring "$work/keyring" &
server_pid=$!
pids+=("$server_pid")

target=(--endpoint "http://127.0.0.1:$grpc_port" --redis-url "redis://127.0.0.1:$redis_port"
        --server-pid "$server_pid" --redis-pid "$redis_pid")
"$bin/token-bench" wait-ready "${target[@]}"

echo "bench: machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; redis $(redis-server --version | awk '{print $3}')"
ceiling_line=$("$bin/token-bench" ceiling --redis-url "redis://127.0.0.1:$redis_port" --concurrency 64)
echo "$ceiling_line"
ceiling=$(sed -n 's/.*evalsha_per_s=\([0-9.]*\).*/\1/p' <<<"$ceiling_line")

"$bin/token-bench" throughput "${target[@]}" --concurrency 64 --duration "$duration" \
  --ceiling-per-s "$ceiling"
"$bin/token-bench" throughput "${target[@]}" --concurrency 64 --duration "$duration" \
  --introspect-share 0.5
"$bin/token-bench" throughput "${target[@]}" --concurrency 64 --duration "$duration" \
  --introspect-share 1.0
"$bin/token-bench" storm "${target[@]}" --parallel 1000 --rounds 20
"$bin/token-bench" memory "${target[@]}" --families 100000
