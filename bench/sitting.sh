#!/usr/bin/env bash
# One benchmark sitting (BENCH.md): the raw-SQLite ceiling, the peer lab and `drove bench`,
# one after the other on the same machine state, then the ratios.
#
#   bench/sitting.sh                      # RUNS=3, peers bullmq + graphile-worker-tuned
#   RUNS=1 PEERS="bullmq" bench/sitting.sh
#
# Needs ../shared beside the repo (the peer lab), PostgreSQL on 127.0.0.1:5432 and Redis on
# 127.0.0.1:6379 (the lab starts what is missing). Results: bench/results/<UTC>/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs="${RUNS:-3}"
peers="${PEERS:-bullmq graphile-worker-tuned}"
pg="${DROVE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
out="$repo/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
log() { echo "[sitting] $*" >&2; }

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
{ uname -a; nproc; cat /proc/loadavg; } > "$out/machine.txt"

log "building drove (release)"
cargo build --release --locked -p drove-cli >&2
drove="$repo/target/release/drove"

log "raw SQLite ceiling (../shared/tools/sqlite_limit.py), in the results directory's disk"
(cd "$out" && python3 "$repo/../shared/tools/sqlite_limit.py") | tee "$out/sqlite_limit.txt" >&2

log "peer lab: $peers, W1-W5, $runs run(s)"
(cd "$repo/../shared/peers" && RUNS="$runs" PEERS="$peers" SCENARIOS="W1 W2 W3 W4 W5" \
  RESULTS_FILE="$out/peers.jsonl" ./run-node-peers.sh > /dev/null)

# The peers (and each store's runs) leave PostgreSQL with dirty buffers that its checkpointer
# would write out during the next runs, taking fsync time from whatever runs then: flush them
# before each phase, so each one starts from the same quiet disk.
settle() {
  psql -q "$pg" -c CHECKPOINT > /dev/null 2>&1 || log "CHECKPOINT failed (is PostgreSQL up?)"
  sync
}

for store in sqlite postgres; do
  settle
  for mode in inproc http; do
    for w in w1 w2 w3 w4 w5 w6; do
      log "drove bench $w --store $store --mode $mode"
      "$drove" bench "$w" --store "$store" --mode "$mode" --database-url "$pg" --runs "$runs" \
        --json --dir "$out" >> "$out/drove.jsonl"
    done
  done
done
settle
for mode in inproc http; do
  log "drove bench w1 --relaxed-durability --mode $mode"
  "$drove" bench w1 --mode "$mode" --relaxed-durability --runs "$runs" --json --dir "$out" >> "$out/drove.jsonl"
done

python3 "$repo/bench/compare.py" "$out" | tee "$out/report.md"
log "results in $out"
