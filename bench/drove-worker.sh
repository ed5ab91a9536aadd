#!/usr/bin/env bash
# End-to-end no-op jobs per second through `drove worker` running a trivial command (`true`)
# per job: 2,000 jobs submitted in two batches to a fresh `drove serve` (SQLite, durable), then
# one `drove worker --concurrency 32 -- true` drains them; timed until the queue counts 2,000
# succeeded. A process is started per job, so this measures the child-process protocol.
#
#   bench/drove-worker.sh [RUNS]      # needs target/release/drove (cargo build --release -p drove-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
drove="${DROVE_BIN:-$PWD/target/release/drove}"
runs="${1:-3}"
port=7179
for run in $(seq 1 "$runs"); do
  dir=$(mktemp -d)
  "$drove" serve --db "$dir/drove.db" --bind "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
  for b in 0 1; do
    python3 -c "import json; print(json.dumps({'jobs': [{'queue': 'p', 'payload': {'i': $b * 1000 + i}} for i in range(1000)]}))" |
      curl -sf -XPOST -H 'content-type: application/json' --data-binary @- "http://127.0.0.1:$port/v1/jobs/batch" > /dev/null
  done
  start=$(date +%s.%N)
  "$drove" worker --server "http://127.0.0.1:$port" --queue p --concurrency 32 -- true > "$dir/worker.log" 2>&1 &
  worker=$!
  until curl -s "http://127.0.0.1:$port/v1/queues/p" | grep -q '"succeeded":2000'; do sleep 0.05; done
  end=$(date +%s.%N)
  python3 -c "print('run $run: 2000 jobs in %.2f s: %.0f jobs/s' % ($end - $start, 2000 / ($end - $start)))"
  kill "$worker" "$server"; wait "$worker" "$server" 2> /dev/null || true
  rm -rf "$dir"
done
