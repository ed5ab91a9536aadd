// One-by-one submits from a web tier (issue 19): CALLERS concurrent callers in one Node process,
// each awaiting its acknowledgement before sending the next, JOBS in all, through one Drove
// client (keep-alive) to a fresh `drove serve` (durable: fsync per commit; --relaxed: not).
// Reports submits/s, the p50/p99 of an acknowledgement, and CPU per submit in the server and in
// Node.
//
//   npm run build && node bench/submit.mjs [--jobs 20000] [--callers 64] [--runs 3] [--relaxed]

import { parseArgs } from 'node:util';

import { Drove } from '../dist/index.js';
import { median, quantile, serve } from './server.mjs';

const { values: opt } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    callers: { type: 'string', default: '64' },
    runs: { type: 'string', default: '1' },
    relaxed: { type: 'boolean', default: false },
  },
});
const JOBS = Number(opt.jobs);
const CALLERS = Number(opt.callers);

async function run(r) {
  const server = await serve({ relaxed: opt.relaxed });
  try {
    const drove = new Drove({ url: server.url });
    await drove.submit('warm', null);
    const lat = [];
    let next = 0;
    const cpu0 = process.cpuUsage();
    const server0 = server.cpuMs();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CALLERS }, async () => {
        while (next < JOBS) {
          const i = next++;
          const t = performance.now();
          await drove.submit('w1', { i });
          lat.push(performance.now() - t);
        }
      }),
    );
    const s = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const serverMs = server.cpuMs() - server0;
    const counts = (await drove.queue('w1')).counts;
    if (counts.queued !== JOBS) throw new Error(`expected ${JOBS} queued, the queue holds ${JSON.stringify(counts)}`);
    lat.sort((a, b) => a - b);
    const line = {
      bench: 'node-submit-one-by-one',
      run: r,
      jobs: JOBS,
      callers: CALLERS,
      durability: opt.relaxed ? 'relaxed' : 'durable',
      jobs_per_s: Math.round(JOBS / s),
      p50_ms: Number(quantile(lat, 0.5).toFixed(2)),
      p99_ms: Number(quantile(lat, 0.99).toFixed(2)),
      server_cpu_us_per_job: Number(((serverMs * 1000) / JOBS).toFixed(1)),
      node_cpu_us_per_job: Number(((cpu.user + cpu.system) / JOBS).toFixed(1)),
    };
    console.log(JSON.stringify(line));
    return line;
  } finally {
    await server.stop();
  }
}

const lines = [];
for (let r = 1; r <= Number(opt.runs); r++) lines.push(await run(r));
const m = (k) => median(lines.map((l) => l[k]));
console.log(JSON.stringify({ summary: 'median', runs: lines.length, jobs_per_s: m('jobs_per_s'), p50_ms: m('p50_ms'), p99_ms: m('p99_ms'), server_cpu_us_per_job: m('server_cpu_us_per_job'), node_cpu_us_per_job: m('node_cpu_us_per_job') }));
