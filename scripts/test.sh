#!/usr/bin/env bash
# Install streamq with its test tools, make sure redis-server exists, then run the checks:
# ruff, mypy (strict, on the package) and the whole pytest suite. The tests start their own
# redis-server on free loopback ports; they never use 6379.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# redis-server is required; faketime (clock-skew test) and openssl (TLS tests) are used
# when present, and those tests skip without them
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v faketime >/dev/null 2>&1 || missing="$missing faketime"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
  echo "installing with apt-get:$missing" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null \
    || echo "apt-get could not install:$missing (only redis-server is required)" >&2
fi
redis-server --version

# chromium for the dashboard's browser tests (Playwright drives it; they skip without it)
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium with apt-get (dashboard browser tests)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || echo "apt-get could not install chromium: the browser tests will skip" >&2
fi

$PY -m pip install -q --disable-pip-version-check -e '.[dev,test]'

echo "== ruff"
$PY -m ruff check streamq tests benchmarks examples
echo "== mypy"
$PY -m mypy
$PY -m mypy --strict examples
echo "== pytest"
$PY -m pytest "$@"
