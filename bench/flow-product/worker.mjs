#!/usr/bin/env node
// One Node worker process of the flow benchmark: a drove-client worker on one queue whose
// handler makes one call to the downstream per job (the job's payload as body). A 429 is
// reported as throttled: `Retry-After-Ms` when the provider sends it, else
// `Throttled.fromResponse` (Retry-After in seconds). Any other non-2xx is a retryable failure.
//
//   node worker.mjs --server URL --queue NAME --concurrency N --downstream URL [--name W]
//
// Prints `{"ready": true}` once the worker claims, and `{"closed": ..., counts}` when it stops.
// Exits when its stdin ends (the runner died) or on SIGTERM.

import { parseArgs } from 'node:util';

import { Drove, Throttled } from '../../clients/node/dist/index.js';

const { values: opt } = parseArgs({
  options: {
    server: { type: 'string' },
    queue: { type: 'string' },
    concurrency: { type: 'string', default: '32' },
    downstream: { type: 'string' },
    name: { type: 'string' },
  },
});

const name = opt.name ?? `flow-${process.pid}`;
const drove = new Drove({ url: opt.server });
const callBase = `${opt.downstream}/call?w=${encodeURIComponent(name)}`;
const counts = { ok: 0, throttled: 0, failed: 0, completed: 0 };

const worker = drove.worker(
  opt.queue,
  async ({ id, attempt, payload, signal }) => {
    const res = await fetch(`${callBase}&job=${encodeURIComponent(id)}&att=${attempt}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload ?? {}),
      signal,
    });
    const text = await res.text();
    if (res.status === 429) {
      counts.throttled += 1;
      const ms = res.headers.get('retry-after-ms');
      throw ms !== null && ms !== '' ? new Throttled(Number(ms), 'throttled: HTTP 429') : Throttled.fromResponse(res);
    }
    if (!res.ok) {
      counts.failed += 1;
      throw new Error(`downstream answered ${res.status}: ${text}`);
    }
    counts.ok += 1;
    return null;
  },
  { concurrency: Number(opt.concurrency), name, stuckAfterMs: 0 },
);
worker.on('completed', () => (counts.completed += 1));
worker.on('error', (err) => process.stderr.write(`worker ${name}: ${err?.message ?? err}\n`));
worker.on('refused', (job, err) => process.stderr.write(`worker ${name}: end of ${job.id} refused: ${err?.message}\n`));
process.stdout.write(`${JSON.stringify({ ready: true, name, pid: process.pid })}\n`);

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  // The runner stops workers once the measurement is over: nothing left to hand back gracefully.
  const timer = setTimeout(() => process.exit(code), 2_000);
  timer.unref();
  await worker.close({ graceMs: 0 }).catch(() => undefined);
  process.stdout.write(`${JSON.stringify({ closed: true, name, counts })}\n`);
  process.exit(code);
}
process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => void stop(0));
process.stdin.on('end', () => void stop(0));
process.stdin.on('error', () => void stop(0));
process.stdin.resume();
