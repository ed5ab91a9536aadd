// End-to-end no-op jobs per second with a Node worker (BENCH.md W2, from Node): enqueue N jobs
// through POST /v1/jobs/batch, then drain them with one drove-client worker of concurrency C
// against its own `drove serve` on a fresh SQLite database (durable: fsync per commit).
//
//   npm run build && node bench/noop.mjs [--jobs 20000] [--concurrency 32] [--runs 3] [--relaxed]
//                                        [--max-prefetch N (the worker's maxPrefetch)]
//
// The server binary is DROVE_BIN, else <repo>/target/release/drove (build it with
// `cargo build --release -p drove-cli`). Prints one JSON line per run, then a summary line with
// the median. Figures per run:
// - jobs_per_s: from the first handler start to the last handler end (BullMQ W2's definition),
// - acked_jobs_per_s: from the first handler start until the server acknowledged every
//   completion (every job is `succeeded` in the store), which is the one to quote,
// - worker_requests_per_job: the worker's requests (claims, finishes, anything else) from its
//   start until then, per job.

import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';

import { Drove } from '../dist/index.js';
import { median, serve } from './server.mjs';

const { values: opt } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    runs: { type: 'string', default: '1' },
    relaxed: { type: 'boolean', default: false },
    'max-prefetch': { type: 'string' },
  },
});
const JOBS = Number(opt.jobs);
const CONCURRENCY = Number(opt.concurrency);
const RUNS = Number(opt.runs);
async function once(run) {
  const server = await serve({ relaxed: opt.relaxed });
  try {
    // Requests per endpoint (ids folded), to see what the worker costs the server.
    const requests = new Map();
    // The worker's requests from its start until every completion was acknowledged.
    let workerRequests = 0;
    let counting = false;
    const countingFetch = (input, init) => {
      const k = String(input).replace(/\/\d+\//, "/ID/").replace(server.url, "").replace(/\?.*/, "");
      requests.set(k, (requests.get(k) ?? 0) + 1);
      if (counting) workerRequests += 1;
      return fetch(input, init);
    };
    const drove = new Drove({ url: server.url, fetch: countingFetch });
    const load1 = loadavg()[0];
    const t0 = performance.now();
    const specs = Array.from({ length: JOBS }, (_, i) => ({ queue: 'noop', payload: { i } }));
    await drove.submitMany(specs);
    const enqueueMs = performance.now() - t0;

    const cpu0 = process.cpuUsage();
    const serverCpu0 = server.cpuMs();
    let started = 0;
    let ended = 0;
    let acked = 0;
    let firstStart = 0;
    let lastEnd = 0;
    let allAcked;
    const done = new Promise((r) => (allAcked = r));
    counting = true;
    const worker = drove.worker(
      'noop',
      () => {
        if (started++ === 0) firstStart = performance.now();
        if (++ended === JOBS) lastEnd = performance.now();
        return null;
      },
      { concurrency: CONCURRENCY, ...(opt['max-prefetch'] !== undefined ? { maxPrefetch: Number(opt['max-prefetch']) } : {}) },
    );
    worker.on('completed', () => {
      if (++acked === JOBS) allAcked(performance.now());
    });
    worker.on('refused', (job, err) => console.error(`refused ${job.id}: ${err.message}`));
    const ackedAt = await done;
    counting = false;
    const cpu = process.cpuUsage(cpu0);
    const serverCpu = server.cpuMs() - serverCpu0;
    await worker.close();
    const counts = (await drove.queue('noop')).counts;
    if (counts.succeeded !== JOBS) throw new Error(`expected ${JOBS} succeeded, the queue holds ${JSON.stringify(counts)}`);
    const line = {
      bench: 'node-noop-drain',
      run,
      jobs: JOBS,
      concurrency: CONCURRENCY,
      max_prefetch: opt['max-prefetch'] !== undefined ? Number(opt['max-prefetch']) : 'default',
      durability: opt.relaxed ? 'relaxed (synchronous=NORMAL)' : 'durable (fsync per commit)',
      enqueue_batch_jobs_per_s: Math.round(JOBS / (enqueueMs / 1000)),
      jobs_per_s: Math.round(JOBS / ((lastEnd - firstStart) / 1000)),
      acked_jobs_per_s: Math.round(JOBS / ((ackedAt - firstStart) / 1000)),
      drain_ms: Math.round(ackedAt - firstStart),
      node_cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
      server_cpu_ms: Math.round(serverCpu),
      load1_before: load1,
      load1_after: loadavg()[0],
      node: process.version,
      worker_requests_per_job: Number((workerRequests / JOBS).toFixed(4)),
      requests: Object.fromEntries(requests),
    };
    console.log(JSON.stringify(line));
    return line;
  } finally {
    await server.stop();
  }
}

const lines = [];
for (let r = 1; r <= RUNS; r++) lines.push(await once(r));
console.log(
  JSON.stringify({
    summary: 'median',
    runs: RUNS,
    acked_jobs_per_s: median(lines.map((l) => l.acked_jobs_per_s)),
    jobs_per_s: median(lines.map((l) => l.jobs_per_s)),
    range_acked: [Math.min(...lines.map((l) => l.acked_jobs_per_s)), Math.max(...lines.map((l) => l.acked_jobs_per_s))],
    worker_requests_per_job: median(lines.map((l) => l.worker_requests_per_job)),
  }),
);
