#!/usr/bin/env bash
# `make run`: the token service on an embedded-default setup. Installs what is missing, starts
# a local redis-server when none answers (data and log in .dev/redis), creates a development
# keyring (.dev/keyring), prints grpcurl examples and serves on 127.0.0.1:50051.
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
  redis-server --port 6379 --bind 127.0.0.1 --dir "$root/.dev/redis" --appendonly yes \
    --daemonize yes --logfile "$root/.dev/redis/redis.log"
  for _ in $(seq 100); do
    redis-cli -u "$redis_url" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -u "$redis_url" ping >/dev/null
fi

echo "run: building token-server (release; the first build takes a few minutes)"
cargo build --release -p token-server
if [ ! -f .dev/keyring ]; then
  mkdir -p .dev
  (umask 077 && target/release/token-server keygen > .dev/keyring)
  echo "run: created a development keyring in .dev/keyring"
fi

cat <<MSG

token-server is starting on ${TOKEN_LISTEN:-127.0.0.1:50051} (Redis: $redis_url).
Try it from another terminal in $root:

$(if [ -x .tools/venv/bin/grpcurl ]; then echo "  export PATH=\"$root/.tools/venv/bin:\$PATH\"   # grpcurl"; fi)
  bash scripts/grpcurl-examples.sh               # the whole walk-through below

---- scripts/grpcurl-examples.sh ----
$(sed -n '/^ADDR=/,$p' scripts/grpcurl-examples.sh)
-------------------------------------
Stop with Ctrl-C (in-flight calls finish first).

MSG
exec target/release/token-server --keyring .dev/keyring
