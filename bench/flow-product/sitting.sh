#!/usr/bin/env bash
# One sitting of the flow benchmark through the real product: every cell RUNS times (default 3),
# interleaved (run 1 of every cell, then run 2, ...) so that the machine's drift touches every
# cell alike, then the markdown table (report.mjs): median of the runs, spread, targets met, and
# the simulator's figure for the nearest cell (`drove bench flow --json`, run first, alone).
#
#   bench/flow-product/sitting.sh [RUNS]
#   DROVE_BIN=/path/to/drove  QUICK=1 (the --quick timeline)  SIM=0 (skip the simulator)
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres  PG=0 (skip the PostgreSQL cells)
#
# Results: bench/flow-product/results/<UTC>/ (runs.jsonl, sim.jsonl, report.md, logs); not
# committed. Needs clients/node/dist (cd clients/node && npm ci && npm run build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
runs="${1:-3}"
if [ -z "${DROVE_BIN:-}" ]; then
  for b in "$repo/target/release/drove" "$repo/target/debug/drove"; do
    if [ -x "$b" ]; then DROVE_BIN="$b"; break; fi
  done
fi
: "${DROVE_BIN:?set DROVE_BIN to a drove binary}"
db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
out="${OUT:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
[ -f "$repo/clients/node/dist/index.js" ] || { echo "build the Node client first: cd clients/node && npm ci && npm run build" >&2; exit 1; }
# One binary for the whole sitting, even if the one at DROVE_BIN is replaced meanwhile.
src="$DROVE_BIN"
cp "$src" "$out/drove"
DROVE_BIN_SOURCE="$src, modified $(date -u -r "$src" +%Y-%m-%dT%H:%M:%SZ), sha256 $(sha256sum "$out/drove" | cut -c1-16)"
DROVE_BIN="$out/drove"
export DROVE_BIN DROVE_BIN_SOURCE

cells=(
  "--scenario A"
  "--scenario B --worker cli"
  "--scenario B --worker node"
  "--scenario B --worker node --retry-after s"
  "--scenario C --rho 0.1"
  "--scenario C --rho 0.3"
  "--scenario C --rho 0.6"
)
if [ "${PG:-1}" = 1 ]; then
  cells+=(
    "--scenario A --store postgres --database-url $db"
    "--scenario B --worker node --store postgres --nodes 2 --database-url $db"
    "--scenario C --rho 0.6 --store postgres --database-url $db"
  )
fi

start=$(date +%s)
echo "sitting: $DROVE_BIN_SOURCE, $runs runs of ${#cells[@]} cells, results in $out" >&2
if [ "${SIM:-1}" = 1 ]; then
  echo "simulator: $DROVE_BIN bench flow --json" >&2
  "$DROVE_BIN" bench flow --json > "$out/sim.jsonl" 2> "$out/sim.log" || echo "the simulator failed (see $out/sim.log)" >&2
fi
for run in $(seq 1 "$runs"); do
  for cell in "${cells[@]}"; do
    # shellcheck disable=SC2086
    set -- $cell
    seed=$run
    t=$(date +%s)
    if node "$here/run.mjs" "$@" --seed "$seed" "${quick[@]}" >> "$out/runs.jsonl" 2>> "$out/runs.log"; then
      echo "run $run: $cell: $(( $(date +%s) - t )) s" >&2
    else
      echo "run $run: $cell: FAILED (see $out/runs.log)" >&2
    fi
  done
done
node "$here/report.mjs" "$out" | tee "$out/report.md"
rm -f "$out/drove"
echo "sitting took $(( $(date +%s) - start )) s" >&2
