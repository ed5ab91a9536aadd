// A P2-like drain (issue 19): JOBS jobs whose handler holds IO_MS of I/O (a timer standing for a
// short database transaction), CONCURRENCY at a time. First a plain loop runs the same handlers
// with no queue (CONCURRENCY async loops taking items from an array), then a Drove worker of the
// same concurrency drains the same number of jobs from a fresh durable `drove serve`. Reports
// both rates and their ratio (the target: >= 0.9).
//
//   npm run build && node bench/p2like.mjs [--jobs 2000] [--concurrency 5] [--io-ms 5] [--runs 3]

import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { Drove } from '../dist/index.js';
import { median, serve } from './server.mjs';

const { values: opt } = parseArgs({
  options: {
    jobs: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '5' },
    'io-ms': { type: 'string', default: '5' },
    runs: { type: 'string', default: '1' },
  },
});
const JOBS = Number(opt.jobs);
const C = Number(opt.concurrency);
const IO_MS = Number(opt['io-ms']);
const handler = async () => {
  await sleep(IO_MS);
  return null;
};

async function plainLoop() {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < JOBS) {
        next++;
        await handler();
      }
    }),
  );
  return JOBS / ((performance.now() - t0) / 1000);
}

async function drove() {
  const server = await serve();
  try {
    const client = new Drove({ url: server.url });
    await client.submitMany(Array.from({ length: JOBS }, (_, i) => ({ queue: 'p2', payload: { i } })));
    let acked = 0;
    let first = 0;
    let done;
    const all = new Promise((r) => (done = r));
    const worker = client.worker(
      'p2',
      async () => {
        if (first === 0) first = performance.now();
        return handler();
      },
      { concurrency: C },
    );
    worker.on('completed', () => {
      if (++acked === JOBS) done(performance.now());
    });
    const end = await all;
    await worker.close();
    return JOBS / ((end - first) / 1000);
  } finally {
    await server.stop();
  }
}

const lines = [];
for (let r = 1; r <= Number(opt.runs); r++) {
  const loop = await plainLoop();
  const queue = await drove();
  const line = { bench: 'node-p2-like', run: r, jobs: JOBS, concurrency: C, io_ms: IO_MS, loop_jobs_per_s: Math.round(loop), drove_jobs_per_s: Math.round(queue), ratio: Number((queue / loop).toFixed(3)) };
  console.log(JSON.stringify(line));
  lines.push(line);
}
console.log(JSON.stringify({ summary: 'median', runs: lines.length, loop_jobs_per_s: median(lines.map((l) => l.loop_jobs_per_s)), drove_jobs_per_s: median(lines.map((l) => l.drove_jobs_per_s)), ratio: median(lines.map((l) => l.ratio)) }));
