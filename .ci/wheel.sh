#!/usr/bin/env bash
# The drove-server wheel (packaging/python-server): build it from a built binary, install it
# into a fresh virtualenv with no index (nothing from the network), and use what pip installed:
# `drove serve` on a fresh SQLite file, `drove worker` running a job through a child command,
# `drove submit --wait` reading its result, and `python -m drove_server` / `binary_path()`.
# Usage: .ci/wheel.sh [DROVE_BIN]   (default target/debug/drove)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${DROVE_BIN:-target/debug/drove}}"
[ -x "$bin" ] || { echo "wheel: no drove binary at $bin" >&2; exit 1; }

dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

wheel="$(python3 packaging/python-server/build_wheel.py "$bin" --out-dir "$dir/wheels")"
echo "wheel: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q --no-index --disable-pip-version-check "$wheel"
drove="$dir/venv/bin/drove"
[ -x "$drove" ] || { echo "wheel: FAILED: pip installed no bin/drove" >&2; exit 1; }
"$drove" --version
found="$("$dir/venv/bin/python" -c 'import drove_server; print(drove_server.binary_path())')"
[ "$found" -ef "$drove" ] || { echo "wheel: FAILED: binary_path() is $found, not $drove" >&2; exit 1; }
"$dir/venv/bin/python" -m drove_server --version >/dev/null

"$drove" serve --db "$dir/wheel.db" --bind 127.0.0.1:0 >"$dir/out" 2>"$dir/log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^drove listening on ' "$dir/out" && break; sleep 0.1; done
url="$(sed -n 's/^drove listening on //p' "$dir/out")"
[ -n "$url" ] || { echo "wheel: FAILED: the installed drove serve did not start:" >&2; cat "$dir/log" >&2; exit 1; }

# A child that answers its payload doubled: the result comes back through the installed binary.
"$drove" worker --server "$url" --queue wheel -- \
  "$dir/venv/bin/python" -c 'import json,sys; print(json.dumps({"doubled": 2 * json.load(sys.stdin)}))' \
  >"$dir/worker.out" 2>"$dir/worker.log" &
pids+=($!)
result="$(timeout 120 "$drove" submit --server "$url" wheel 21 --wait)"
if [ "$result" != '{"doubled":42}' ]; then
  echo "wheel: FAILED: the job answered '$result', expected {\"doubled\":42}" >&2
  cat "$dir/worker.log" "$dir/log" >&2
  exit 1
fi
echo "wheel: ok (installed drove served, worked and answered $result)"
