#!/usr/bin/env bash
# Install streamq with its test tools, make sure redis-server exists, then run the checks:
# ruff, mypy (strict, on the package) and the whole pytest suite. The tests start their own
# redis-server on free loopback ports; they never use 6379.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

$PY -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== ruff"
$PY -m ruff check streamq tests benchmarks
echo "== mypy"
$PY -m mypy
echo "== pytest"
$PY -m pytest "$@"
