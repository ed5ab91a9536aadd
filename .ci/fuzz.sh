#!/usr/bin/env bash
# The API fuzz test: schemathesis generates requests from the server's own OpenAPI document
# (valid and invalid: every operation, every parameter, links between operations) against a
# real `drove serve` on a fresh SQLite file, and fails on any 5xx and on any answer the document
# does not describe (status, content type, headers, body schema). Bounded: a fixed number of
# examples per operation and long polls capped at 200 ms by the server's --max-wait-ms.
# Usage: .ci/fuzz.sh [DROVE_BIN]   (default target/debug/drove)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${DROVE_BIN:-target/debug/drove}}"
[ -x "$bin" ] || { echo "fuzz: no drove binary at $bin" >&2; exit 1; }
venv="${DROVE_FUZZ_VENV:-target/fuzz-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi
dir="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --db "$dir/fuzz.db" --bind 127.0.0.1:0 --max-wait-ms 200 >"$dir/out" 2>"$dir/log" &
server=$!
for _ in $(seq 1 100); do grep -q '^drove listening on ' "$dir/out" && break; sleep 0.1; done
url="$(sed -n 's/^drove listening on //p' "$dir/out")"
[ -n "$url" ] || { echo "fuzz: drove serve did not start:"; cat "$dir/log"; exit 1; }
echo "fuzzing $url (drove serve pid $server)"
set +e
"$venv/bin/schemathesis" run "$url/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases coverage,fuzzing,stateful --max-examples "${DROVE_FUZZ_EXAMPLES:-60}" --workers 1 \
  --seed "${DROVE_FUZZ_SEED:-20261204}" --no-color 2>&1 | tee "$dir/report"
status=${PIPESTATUS[0]}
set -e
if ! kill -0 "$server" 2>/dev/null; then
  echo "fuzz: FAILED: drove serve died during the run; its log:" >&2
  tail -50 "$dir/log" >&2
  exit 1
fi
if grep -q 'panicked' "$dir/log"; then
  echo "fuzz: FAILED: a request handler panicked; see the log" >&2
  grep -B2 -A10 panicked "$dir/log" >&2
  exit 1
fi
exit "$status"
