#!/usr/bin/env bash
# A/B of two token-server binaries in one run: one redis-server, both servers up side by side
# (the idle one costs nothing), `token-bench throughput` against each in turn, ROUNDS times
# (default 3), so that both see the same machine. Prints each run's `bench throughput:` line
# (refresh/s, p99, server CPU per refresh) prefixed with A or B.
#   scripts/bench-ab.sh <binary A> <binary B> [token-bench throughput flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2
shift 2
rounds="${ROUNDS:-3}"
cargo build --release --quiet -p token-bench
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --maxmemory-policy noeviction --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
(umask 077 && "$a" keygen > "$work/keyring")
TOKEN_OPERATOR_CREDENTIAL=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
export TOKEN_OPERATOR_CREDENTIAL
printf '[[operator]]\nname = "ab"\nbearer_sha256 = "%s"\n' \
  "$(printf '%s' "$TOKEN_OPERATOR_CREDENTIAL" | sha256sum | cut -d' ' -f1)" > "$work/operators.toml"
declare -A endpoint server_pid
for side in A B; do
  port=$(free_port)
  binary=$a
  [ "$side" = B ] && binary=$b
  RUST_LOG=warn "$binary" --listen "127.0.0.1:$port" --admin-listen off \
    --operator-policy "$work/operators.toml" --key-prefix "$side:" \
    --redis-url "redis://127.0.0.1:$redis_port" --keyring "$work/keyring" &
  server_pid[$side]=$!
  pids+=("$!")
  endpoint[$side]="http://127.0.0.1:$port"
  target/release/token-bench wait-ready --endpoint "${endpoint[$side]}"
done
for round in $(seq "$rounds"); do
  for side in A B; do
    line=$(target/release/token-bench throughput --endpoint "${endpoint[$side]}" \
      --redis-url "redis://127.0.0.1:$redis_port" --server-pid "${server_pid[$side]}" \
      --redis-pid "$redis_pid" "$@" | grep '^bench throughput:')
    echo "$side round $round: $line"
  done
done
