#!/usr/bin/env node
// The flow scenarios A, B, C of ../../../shared/research/flow.md §6 through the real product:
// `drove serve` (SQLite, or PostgreSQL with one or two nodes), its limit service, worker
// processes (drove-client workers in Node processes, or `drove worker -- sh call.sh`) and a
// provider on loopback (downstream.mjs). Prints ONE JSON line per run: settings, figures,
// per-second traces, and each target with its verdict. See README.md.
//
//   node run.mjs --scenario A|B|C [--store sqlite|postgres] [--nodes 1|2] [--seed N] [--quick]
//                [--rho 0.1|0.3|0.6] [--worker node|cli] [--retry-after ms|s] [--queue-burst N] [--verbose]
//
// The server binary is $DROVE_BIN (else <repo>/target/release/drove, else target/debug/drove).
// PostgreSQL: --database-url (or $DROVE_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres);
// each run uses a fresh schema, dropped afterwards. Every process started is killed when the
// run ends, fails, or is interrupted.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Drove } from '../../clients/node/dist/index.js';
import { formatSchedule, mean, median, now, percentile, rng, round } from './lib.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');

// ---- settings per scenario (full; --quick shortens the timeline, not the shape)

/** Scenario A (issue's P4 shape): an adaptive pool, an offline backlog, an online trickle,
 * the provider's capacity stepping 8 -> 3 -> 12 slots of ~50 ms. */
function settingsA(quick) {
  // Quick: the first phase is longer, as it holds the offline lane's ramp from an idle pool.
  const phaseS = quick ? [8, 6, 6] : [15, 15, 15];
  return {
    alone_s: quick ? 5 : 10,
    alone_warm_s: quick ? 1 : 2,
    phases: [8, 3, 12].map((c, i) => ({ c, s: phaseS[i] })),
    settle_s: 2,
    online_per_s: 5,
    mean_ms: 50,
    sigma: 0.3,
    adaptive: { min: 1, max: 32 },
    concurrency: { online: 32, offline: 32 },
    // Enough offline work to keep the provider saturated through every phase (the issue's
    // 2,000 jobs would be gone in the first phase at 8 slots of 50 ms).
    backlog_factor: 1.15,
  };
}

/** Scenario C: one adaptive pool with an online and an offline lane, c = 8, online Poisson at
 * rho of capacity; online alone first (its p99 is the baseline), then the offline backlog. */
function settingsC(quick, rho) {
  return {
    rho,
    c: 8,
    // Online alone from the start: the pool starts at limit 1 and online work piles up in the
    // queue while the limit grows (the cold start, reported apart). The baseline starts once
    // the online queue has stayed (almost) empty for a second, after at least cold_min_s, and
    // lasts baseline_s; then the offline lane is switched on for on_s.
    cold_min_s: quick ? 2 : 3,
    cold_max_s: 30,
    baseline_s: quick ? 5 : 10,
    on_s: quick ? 11 : 35,
    warm_s: 2,
    mean_ms: 50,
    sigma: 0.3,
    adaptive: { min: 1, max: 32 },
    concurrency: { online: 32, offline: 32 },
    backlog_factor: 1.1,
  };
}

/** Scenario B: a queue whose rate is the provider's nominal limit; the provider's limit drops
 * to half without notice and comes back; 429 with Retry-After. */
function settingsB(quick, retryAfter, queueBurst) {
  const phaseS = quick ? 8 : 20;
  return {
    phases: [50, 25, 50].map((r) => ({ r, s: phaseS })),
    settle_s: 5,
    nominal_per_s: 50,
    burst: 0,
    retry_after: retryAfter,
    queue_burst: queueBurst ?? null,
    mean_ms: 20,
    sigma: 0.3,
    concurrency: 16,
    backlog_factor: 1.1,
  };
}

// ---- processes

/** Every child this process started, killed on the way out whatever the way; and what the
 * runs left on disk or in PostgreSQL, removed then too (synchronous: also on a signal). */
const children = new Set();
const leftovers = new Set();
function cleanLeftovers() {
  for (const f of [...leftovers]) {
    leftovers.delete(f);
    try {
      f();
    } catch {}
  }
}
process.on('exit', () => {
  for (const c of children) c.killNow();
  cleanLeftovers();
});

class Child {
  constructor(name, cmd, args, env = {}, { verbose = false } = {}) {
    this.name = name;
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.lines = [];
    this.waiters = [];
    this.stderr = '';
    this.proc.stdin.on('error', () => undefined);
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (c) => {
      this.stderr = (this.stderr + c).slice(-16 * 1024);
      if (verbose) process.stderr.write(`[${name}] ${c}`);
    });
    createInterface({ input: this.proc.stdout }).on('line', (text) => {
      if (verbose) process.stderr.write(`[${name}] ${text}\n`);
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        line = { text };
      }
      this.lines.push(line);
      for (const w of [...this.waiters]) {
        if (w.test(line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    });
    this.exited = new Promise((res) => this.proc.once('exit', (code, signal) => res({ code, signal })));
    this.proc.once('error', (err) => {
      this.stderr += `\nspawn error: ${err.message}`;
    });
    children.add(this);
    void this.exited.then(() => {
      children.delete(this);
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${name} exited before the line it was awaited for\n${this.stderr}`));
    });
  }

  alive() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The first line (seen or to come) passing `test`, within `ms`. */
  line(test, ms, what) {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    if (!this.alive()) return Promise.reject(new Error(`${this.name} is not running\n${this.stderr}`));
    return within(
      new Promise((resolve, reject) => this.waiters.push({ test, resolve, reject })),
      ms,
      `${this.name}: ${what}\n${this.stderr}`,
    );
  }

  /** CPU time (user + system, s) the process has used so far, from /proc (Linux). */
  cpuS() {
    try {
      const f = readFileSync(`/proc/${this.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return null;
    }
  }

  killNow() {
    if (this.alive()) this.proc.kill('SIGKILL');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  async stop(graceMs = 3_000) {
    if (this.alive()) {
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.killNow(), graceMs);
      await this.exited;
      clearTimeout(t);
    }
    await this.exited;
  }
}

function within(p, ms, what) {
  let timer;
  const limit = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** Polls `cond` every 50 ms until it holds: for states only visible by asking (queue counts). */
async function until(cond, what, ms) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export function droveBin() {
  const candidates = [process.env.DROVE_BIN, join(REPO, 'target', 'release', 'drove'), join(REPO, 'target', 'debug', 'drove')];
  const bin = candidates.find((b) => b && existsSync(b));
  if (!bin) throw new Error('no drove binary: set DROVE_BIN (e.g. /work/bin/drove) or build target/release/drove');
  return bin;
}

// ---- one run

/**
 * Runs one scenario and resolves with the result object (what the JSON line holds).
 * opts: {scenario, store, nodes, seed, quick, rho, worker, retryAfter, databaseUrl, verbose}
 */
export async function runScenario(opts) {
  const o = {
    scenario: String(opts.scenario ?? 'A').toUpperCase(),
    store: opts.store ?? 'sqlite',
    nodes: Number(opts.nodes ?? 1),
    seed: Number(opts.seed ?? 1),
    quick: Boolean(opts.quick),
    rho: Number(opts.rho ?? 0.3),
    worker: opts.worker ?? (String(opts.scenario).toUpperCase() === 'B' ? 'cli' : 'node'),
    retryAfter: opts.retryAfter ?? 'ms',
    queueBurst: opts.queueBurst ? Number(opts.queueBurst) : undefined,
    databaseUrl: opts.databaseUrl ?? process.env.DROVE_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    verbose: Boolean(opts.verbose),
  };
  if (!['A', 'B', 'C'].includes(o.scenario)) throw new Error('--scenario A|B|C');
  if (!['sqlite', 'postgres'].includes(o.store)) throw new Error('--store sqlite|postgres');
  if (o.nodes < 1 || o.nodes > 2) throw new Error('--nodes 1|2');
  if (o.nodes > 1 && o.store !== 'postgres') throw new Error('two nodes need --store postgres');
  if (!['node', 'cli'].includes(o.worker)) throw new Error('--worker node|cli');
  // A process per job (`drove worker`) cannot keep 240 calls/s on two cores: A and C run Node workers.
  if (o.worker === 'cli' && o.scenario !== 'B') throw new Error('--worker cli is for scenario B (A and C need up to 240 jobs/s)');
  const started = now();
  const bin = droveBin();
  const run = new Run(o, bin);
  try {
    const result = await run.go();
    result.wall_s = round((now() - started) / 1000, 1);
    return result;
  } finally {
    await run.teardown();
  }
}

class Run {
  constructor(o, bin) {
    this.o = o;
    this.bin = bin;
    this.procs = [];
    this.timers = new Set();
    this.events = null;
    this.log = o.verbose ? (m) => process.stderr.write(`[run ${((now() - (this.t0 ?? now())) / 1000).toFixed(2)}s] ${m}\n`) : () => {};
  }

  spawn(name, cmd, args, env) {
    const c = new Child(name, cmd, args, env, { verbose: this.o.verbose });
    this.procs.push(c);
    return c;
  }

  /** Calls `fn` at `ms` after t0 (a timer of the scenario's timeline). */
  at(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, Math.max(0, this.t0 + ms - now()));
    this.timers.add(t);
  }

  async teardown() {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.stopTracing = true;
    this.events?.abort();
    // Workers first (they would otherwise report a vanished server), then servers, then the provider.
    const order = (c) => (c.name.startsWith('worker') ? 0 : c.name.startsWith('serve') ? 1 : 2);
    for (const rank of [0, 1, 2]) await Promise.all(this.procs.filter((c) => order(c) === rank).map((c) => c.stop()));
    cleanLeftovers();
  }

  // -- the pieces

  async startDownstream(args) {
    const ds = this.spawn('downstream', process.execPath, [join(HERE, 'downstream.mjs'), '--port', '0', '--seed', String(this.o.seed), ...args]);
    const { port } = await ds.line((l) => typeof l.port === 'number', 15_000, 'the downstream to listen');
    this.ds = `http://127.0.0.1:${port}`;
    return this.ds;
  }

  async startServers() {
    this.urls = [];
    let common;
    if (this.o.store === 'postgres') {
      const schema = `flow_${this.o.scenario.toLowerCase()}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
      const url = this.o.databaseUrl;
      leftovers.add(() => spawnSync('psql', [url, '-q', '-c', `DROP SCHEMA IF EXISTS "${schema}" CASCADE`], { stdio: 'ignore', timeout: 15_000 }));
      common = ['--database-url', url, '--schema', schema];
    } else {
      const dir = await mkdtemp(join(tmpdir(), 'drove-flow-product-'));
      leftovers.add(() => rmSync(dir, { recursive: true, force: true }));
      common = ['--db', join(dir, 'drove.db')];
    }
    // One node after the other: the first applies the PostgreSQL migrations.
    for (let i = 0; i < this.o.nodes; i++) {
      const serve = this.spawn(`serve${i + 1}`, this.bin, ['serve', ...common, '--bind', '127.0.0.1:0'], { RUST_LOG: process.env.RUST_LOG ?? 'warn' });
      const l = await serve.line((x) => typeof x.text === 'string' && /^drove listening on /.test(x.text), 60_000, 'drove serve to listen');
      this.urls.push(/^drove listening on (\S+)/.exec(l.text)[1]);
    }
    this.clients = this.urls.map((url) => new Drove({ url }));
    this.drove = this.clients[0];
  }

  async startWorkers(specs) {
    // specs: [{queue, concurrency, node}]
    const ready = [];
    for (const [i, s] of specs.entries()) {
      const server = this.urls[s.node % this.urls.length];
      const name = `w${i + 1}-${s.queue}-n${(s.node % this.urls.length) + 1}`;
      if (this.o.worker === 'cli' && s.cli !== false) {
        const c = this.spawn(`worker-${name}`, this.bin, ['worker', '--server', server, '--queue', s.queue, '--concurrency', String(s.concurrency), '--name', name, '--grace-ms', '0', '--', 'sh', join(HERE, 'call.sh')], {
          DS_URL: this.ds,
          WORKER_NAME: name,
          RUST_LOG: process.env.RUST_LOG ?? 'warn',
        });
        // `drove worker` says nothing when it starts: it is up when the server sees its claim.
        ready.push(sleep(0).then(() => c));
      } else {
        const c = this.spawn(`worker-${name}`, process.execPath, [join(HERE, 'worker.mjs'), '--server', server, '--queue', s.queue, '--concurrency', String(s.concurrency), '--downstream', this.ds, '--name', name]);
        ready.push(c.line((l) => l.ready === true, 30_000, 'the worker to start').then(() => c));
      }
    }
    return Promise.all(ready);
  }

  /** Follows the downstream's call ends (NDJSON): the events the run waits on. */
  follow() {
    const ctrl = new AbortController();
    this.events = ctrl;
    this.accepted = new Map(); // job id -> end (ms, epoch)
    this.watchers = new Set();
    this.callEnds = 0;
    let onConnect;
    const connected = new Promise((res) => (onConnect = res));
    const go = async () => {
      const res = await fetch(`${this.ds}/events`, { signal: ctrl.signal });
      onConnect();
      const dec = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const text = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!text) continue;
          const e = JSON.parse(text);
          this.callEnds += 1;
          if (e.ok) this.accepted.set(e.job, e.end);
          for (const w of [...this.watchers]) w();
        }
      }
    };
    this.followed = go().catch((err) => {
      if (!ctrl.signal.aborted) this.followError = err;
      onConnect();
    });
    return connected;
  }

  /** Resolves once `cond()` holds, checked on every call end the downstream reports. */
  onEvents(cond, ms, what) {
    if (cond()) return Promise.resolve();
    let watcher;
    const p = new Promise((resolve) => {
      watcher = () => {
        if (cond()) {
          this.watchers.delete(watcher);
          resolve();
        }
      };
      this.watchers.add(watcher);
    });
    return within(p, ms, what).finally(() => this.watchers.delete(watcher));
  }

  /** Polls pools/queues every 250 ms: the limits in force over time. */
  trace(pool) {
    this.traces = [];
    this.stopTracing = false;
    const loop = async () => {
      while (!this.stopTracing) {
        const t = now();
        try {
          const [queues, p] = await Promise.all([this.drove.queues(), pool ? this.drove.pool(pool) : Promise.resolve(null)]);
          const q = {};
          for (const x of queues) {
            q[x.name] = {
              running: x.counts.running,
              queued: x.counts.queued,
              scheduled: x.counts.scheduled,
              limit_now: x.limit_now ?? null,
              rate_now: x.rate_now ?? null,
              held_ms: x.held_until ? Math.max(0, Date.parse(x.held_until) - Date.now()) : 0,
            };
          }
          this.traces.push({ t: t - this.t0, pool: p ? { limit: p.limit_now ?? null, offline: p.offline_limit_now ?? null } : null, q });
        } catch (err) {
          this.traceErrors = (this.traceErrors ?? 0) + 1;
        }
        await sleep(250 - (now() - t));
      }
    };
    this.tracing = loop();
  }

  async submitBacklog(queue, n, cls) {
    const jobs = [];
    for (let i = 0; i < n; i++) jobs.push({ queue, payload: { cls, i } });
    await this.drove.submitMany(jobs);
  }

  /** Submits online jobs at the given times (ms after t0); resolves with their ids once all
   * are submitted. The submit time is taken just before the request. */
  async submitOnline(queue, times, cls) {
    const ids = [];
    const pending = [];
    let i = 0;
    for (const at of times) {
      if (at >= (this.stopAt ?? Infinity)) break;
      const wait = this.t0 + at - now();
      if (wait > 0) await sleep(wait);
      if (this.stopSubmitting) break;
      const sub = now();
      const client = this.clients[i % this.clients.length];
      const payload = { cls, sub, i: i++ };
      pending.push(
        submitRetrying(client, queue, payload).then((job) => {
          ids.push(job.id);
          return job.id;
        }),
      );
    }
    await Promise.all(pending);
    return ids;
  }

  async stats() {
    const res = await fetch(`${this.ds}/stats`);
    return res.json();
  }

  async settings() {
    let version = '';
    try {
      version = spawnSync(this.bin, ['--version'], { encoding: 'utf8', timeout: 10_000 }).stdout.trim();
    } catch {}
    let built = null;
    try {
      built = statSync(this.bin).mtime.toISOString();
    } catch {}
    return { binary: process.env.DROVE_BIN_SOURCE || this.bin, binary_version: version, binary_mtime: built };
  }

  // -- the scenarios

  async go() {
    const o = this.o;
    const base = {
      scenario: o.scenario,
      store: o.store,
      nodes: o.nodes,
      seed: o.seed,
      quick: o.quick,
      worker: o.worker,
      ...(await this.settings()),
      load_before: round(loadavg()[0], 2),
    };
    let out;
    if (o.scenario === 'A') out = await this.scenarioA();
    else if (o.scenario === 'B') out = await this.scenarioB();
    else out = await this.scenarioC();
    if (this.followError) throw this.followError;
    // CPU seconds per process over the run: on two shared cores, a saturated server or worker
    // is part of what the figures show.
    const cpu = {};
    for (const c of this.procs) cpu[c.name] = round(c.cpuS(), 2);
    cpu.runner = round(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6, 2);
    const targets = out.targets.map((t) => {
      const value = t.value;
      const pass = Number.isFinite(value) && (t.op === '>=' ? value >= t.bound : value <= t.bound);
      return { ...t, value: round(value), pass };
    });
    return {
      ...base,
      cell: out.cell,
      pass: targets.every((t) => t.pass),
      failed: targets.filter((t) => !t.pass).map((t) => t.name),
      targets,
      figures: out.figures,
      settings: out.settings,
      series: out.series,
      load_after: round(loadavg()[0], 2),
      cpu_s: cpu,
      trace_errors: this.traceErrors ?? 0,
    };
  }

  /** Common to A and C: a pool with an online and an offline lane. */
  async poolSetup(s, slotsSchedule, backlog) {
    await this.startDownstream(['--mode', 'concurrency', '--slots', formatSchedule(slotsSchedule), '--mean-ms', String(s.mean_ms), '--sigma', String(s.sigma)]);
    await this.startServers();
    await this.drove.setPool('prov', { adaptive: s.adaptive });
    await this.drove.setQueue('on', { pool: 'prov', lane: 'online' });
    await this.drove.setQueue('off', { pool: 'prov', lane: 'offline', paused: true });
    await this.submitBacklog('off', backlog, 'off');
    await this.follow();
    // Online and offline work in separate worker processes (separate slots per class); with
    // two nodes, the offline worker talks to the second one.
    await this.startWorkers([
      { queue: 'on', concurrency: s.concurrency.online, node: 0 },
      { queue: 'off', concurrency: s.concurrency.offline, node: 1 },
    ]);
  }

  async finishPool(onlineIds) {
    // Stop offline work; every online job must still end, every call in flight must end.
    await this.drove.setQueue('off', { paused: true });
    const ids = await onlineIds;
    await this.onEvents(() => ids.every((id) => this.accepted.has(id)), 60_000, 'every online job to be served');
    await until(
      async () => {
        const qs = await this.drove.queues();
        const st = await (await fetch(`${this.ds}/stats?light=1`)).json();
        return qs.every((q) => q.counts.running === 0) && st.busy === 0 && st.queued === 0;
      },
      'the runs in flight to end',
      60_000,
    );
    this.stopTracing = true;
    await this.tracing;
    return ids;
  }

  poisson(perS, fromMs, toMs, seedSalt) {
    const rand = rng(this.o.seed * 1_000_003 + seedSalt);
    const times = [];
    for (let t = fromMs; ; ) {
      t += (-Math.log(1 - rand()) / perS) * 1000;
      if (t >= toMs) break;
      times.push(t);
    }
    return times;
  }

  async scenarioA() {
    const s = settingsA(this.o.quick);
    const aloneMs = s.alone_s * 1000;
    const phases = [];
    let t = aloneMs;
    for (const p of s.phases) {
      phases.push({ c: p.c, from: t, to: t + p.s * 1000 });
      t += p.s * 1000;
    }
    const endMs = t;
    const slots = [[0, s.phases[0].c], ...phases.slice(1).map((p) => [p.from, p.c])];
    const capacityJobs = phases.reduce((a, p) => a + (p.c * (p.to - p.from)) / s.mean_ms, 0);
    const backlog = Math.ceil(capacityJobs * s.backlog_factor);
    await this.poolSetup(s, slots, backlog);

    const online = this.poisson(s.online_per_s, 0, endMs, 1);
    await this.start();
    this.trace('prov');
    this.at(aloneMs, () => void this.drove.setQueue('off', { paused: false }).catch((e) => (this.failure = e)));
    const onlineIds = this.submitOnline('on', online, 'on');
    await sleep(this.t0 + endMs - now());
    this.log('timeline over');
    const ids = await this.finishPool(onlineIds);
    if (this.failure) throw this.failure;
    const st = await this.stats();
    const out = measureA(s, st, this.t0, phases, endMs, this.traces, backlog);
    out.figures.online_submitted = ids.length;
    return out;
  }

  async scenarioC() {
    const s = settingsC(this.o.quick, this.o.rho);
    const capPerS = (s.c * 1000) / s.mean_ms;
    const backlog = Math.ceil(capPerS * s.on_s * s.backlog_factor);
    await this.poolSetup(s, [[0, s.c]], backlog);
    const online = this.poisson(s.rho * capPerS, 0, (s.cold_max_s + s.baseline_s + s.on_s) * 1000, 3);
    await this.start();
    this.trace('prov');
    const onlineIds = this.submitOnline('on', online, 'on');
    const coldMs = await this.onlineSettled(s.cold_min_s * 1000, s.cold_max_s * 1000);
    const onMs = coldMs + s.baseline_s * 1000;
    const endMs = onMs + s.on_s * 1000;
    this.stopAt = endMs;
    this.log(`online queue settled at ${coldMs} ms; offline on at ${onMs} ms`);
    this.at(onMs, () => void this.drove.setQueue('off', { paused: false }).catch((e) => (this.failure = e)));
    await sleep(this.t0 + endMs - now());
    const ids = await this.finishPool(onlineIds);
    if (this.failure) throw this.failure;
    const st = await this.stats();
    const out = measureC(s, st, this.t0, coldMs, onMs, endMs, this.traces, backlog);
    out.figures.online_submitted = ids.length;
    out.figures.online_done = st.calls.filter((c) => c[3] === 'on' && c[4] === 1).length;
    out.figures.max_attempt = Math.max(0, ...st.calls.map((c) => c[5]));
    return out;
  }

  async scenarioB() {
    const s = settingsB(this.o.quick, this.o.retryAfter, this.o.queueBurst);
    const phases = [];
    let t = 0;
    for (const p of s.phases) {
      phases.push({ r: p.r, from: t, to: t + p.s * 1000 });
      t += p.s * 1000;
    }
    const endMs = t;
    const rates = phases.map((p) => [p.from, p.r]);
    await this.startDownstream(['--mode', 'rate', '--rates', formatSchedule(rates), '--burst', String(s.burst), '--retry-after', s.retry_after, '--mean-ms', String(s.mean_ms), '--sigma', String(s.sigma)]);
    await this.startServers();
    const rate = { limit: s.nominal_per_s, periodMs: 1000 };
    if (s.queue_burst) rate.burst = s.queue_burst;
    await this.drove.setQueue('b', { rate, paused: true });
    const backlog = Math.ceil((s.nominal_per_s * endMs * s.backlog_factor) / 1000);
    await this.submitBacklog('b', backlog, 'b');
    await this.follow();
    // One worker process per node, sharing the concurrency.
    const per = Math.ceil(s.concurrency / this.o.nodes);
    await this.startWorkers(Array.from({ length: this.o.nodes }, (_, i) => ({ queue: 'b', concurrency: per, node: i })));
    await this.start();
    this.trace(null);
    await this.drove.setQueue('b', { paused: false });
    await sleep(this.t0 + endMs - now());
    await this.drove.setQueue('b', { paused: true });
    await until(
      async () => {
        const q = await this.drove.queue('b');
        const st = await (await fetch(`${this.ds}/stats?light=1`)).json();
        return q.counts.running === 0 && st.busy === 0;
      },
      'the runs in flight to end',
      60_000,
    );
    this.stopTracing = true;
    await this.tracing;
    const q = await this.drove.queue('b');
    const st = await this.stats();
    return measureB(s, st, this.t0, phases, endMs, this.traces, backlog, q, this.o.nodes);
  }

  /** Resolves (ms after t0) with the start of the first second, after `minMs`, through which
   * every trace showed at most one online job waiting in the queue: the cold start is over. */
  async onlineSettled(minMs, maxMs) {
    const found = () => {
      const ts = this.traces.filter((x) => x.t >= minMs);
      for (let i = 0; i < ts.length; i++) {
        let j = i;
        while (j < ts.length && (ts[j].q.on?.queued ?? 0) <= 1) {
          if (ts[j].t - ts[i].t >= 1000) return ts[i].t;
          j++;
        }
        i = j;
      }
      return null;
    };
    for (;;) {
      const at = found();
      if (at !== null) return at;
      if (now() - this.t0 > maxMs) return now() - this.t0;
      await sleep(250);
    }
  }

  /** t0: the provider's schedules start; the timeline counts from here. */
  async start() {
    const res = await fetch(`${this.ds}/start`, { method: 'POST' });
    this.t0 = (await res.json()).t0;
  }
}

async function submitRetrying(client, queue, payload) {
  for (let i = 0; ; i++) {
    try {
      return await client.submit(queue, payload);
    } catch (err) {
      if (i >= 5 || !err?.transient) throw err;
      await sleep(100 * 2 ** i);
    }
  }
}

// ---- figures

/** The downstream's calls, times in ms after t0. */
function callsOf(st, t0) {
  return st.calls.map((c) => ({
    arr: c[0] - t0,
    st: c[1] - t0,
    end: c[2] - t0,
    cls: c[3],
    ok: c[4] === 1,
    att: c[5],
    job: c[6],
    sub: c[7] ? c[7] - t0 : null,
    w: c[8],
    drawn: c[9],
  }));
}

const inWin = (x, a, b) => x >= a && x < b;

/** Slot-busy time of `calls` inside [a, b), ms. */
function busyMs(calls, a, b) {
  let sum = 0;
  for (const c of calls) if (c.ok) sum += Math.max(0, Math.min(c.end, b) - Math.max(c.st, a));
  return sum;
}

function traceMedian(traces, a, b, pick) {
  return median(traces.filter((x) => inWin(x.t, a, b)).map(pick).filter((v) => v !== null && v !== undefined));
}

/** Per-second series (for the JSON line): the limits and what the provider saw. */
function perSecond(calls, samples, traces, t0, endMs, extra = {}) {
  const n = Math.ceil(endMs / 1000);
  const out = { t: [], ...Object.fromEntries(Object.keys(extra).map((k) => [k, []])) };
  const cols = { ok_on: [], ok_off: [], ok: [], rejected: [], ds_busy: [], ds_queued: [], capacity: [] };
  Object.assign(out, cols);
  for (let i = 0; i < n; i++) {
    const a = i * 1000;
    const b = a + 1000;
    out.t.push(i);
    out.ok_on.push(calls.filter((c) => c.ok && c.cls === 'on' && inWin(c.end, a, b)).length);
    out.ok_off.push(calls.filter((c) => c.ok && c.cls === 'off' && inWin(c.end, a, b)).length);
    out.ok.push(calls.filter((c) => c.ok && inWin(c.arr, a, b)).length);
    out.rejected.push(calls.filter((c) => !c.ok && inWin(c.arr, a, b)).length);
    const ss = samples.filter((x) => inWin(x[0] - t0, a, b));
    out.ds_busy.push(round(mean(ss.map((x) => x[1])), 1));
    out.ds_queued.push(round(mean(ss.map((x) => x[2])), 1));
    out.capacity.push(ss.length ? ss[ss.length - 1][3] : null);
    for (const [k, pick] of Object.entries(extra)) out[k].push(round(traceMedian(traces, a, b, pick), 1));
  }
  return out;
}

function latencies(calls, pick, from) {
  return calls.filter((c) => c.ok && pick(c)).map((c) => c.end - (from === 'sub' ? c.sub : c.arr));
}

function measureA(s, st, t0, phases, endMs, traces, backlog) {
  const calls = callsOf(st, t0);
  const online = (c) => c.cls === 'on';
  const aloneFrom = s.alone_warm_s * 1000;
  const aloneTo = s.alone_s * 1000;
  const aloneJob = latencies(calls, (c) => online(c) && inWin(c.sub, aloneFrom, aloneTo), 'sub');
  const aloneCall = latencies(calls, (c) => online(c) && inWin(c.sub, aloneFrom, aloneTo), 'arr');
  const u = {
    job_p50_ms: percentile(aloneJob, 0.5),
    job_p99_ms: percentile(aloneJob, 0.99),
    call_p50_ms: percentile(aloneCall, 0.5),
    call_p99_ms: percentile(aloneCall, 0.99),
    n: aloneJob.length,
  };
  const figures = { unloaded: mapRound(u), phases: [] };
  const targets = [];
  const settle = s.settle_s * 1000;
  for (const [i, p] of phases.entries()) {
    const a = p.from + settle;
    const b = p.to;
    const cap = (p.c * (b - a)) / s.mean_ms;
    const done = calls.filter((c) => c.ok && inWin(c.end, a, b)).length;
    const doneFull = calls.filter((c) => c.ok && inWin(c.end, p.from, b)).length;
    const job = latencies(calls, (c) => online(c) && inWin(c.sub, a, b), 'sub');
    const call = latencies(calls, (c) => online(c) && inWin(c.sub, a, b), 'arr');
    const jobFull = latencies(calls, (c) => online(c) && inWin(c.sub, p.from, b), 'sub');
    const waits = calls.filter((c) => c.ok && inWin(c.arr, a, b)).map((c) => c.st - c.arr);
    const samples = st.samples.filter((x) => inWin(x[0] - t0, a, b));
    const f = {
      c: p.c,
      from_s: p.from / 1000,
      to_s: p.to / 1000,
      goodput: done / cap,
      goodput_full_phase: doneFull / ((p.c * (b - p.from)) / s.mean_ms),
      goodput_last_half: calls.filter((c) => c.ok && inWin(c.end, (p.from + b) / 2, b)).length / ((p.c * (b - p.from)) / 2 / s.mean_ms),
      utilisation: busyMs(calls, a, b) / (p.c * (b - a)),
      online_p50x: percentile(job, 0.5) / u.job_p50_ms,
      online_p99x: percentile(job, 0.99) / u.job_p99_ms,
      online_p99_ms: percentile(job, 0.99),
      online_p99x_full_phase: percentile(jobFull, 0.99) / u.job_p99_ms,
      online_call_p99x: percentile(call, 0.99) / u.call_p99_ms,
      online_n: job.length,
      limit_median: traceMedian(traces, a, b, (x) => x.pool?.limit),
      offline_limit_median: traceMedian(traces, a, b, (x) => x.pool?.offline),
      ds_queued_mean: mean(samples.map((x) => x[2])),
      ds_queued_max: Math.max(0, ...samples.map((x) => x[2])),
      ds_wait_p99_ms: percentile(waits, 0.99),
      running_median: traceMedian(traces, a, b, (x) => (x.q.on?.running ?? 0) + (x.q.off?.running ?? 0)),
    };
    figures.phases.push(mapRound(f));
    const tag = `c${p.c}`;
    targets.push({ name: `${tag} goodput`, figure: `phases[${i}].goodput`, op: '>=', bound: 0.95, value: f.goodput });
    targets.push({ name: `${tag} online p99`, figure: `phases[${i}].online_p99x`, op: '<=', bound: 2, value: f.online_p99x });
    targets.push({ name: `${tag} online p50`, figure: `phases[${i}].online_p50x`, op: '<=', bound: 2, value: f.online_p50x });
  }
  const rejected = calls.filter((c) => !c.ok).length;
  figures.rejected_calls = rejected;
  figures.offline_done = calls.filter((c) => c.ok && c.cls === 'off').length;
  figures.online_done = calls.filter((c) => c.ok && c.cls === 'on').length;
  figures.max_attempt = Math.max(0, ...calls.map((c) => c.att));
  figures.mean_service_ms = round(mean(calls.filter((c) => c.ok).map((c) => c.end - c.st)), 2);
  figures.mean_drawn_ms = round(mean(calls.filter((c) => c.ok).map((c) => c.drawn)), 2);
  return {
    cell: `A c${phases.map((p) => p.c).join('->')}`,
    settings: { ...s, backlog, timeline_s: endMs / 1000 },
    figures,
    targets,
    series: perSecond(calls, st.samples, traces, t0, endMs, { limit: (x) => x.pool?.limit, offline_limit: (x) => x.pool?.offline }),
  };
}

function measureC(s, st, t0, coldMs, onMs, endMs, traces, backlog) {
  const calls = callsOf(st, t0);
  const online = (c) => c.cls === 'on';
  const capPerS = (s.c * 1000) / s.mean_ms;
  const aloneJob = latencies(calls, (c) => online(c) && inWin(c.sub, coldMs, onMs), 'sub');
  const aloneCall = latencies(calls, (c) => online(c) && inWin(c.sub, coldMs, onMs), 'arr');
  const a = onMs + s.warm_s * 1000;
  const b = endMs;
  const lenS = (b - a) / 1000;
  const job = latencies(calls, (c) => online(c) && inWin(c.sub, a, b), 'sub');
  const call = latencies(calls, (c) => online(c) && inWin(c.sub, a, b), 'arr');
  const offline = calls.filter((c) => c.ok && c.cls === 'off' && inWin(c.end, a, b)).length;
  const onlineDone = calls.filter((c) => c.ok && online(c) && inWin(c.end, a, b)).length;
  const samples = st.samples.filter((x) => inWin(x[0] - t0, a, b));
  const waits = calls.filter((c) => c.ok && inWin(c.arr, a, b)).map((c) => c.st - c.arr);
  const cold = latencies(calls, (c) => online(c) && inWin(c.sub, 0, coldMs), 'sub');
  const f = {
    cold_start_s: coldMs / 1000,
    online_cold_start_p99_ms: percentile(cold, 0.99),
    online_alone_p99_ms: percentile(aloneJob, 0.99),
    online_alone_p50_ms: percentile(aloneJob, 0.5),
    online_alone_n: aloneJob.length,
    online_p99_ms: percentile(job, 0.99),
    online_p99x: percentile(job, 0.99) / percentile(aloneJob, 0.99),
    online_p50x: percentile(job, 0.5) / percentile(aloneJob, 0.5),
    online_call_p99x: percentile(call, 0.99) / percentile(aloneCall, 0.99),
    online_n: job.length,
    offline_of_leftover: offline / ((1 - s.rho) * capPerS * lenS),
    offline_of_measured_leftover: offline / (capPerS * lenS - onlineDone),
    goodput: (offline + onlineDone) / (capPerS * lenS),
    utilisation: busyMs(calls, a, b) / (s.c * (b - a)),
    limit_median: traceMedian(traces, a, b, (x) => x.pool?.limit),
    offline_limit_median: traceMedian(traces, a, b, (x) => x.pool?.offline),
    limit_median_alone: traceMedian(traces, coldMs, onMs, (x) => x.pool?.limit),
    ds_queued_mean: mean(samples.map((x) => x[2])),
    ds_wait_p99_ms: percentile(waits, 0.99),
    rejected_calls: calls.filter((c) => !c.ok).length,
    mean_service_ms: mean(calls.filter((c) => c.ok).map((c) => c.end - c.st)),
  };
  return {
    cell: `C c${s.c} online ${s.rho}`,
    settings: { ...s, backlog, timeline_s: round(endMs / 1000, 2), offline_on_s: round(onMs / 1000, 2) },
    figures: mapRound(f),
    targets: [
      { name: 'online p99', figure: 'online_p99x', op: '<=', bound: 1.5, value: f.online_p99x },
      { name: 'offline share', figure: 'offline_of_leftover', op: '>=', bound: 0.9, value: f.offline_of_leftover },
    ],
    series: perSecond(calls, st.samples, traces, t0, endMs, { limit: (x) => x.pool?.limit, offline_limit: (x) => x.pool?.offline }),
  };
}

function measureB(s, st, t0, phases, endMs, traces, backlog, queue, nodes) {
  const calls = callsOf(st, t0).filter((c) => c.arr >= 0);
  const settle = s.settle_s * 1000;
  const figures = { phases: [] };
  const targets = [];
  let acc = 0;
  let allowed = 0;
  for (const [i, p] of phases.entries()) {
    const a = p.from + settle;
    const b = p.to;
    const ok = calls.filter((c) => c.ok && inWin(c.arr, a, b)).length;
    const all = calls.filter((c) => inWin(c.arr, p.from, b));
    const after = calls.filter((c) => inWin(c.arr, p.from, p.from + settle));
    acc += ok;
    allowed += (p.r * (b - a)) / 1000;
    // Seconds after the change until every later 1 s bucket of the phase accepted >= 0.95 R.
    let settleS = null;
    const buckets = Math.floor((p.to - p.from) / 1000);
    for (let k = 0; k < buckets && settleS === null; k++) {
      let good = true;
      for (let j = k; j < buckets && good; j++) {
        const n = calls.filter((c) => c.ok && inWin(c.arr, p.from + j * 1000, p.from + (j + 1) * 1000)).length;
        good = n >= 0.95 * p.r;
      }
      if (good) settleS = k;
    }
    const f = {
      r: p.r,
      from_s: p.from / 1000,
      accepted_of_limit: ok / ((p.r * (b - a)) / 1000),
      share_429: all.filter((c) => !c.ok).length / Math.max(1, all.length),
      share_429_first_5s: after.filter((c) => !c.ok).length / Math.max(1, after.length),
      settled_after_s: settleS,
      rate_now_median: traceMedian(traces, a, b, (x) => x.q.b?.rate_now),
    };
    figures.phases.push(mapRound(f));
    targets.push({ name: `R${p.r}@${p.from / 1000}s accepted`, figure: `phases[${i}].accepted_of_limit`, op: '>=', bound: 0.95, value: f.accepted_of_limit });
  }
  const rejected = calls.filter((c) => !c.ok).length;
  const overAttempt1 = new Set(calls.filter((c) => c.att > 1).map((c) => c.job)).size;
  figures.accepted_steady = acc / allowed;
  figures.share_429 = rejected / Math.max(1, calls.length);
  figures.calls = calls.length;
  figures.rejected = rejected;
  figures.jobs_over_attempt_1 = overAttempt1;
  figures.max_attempt = Math.max(0, ...calls.map((c) => c.att));
  figures.jobs_succeeded = queue.counts.succeeded;
  figures.jobs_failed = queue.counts.failed;
  figures.rate_now_seen = traces.some((x) => x.q.b?.rate_now !== null && x.q.b?.rate_now !== undefined);
  figures.held_share = traces.filter((x) => (x.q.b?.held_ms ?? 0) > 0).length / Math.max(1, traces.length);
  if (nodes > 1) {
    const per = new Map();
    for (const c of calls) if (c.ok) per.set(c.w, (per.get(c.w) ?? 0) + 1);
    const v = [...per.values()];
    const sum = v.reduce((x, y) => x + y, 0);
    figures.accepted_per_worker = Object.fromEntries(per);
    figures.fairness = (sum * sum) / (v.length * v.reduce((x, y) => x + y * y, 0) || 1);
  }
  targets.push({ name: '429s', figure: 'share_429', op: '<=', bound: 0.02, value: figures.share_429 });
  targets.push({ name: 'attempts', figure: 'jobs_over_attempt_1', op: '<=', bound: 0, value: overAttempt1 });
  return {
    cell: `B R${phases.map((p) => p.r).join('->')}/s retry-after ${s.retry_after}`,
    settings: { ...s, backlog, timeline_s: endMs / 1000, queue_rate: { limit: s.nominal_per_s, period_ms: 1000, burst: s.queue_burst ?? 'default (1)' } },
    figures: mapRound(figures),
    targets,
    series: perSecond(calls, st.samples, traces, t0, endMs, { rate_now: (x) => x.q.b?.rate_now, held_ms: (x) => x.q.b?.held_ms, running: (x) => x.q.b?.running }),
  };
}

function mapRound(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (Array.isArray(v)) out[k] = v.map((x) => (x && typeof x === 'object' ? mapRound(x) : round(x)));
    else if (v && typeof v === 'object') out[k] = mapRound(v);
    else out[k] = round(v);
  }
  return out;
}

// ---- command line

async function main() {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'A' },
      store: { type: 'string', default: 'sqlite' },
      nodes: { type: 'string', default: '1' },
      seed: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      rho: { type: 'string', default: '0.3' },
      worker: { type: 'string' },
      'retry-after': { type: 'string', default: 'ms' },
      'queue-burst': { type: 'string' },
      'database-url': { type: 'string' },
      verbose: { type: 'boolean', default: false },
    },
  });
  let interrupted = false;
  const onSignal = (sig) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`run.mjs: ${sig}, stopping every process it started\n`);
    Promise.all([...children].map((c) => c.stop(1_000))).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A hard bound: no run may hang a sitting.
  const watchdog = setTimeout(() => {
    process.stderr.write('run.mjs: the run took over 240 s, giving up\n');
    for (const c of children) c.killNow();
    process.exit(2);
  }, 240_000);
  watchdog.unref();
  try {
    const result = await runScenario({
      scenario: values.scenario,
      store: values.store,
      nodes: values.nodes,
      seed: values.seed,
      quick: values.quick,
      rho: values.rho,
      worker: values.worker,
      retryAfter: values['retry-after'],
      queueBurst: values['queue-burst'],
      databaseUrl: values['database-url'],
      verbose: values.verbose,
    });
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  } catch (err) {
    process.stderr.write(`run.mjs: ${err?.stack ?? err}\n`);
    for (const c of children) c.killNow();
    process.exit(1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.on('uncaughtException', (err) => {
    process.stderr.write(`run.mjs: ${err?.stack ?? err}\n`);
    for (const c of children) c.killNow();
    process.exit(1);
  });
  await main();
}
