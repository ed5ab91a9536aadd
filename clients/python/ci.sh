#!/usr/bin/env bash
# CI for the Python client (clients/python) and its example (examples/python). Called from the
# repo root by .ci/run once the drove binary is built; DROVE_BIN names another binary than
# target/debug/drove, PYTHON another interpreter than python3. Makes a fresh virtualenv in a
# temp dir, installs the package (as a wheel, the way users get it) with its test extras from
# PyPI, type-checks it (mypy --strict, and the example as a user of its py.typed types), and
# runs the tests (pytest) against real `drove serve` processes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bin="${DROVE_BIN:-$repo/target/debug/drove}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac   # the tests run from clients/python
if [ ! -x "$bin" ]; then
  echo "clients/python/ci.sh: no drove binary at $bin; build it first (cargo build -p drove-cli) or set DROVE_BIN" >&2
  exit 1
fi
export DROVE_BIN="$bin"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "clients/python/ci.sh: $python is needed for the Python client's tests" >&2
  exit 1
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/drove-python-ci.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
venv="$tmp/venv"

echo "== $("$python" --version), drove: $DROVE_BIN"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet "$here[test]"

echo "== mypy --strict"
cd "$here"
"$venv/bin/python" -m mypy --cache-dir "$tmp/mypy" src/drove_client
"$venv/bin/python" -m mypy --cache-dir "$tmp/mypy" --strict "$repo/examples/python/report_service.py"

echo "== pytest"
# The installed wheel is what the tests import (src/ is not on the path).
"$venv/bin/python" -m pytest -p no:cacheprovider -ra --durations=8 tests
