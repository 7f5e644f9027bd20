#!/usr/bin/env bash
# `make bench`: release build, a dedicated redis-server and token-server on free loopback
# ports, then in one run: the EVALSHA ceiling (redis-benchmark), the gRPC echo ceiling
# (Health/Check), refresh throughput at 64 callers (printed as ratios of both ceilings and of
# the two combined, with server CPU per refresh), the same for a `jwt` client (RFC 9068
# access tokens) beside the opaque one, the same refreshes over HTTP through
# token-gateway with wrk (beside the gRPC figure), a mixed and an introspection-only load,
# storms of 1,000, Redis bytes per family (1, 5 and 100 families per subject, and 10,000 of one
# subject), and the time to revoke a subject's 10,000 sessions. Each mode ends with a
# `bench <mode>:` line.
# BENCH_DURATION (default 10s) sets each timed run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "bench: installing wrk from Debian's packages"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
duration="${BENCH_DURATION:-10s}"

echo "bench: building (release)"
cargo build --release --quiet -p token-server -p token-bench -p token-gateway
bin=target/release
source scripts/bench-env.sh
start_redis
grpc_port=$(free_port)
admin_port=$(free_port)
make_keyring "$bin/token-server"
# The benchmark registers its clients and issues its families as an operator.
make_operator token-bench
RUST_LOG=warn "$bin/token-server" --listen "127.0.0.1:$grpc_port" \
  --admin-listen "127.0.0.1:$admin_port" --operator-policy "$work/operators.toml" \
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

# The echo ceiling (Health/Check through the same server, callers and channels) first, then the
# refreshes, printed against EVALSHA, echo and the two combined.
throughput_out=$("$bin/token-bench" throughput "${target[@]}" --concurrency 64 \
  --duration "$duration" --echo-duration "$duration" --ceiling-per-s "$ceiling")
echo "$throughput_out"
throughput_line=$(grep '^bench throughput:' <<<"$throughput_out")
grpc_per_s=$(sed -n 's/.*refresh_per_s=\([0-9.]*\).*/\1/p' <<<"$throughput_line")

# The same refreshes for a client whose access tokens are RFC 9068 JWTs (Ed25519-signed; the
# keyring from keygen has the key), printed beside the opaque figure above.
jwt_line=$("$bin/token-bench" throughput "${target[@]}" --concurrency 64 \
  --duration "$duration" --access-token-format jwt | grep '^bench throughput:')
jwt_per_s=$(sed -n 's/.*refresh_per_s=\([0-9.]*\).*/\1/p' <<<"$jwt_line")
echo "bench jwt: jwt_refresh_per_s=$jwt_per_s opaque_refresh_per_s=$grpc_per_s" \
  "ratio_to_opaque=$(awk "BEGIN {printf \"%.2f\", $jwt_per_s / $grpc_per_s}")" \
  "${jwt_line#bench throughput: }"

# The same refreshes over HTTP: token-gateway in front of the same token-server, wrk with 64
# connections, each request a real rotation (scripts/wrk-refresh.lua keeps one chain per
# in-flight request). Fresh families for the warm-up and for the measured run.
http_port=$(free_port)
RUST_LOG=warn "$bin/token-gateway" --listen "127.0.0.1:$http_port" \
  --token-service "http://127.0.0.1:$grpc_port" &
gateway_pid=$!
pids+=("$gateway_pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null
"$bin/token-bench" issue "${target[@]}" --families 128 --out "$work/warmup-tokens" >/dev/null
"$bin/token-bench" issue "${target[@]}" --families 128 --out "$work/tokens" >/dev/null
wrk -t 2 -c 64 -d 2s -s scripts/wrk-refresh.lua "http://127.0.0.1:$http_port" \
  -- "$work/warmup-tokens" 2 >/dev/null
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
gateway_ticks=$(cpu_ticks "$gateway_pid")
server_ticks=$(cpu_ticks "$server_pid")
gateway_line=$(wrk -t 2 -c 64 -d "$duration" -s scripts/wrk-refresh.lua \
  "http://127.0.0.1:$http_port" -- "$work/tokens" 2 | grep '^bench gateway:')
gateway_cpu=$(awk "BEGIN {printf \"%.1f\", ($(cpu_ticks "$gateway_pid") - $gateway_ticks) / $hz}")
server_cpu=$(awk "BEGIN {printf \"%.1f\", ($(cpu_ticks "$server_pid") - $server_ticks) / $hz}")
gateway_per_s=$(sed -n 's/.*refresh_per_s=\([0-9.]*\).*/\1/p' <<<"$gateway_line")
ratio=$(awk "BEGIN {printf \"%.2f\", $gateway_per_s / $grpc_per_s}")
echo "$gateway_line grpc_refresh_per_s=$grpc_per_s ratio_to_grpc=$ratio connections=64" \
  "gateway_cpu_s=$gateway_cpu server_cpu_s=$server_cpu"
kill "$gateway_pid"
wait "$gateway_pid" 2>/dev/null || true

"$bin/token-bench" throughput "${target[@]}" --concurrency 64 --duration "$duration" \
  --introspect-share 0.5
"$bin/token-bench" throughput "${target[@]}" --concurrency 64 --duration "$duration" \
  --introspect-share 1.0
"$bin/token-bench" storm "${target[@]}" --parallel 1000 --rounds 20
"$bin/token-bench" memory "${target[@]}" --families 100000
"$bin/token-bench" revoke-subject "${target[@]}" --families 10000
