#!/usr/bin/env bash
# `make run`: the token service on an embedded-default setup. Installs what is missing, starts
# a local redis-server when none answers (data and log in .dev/redis), creates a development
# keyring (.dev/keyring), prints grpcurl and curl examples, and serves gRPC on 127.0.0.1:50051
# with the HTTP gateway on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh
export PATH="$root/.tools/venv/bin:$PATH"

redis_url="${TOKEN_REDIS_URL:-redis://127.0.0.1:6379}"
if redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  echo "run: using the Redis already answering at $redis_url (keys under the prefix tok:)"
else
  if [ -n "${TOKEN_REDIS_URL:-}" ]; then
    echo "run: no Redis answers at TOKEN_REDIS_URL=$redis_url" >&2
    exit 1
  fi
  echo "run: starting a development redis-server on 127.0.0.1:6379 (data in .dev/redis)"
  mkdir -p .dev/redis
  # noeviction: Redis is the token service's database, never a cache (the server refuses a
  # Redis that may evict). hash-max-listpack-value 128 keeps subjects' hashes compact.
  redis-server --port 6379 --bind 127.0.0.1 --dir "$root/.dev/redis" --appendonly yes \
    --maxmemory-policy noeviction --hash-max-listpack-value 128 --daemonize yes --logfile "$root/.dev/redis/redis.log"
  for _ in $(seq 100); do
    redis-cli -u "$redis_url" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -u "$redis_url" ping >/dev/null
fi

echo "run: building token-server and token-gateway (release; the first build takes a few minutes)"
cargo build --release -p token-server -p token-gateway
if [ ! -f .dev/keyring ]; then
  mkdir -p .dev
  (umask 077 && target/release/token-server keygen > .dev/keyring)
  echo "run: created a development keyring in .dev/keyring"
elif ! grep -q ' ed25519:' .dev/keyring; then
  # A development keyring from before JWT access tokens: add the Ed25519 key keygen now writes.
  (umask 077 && target/release/token-server keygen --key-id "dev$(date +%s)" | grep ' ed25519:' >> .dev/keyring)
  echo "run: added an Ed25519 key (JWT access tokens) to .dev/keyring"
fi

mkdir -p .dev
# Operator RPCs need a caller named in the operator policy: a development bearer credential.
if [ ! -f .dev/operator-credential ]; then
  (umask 077 && head -c 24 /dev/urandom | base64 | tr '+/' '-_' > .dev/operator-credential)
  echo "run: created a development operator credential in .dev/operator-credential"
fi
printf '# Development policy written by scripts/run-dev.sh: the credential in .dev/operator-credential.\n[[operator]]\nname = "make-run"\nbearer_sha256 = "%s"\n' \
  "$(tr -d '\n' < .dev/operator-credential | sha256sum | cut -d' ' -f1)" > .dev/operators.toml

grpc_addr="${TOKEN_LISTEN:-127.0.0.1:50051}"
gateway_addr="${GATEWAY_LISTEN:-127.0.0.1:8080}"
gateway_admin="${GATEWAY_ADMIN_LISTEN:-127.0.0.1:9091}"
cat <<MSG

token-server is starting on $grpc_addr (Redis: $redis_url; metrics at
http://${TOKEN_ADMIN_LISTEN:-127.0.0.1:9090}/metrics), and token-gateway, its OAuth2 HTTP front
door, on http://$gateway_addr (metrics at http://$gateway_admin/metrics). Try them from another
terminal in $root:

$(if [ -x .tools/venv/bin/grpcurl ]; then echo "  export PATH=\"$root/.tools/venv/bin:\$PATH\"   # grpcurl"; fi)
  bash scripts/grpcurl-examples.sh               # gRPC: the walk-through below
  bash scripts/curl-examples.sh                  # HTTP: the OAuth2 walk-through below

---- scripts/grpcurl-examples.sh ----
$(sed -n '/^ADDR=/,$p' scripts/grpcurl-examples.sh)
---- scripts/curl-examples.sh ----
$(sed -n '/^GRPC=/,$p' scripts/curl-examples.sh)
-------------------------------------
Stop with Ctrl-C (in-flight calls and requests finish first).

MSG
# The gateway runs beside the server and stops with it (Ctrl-C reaches both; the trap covers
# the server exiting on its own).
GATEWAY_LISTEN="$gateway_addr" GATEWAY_ADMIN_LISTEN="$gateway_admin" \
  GATEWAY_TOKEN_SERVICE="http://$grpc_addr" target/release/token-gateway &
gateway_pid=$!
trap 'kill "$gateway_pid" 2>/dev/null || true' EXIT
target/release/token-server --keyring .dev/keyring --operator-policy .dev/operators.toml
