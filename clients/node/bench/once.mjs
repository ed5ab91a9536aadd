// The client's cost of once() calls that join an in-flight call for the same key in the same
// process (the reuse path): CALLS concurrent once() calls for one key while its job is held
// running, then the job is let go and every caller is answered. Prints the CPU time per call
// to make the calls, and to answer them, and the HTTP requests it took.
//
//   npm run build && node bench/once.mjs [--calls 100000] [--signal none|shared|each]
//
// With --signal shared, every caller passes the same AbortSignal (an application's shutdown
// signal); with each, every caller its own (made before the timed loop). Callers with a signal
// take the path that cannot hand out one shared promise.
// The server binary is DROVE_BIN, else <repo>/target/release/drove, else target/debug/drove.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Drove } from '../dist/index.js';

const { values: opt } = parseArgs({
  options: {
    calls: { type: 'string', default: '100000' },
    signal: { type: 'string', default: 'none' },
  },
});
const CALLS = Number(opt.calls);
const here = dirname(fileURLToPath(import.meta.url));
const target = resolve(here, '..', '..', '..', 'target');
const bin = process.env.DROVE_BIN || [join(target, 'release', 'drove'), join(target, 'debug', 'drove')].find(existsSync);
if (!bin || !existsSync(bin)) {
  console.error('no drove binary: cargo build -p drove-cli, or set DROVE_BIN');
  process.exit(1);
}

const dir = await mkdtemp(join(tmpdir(), 'drove-node-bench-'));
const proc = spawn(bin, ['serve', '--db', join(dir, 'drove.db'), '--bind', '127.0.0.1:0'], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, RUST_LOG: 'warn' },
});
const url = await new Promise((res, rej) => {
  createInterface({ input: proc.stdout }).on('line', (l) => {
    const m = /^drove listening on (\S+)$/.exec(l);
    if (m) res(m[1]);
  });
  proc.once('exit', (c) => rej(new Error(`drove serve exited (${c})`)));
});

try {
  let requests = 0;
  const drove = new Drove({ url, fetch: (input, init) => (requests++, fetch(input, init)) });
  let release;
  const held = new Promise((r) => (release = r));
  let started;
  const running = new Promise((r) => (started = r));
  const worker = new Drove({ url }).worker('once-bench', async () => {
    started();
    await held;
    return { answer: 42 };
  });

  const shared = opt.signal === 'shared' ? new AbortController().signal : undefined;
  const signals = Array.from({ length: CALLS }, () => (opt.signal === 'each' ? new AbortController().signal : shared));
  const first = drove.once('once-bench', 'k', null, { signal: shared });
  await running; // the job runs: every further call joins the one in flight

  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const calls = new Array(CALLS);
  for (let i = 0; i < CALLS; i++) calls[i] = drove.once('once-bench', 'k', null, { signal: signals[i] });
  const callCpu = process.cpuUsage(cpu0);
  const callMs = performance.now() - t0;

  const cpu1 = process.cpuUsage();
  release();
  const answers = await Promise.all([first, ...calls]);
  const answerCpu = process.cpuUsage(cpu1);
  if (!answers.every((a) => a.answer === 42)) throw new Error('a caller got another answer');
  await worker.close();

  const us = (c) => (c.user + c.system) / CALLS;
  console.log(
    JSON.stringify({
      bench: 'node-once-join',
      calls: CALLS,
      signal: opt.signal,
      call_cpu_us_per_call: Number(us(callCpu).toFixed(3)),
      call_wall_ms: Math.round(callMs),
      answer_cpu_us_per_call: Number(us(answerCpu).toFixed(3)),
      http_requests: requests,
      node: process.version,
    }),
  );
} finally {
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
  await rm(dir, { recursive: true, force: true });
}
