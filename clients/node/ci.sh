#!/usr/bin/env bash
# CI for the Node.js client (clients/node) and its examples (examples/node). Called from the
# repo root by .ci/run once the drove binary is built; DROVE_BIN names another binary than
# target/debug/drove. Installs exactly what package-lock.json says (npm ci), builds with tsc,
# and runs the tests (node:test) against real `drove serve` processes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bin="${DROVE_BIN:-$repo/target/debug/drove}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac   # the tests run from clients/node
if [ ! -x "$bin" ]; then
  echo "clients/node/ci.sh: no drove binary at $bin; build it first (cargo build -p drove-cli) or set DROVE_BIN" >&2
  exit 1
fi
export DROVE_BIN="$bin"

echo "== node $(node --version), npm $(npm --version), drove: $DROVE_BIN"
cd "$here"
npm ci --no-audit --no-fund
npm run build
(cd "$repo/examples/node" && npm ci --no-audit --no-fund)
npm test
