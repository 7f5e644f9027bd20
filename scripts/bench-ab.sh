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
source scripts/bench-env.sh
start_redis
make_keyring "$a"
make_operator ab
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
