# Sourced by bench.sh, bench-ab.sh and profile.sh: a scratch directory and the processes to
# stop on exit, a free loopback port, a dedicated redis-server (no persistence, noeviction),
# a development keyring, and an operator credential with the policy that names it.
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets redis_port and redis_pid; returns once it answers PING.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --hash-max-listpack-value 128 \
    --maxmemory-policy noeviction --dir "$work" --logfile "$work/redis.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# A keyring from `<token-server binary> keygen` in $work/keyring.
make_keyring() { (umask 077 && "$1" keygen > "$work/keyring"); }

# Exports TOKEN_OPERATOR_CREDENTIAL (token-bench presents it) and writes $work/operators.toml
# naming it as operator `$1`.
make_operator() {
  TOKEN_OPERATOR_CREDENTIAL=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
  export TOKEN_OPERATOR_CREDENTIAL
  printf '[[operator]]\nname = "%s"\nbearer_sha256 = "%s"\n' "$1" \
    "$(printf '%s' "$TOKEN_OPERATOR_CREDENTIAL" | sha256sum | cut -d' ' -f1)" > "$work/operators.toml"
}
