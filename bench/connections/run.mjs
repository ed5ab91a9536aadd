#!/usr/bin/env node
// Connection figures (issue 13): what 1,000 idle sockets and 2,000 held long polls cost a
// `drove serve` node, how it answers other requests meanwhile, and how fast the held claims are
// answered once jobs arrive. Prints ONE JSON line; exits non-zero if any long poll failed, got
// an error status, got no job or a job another poll also got, or if the server never held every
// connection. See README.md.
//
//   node bench/connections/run.mjs
//
// Environment (all optional):
//   DROVE_BIN   the server binary (default /work/bin/drove-release)
//   IDLE        idle sockets (1000)        POLLS     long polls (2000)
//   IDLE_STEP   idle sockets opened per step, each step waiting until the server has accepted
//               them (100; the server listens with a backlog of 128, see README.md). IDLE_STEP=1000
//               opens them all at once.
//   SAMPLES     sequential requests per latency figure (20)
//   SETTLE_MS   how much longer to hold the polls after the first measurement, then measure
//               again, CPU and store reads included (12000; 0 skips)
//
// Node 20+, standard library only. The server runs on a fresh temporary directory on
// 127.0.0.1 (port 0) and is stopped (and the directory removed) at the end. This process needs
// about IDLE + POLLS + 100 file descriptors: raise `ulimit -n` if needed.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

const BIN = process.env.DROVE_BIN || '/work/bin/drove-release';
const IDLE = Number(process.env.IDLE || 1000);
const POLLS = Number(process.env.POLLS || 2000);
const IDLE_STEP = Number(process.env.IDLE_STEP || 100);
const SAMPLES = Number(process.env.SAMPLES || 20);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 12_000);
const WAIT_MS = 30_000; // each long poll's wait_ms
const HELD_BOUND_MS = 60_000; // how long the server may take to hold every connection
const BATCH = 1000; // jobs per batch submit
const CLK_TCK = 100; // USER_HZ, the unit of utime/stime in /proc/PID/stat on Linux

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r1 = (x) => Math.round(x * 10) / 10;
const r3 = (x) => Math.round(x * 1000) / 1000;
/** p50 by nearest rank (the 10th of 20 sorted samples). */
const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.ceil(xs.length / 2) - 1];

// ---- the server process, read through /proc

const fdCount = (pid) => readdirSync(`/proc/${pid}/fd`).length;

/** The server's open sockets (its listener included): fds that link to `socket:[...]`. */
function socketCount(pid) {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

function status(pid, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : null;
}
const rssKiB = (pid) => status(pid, 'VmRSS');
const threads = (pid) => status(pid, 'Threads');

/** CPU seconds the process has used (user + system). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of stat
}

function nofileSoft(pid) {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  return soft === 'unlimited' ? soft : Number(soft);
}

/** Linux TCP counters (system-wide, /proc/net/netstat): accept queues that overflowed. */
function listenCounters() {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    const i = lines.findIndex((l) => l.startsWith('TcpExt:'));
    const names = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    const get = (k) => Number(values[names.indexOf(k)]);
    return { overflows: get('ListenOverflows'), cookies: get('TCPReqQFullDoCookies') };
  } catch {
    return null;
  }
}

async function startServer(dir) {
  const child = spawn(BIN, ['serve', '--db', join(dir, 'x.db'), '--bind', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DROVE_LOG: process.env.DROVE_LOG || 'warn' },
  });
  const stderr = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr.push(d);
    if (stderr.length > 200) stderr.shift();
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not print its address within 15 s')), 15_000);
    child.once('exit', (code, sig) => reject(new Error(`server exited early (${code ?? sig}): ${stderr.join('')}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /drove listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  return { child, port, stderr };
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

// ---- HTTP

function request(agent, port, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers =
      data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** `n` sequential requests on one fresh keep-alive connection: p50 and max in ms. */
async function sequential(port, n, method, path, body) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const ms = [];
  const bad = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const res = await request(agent, port, method, path, body);
      ms.push(performance.now() - t0);
      if (res.status < 200 || res.status > 299) bad.push(`${method} ${path}: ${res.status} ${res.text.slice(0, 200)}`);
    }
  } finally {
    agent.destroy();
  }
  return { p50_ms: r3(p50(ms)), max_ms: r3(Math.max(...ms)), bad };
}

/** How many times claims on queue `cq` have looked at the store (a measurement, not a sync). */
async function claimLooks(port) {
  const agent = new http.Agent({ keepAlive: false });
  try {
    const res = await request(agent, port, 'GET', '/metrics');
    const m = /^drove_claim_seconds_count\{queue="cq"\} (\d+)/m.exec(res.text);
    return m ? Number(m[1]) : 0;
  } finally {
    agent.destroy();
  }
}

/** Polls `cond` every `everyMs` until true or `boundMs` passed; true when it held. */
async function until(cond, everyMs, boundMs) {
  const t0 = performance.now();
  for (;;) {
    if (cond()) return true;
    if (performance.now() - t0 > boundMs) return false;
    await sleep(everyMs);
  }
}

// ---- the run

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'drove-conn-'));
  const errors = [];
  const out = { bench: 'connections', idle_sockets: IDLE, long_polls: POLLS, idle_step: IDLE_STEP, wait_ms: WAIT_MS };
  let server;
  const idle = [];
  const pollAgent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: Infinity });
  try {
    server = await startServer(dir);
    const { child, port } = server;
    const pid = child.pid;
    await sleep(300);
    out.nofile_soft = nofileSoft(pid);
    out.fd_start = fdCount(pid);
    const socketsStart = socketCount(pid);
    out.sockets_start = socketsStart;
    out.rss_start_kib = rssKiB(pid);
    out.threads_start = threads(pid);
    const listen0 = listenCounters();

    // a) idle sockets: connect, send nothing, keep. In steps, each step waiting until the
    // server's socket count shows it accepted them (a connect that completed on this side may
    // still sit in, or have overflowed, the server's accept queue).
    let idleClosed = 0;
    const idleErrors = [];
    const tIdle = performance.now();
    for (let opened = 0; opened < IDLE; ) {
      const step = Math.min(IDLE_STEP, IDLE - opened);
      await Promise.all(
        Array.from({ length: step }, () => {
          return new Promise((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port });
            s.on('connect', resolve);
            s.on('error', (e) => {
              idleErrors.push(e.code || e.message);
              resolve();
            });
            s.on('close', () => idleClosed++);
            idle.push(s);
          });
        }),
      );
      opened += step;
      const want = socketsStart + opened;
      if (!(await until(() => socketCount(pid) >= want, 20, 10_000))) {
        errors.push(`idle sockets: the server holds ${socketCount(pid) - socketsStart} of the ${opened} connected`);
        break;
      }
    }
    out.idle_connect_ms = r1(performance.now() - tIdle);
    out.sockets_idle = socketCount(pid) - socketsStart;
    out.rss_idle_kib = rssKiB(pid);
    if (idleErrors.length) errors.push(`idle sockets: ${idleErrors.length} errors (${[...new Set(idleErrors)].join(', ')})`);

    // b) the long polls, all at once, each on its own connection.
    const polls = [];
    let answered = 0;
    let tAllAnswered = null;
    let allAnswered;
    const allAnsweredP = new Promise((r) => (allAnswered = r));
    const body = { max: 1, wait_ms: WAIT_MS };
    const tPolls = performance.now();
    for (let i = 0; i < POLLS; i++) {
      const p = { status: null, jobs: null, error: null, at: null };
      polls.push(p);
      request(pollAgent, port, 'POST', '/v1/queues/cq/claim', body)
        .then(
          (res) => {
            p.status = res.status;
            try {
              p.jobs = JSON.parse(res.text).jobs;
            } catch {
              p.error = `unparseable answer: ${res.text.slice(0, 200)}`;
            }
          },
          (e) => (p.error = e.code || e.message),
        )
        .finally(() => {
          p.at = performance.now();
          if (++answered === POLLS) {
            tAllAnswered = p.at;
            allAnswered();
          }
        });
    }

    // c) wait (every 100 ms, at most 60 s) until the server holds every connection: at least
    // IDLE + POLLS fds, and as many sockets. The fd count alone is no proof: the claims' store
    // reads open SQLite connections (hundreds of fds) while connections may still be queued.
    const fdTarget = IDLE + POLLS;
    const socketTarget = socketsStart + IDLE + POLLS;
    const held = await until(() => fdCount(pid) >= fdTarget && socketCount(pid) >= socketTarget, 100, HELD_BOUND_MS);
    out.polls_held_after_ms = r1(performance.now() - tPolls);
    out.fd_held = fdCount(pid);
    out.sockets_held = socketCount(pid) - socketsStart;
    if (!held) {
      errors.push(
        `after ${HELD_BOUND_MS} ms the server holds ${out.sockets_held} of ${IDLE + POLLS} connections (${out.fd_held} fds)`,
      );
    }
    out.answered_before_jobs = answered;
    out.rss_held_kib = rssKiB(pid);
    out.rss_per_conn_kib = r3((out.rss_held_kib - out.rss_start_kib) / (IDLE + POLLS));
    out.threads_held = threads(pid);
    const listen1 = listenCounters();
    if (listen0 && listen1) {
      out.listen_overflows = listen1.overflows - listen0.overflows;
      out.syn_cookies = listen1.cookies - listen0.cookies;
    }
    const health = await sequential(port, SAMPLES, 'GET', '/healthz');
    const submit = await sequential(port, SAMPLES, 'POST', '/v1/jobs', { queue: 'other', payload: 1 });
    out.healthz_p50_ms = health.p50_ms;
    out.healthz_max_ms = health.max_ms;
    out.submit_p50_ms = submit.p50_ms;
    out.submit_max_ms = submit.max_ms;
    errors.push(...health.bad, ...submit.bad);

    // Held a while longer: what holding costs once the burst is over.
    if (held && SETTLE_MS > 0 && performance.now() - tPolls + SETTLE_MS < WAIT_MS - 5_000) {
      const looks0 = await claimLooks(port);
      const cpu0 = cpuSeconds(pid);
      const t0 = performance.now();
      await sleep(SETTLE_MS);
      const secs = (performance.now() - t0) / 1000;
      out.settled_cpu_pct = r1((100 * (cpuSeconds(pid) - cpu0)) / secs);
      out.settled_claim_looks_per_s = Math.round(((await claimLooks(port)) - looks0) / secs);
      out.settled_fd = fdCount(pid);
      out.settled_sockets = socketCount(pid) - socketsStart;
      out.settled_rss_kib = rssKiB(pid);
      out.settled_threads = threads(pid);
    }
    if (answered > 0) errors.push(`${answered} long polls answered before any job was submitted`);

    // d) the jobs, in batches of 1,000; the time until every long poll has its job.
    const submitAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const tJobs = performance.now();
    const batchMs = [];
    for (let from = 0; from < POLLS; from += BATCH) {
      const jobs = [];
      for (let n = from; n < Math.min(POLLS, from + BATCH); n++) jobs.push({ queue: 'cq', payload: n });
      const t0 = performance.now();
      const res = await request(submitAgent, port, 'POST', '/v1/jobs/batch', { jobs });
      batchMs.push(performance.now() - t0);
      if (res.status !== 200) errors.push(`batch at ${from}: ${res.status} ${res.text.slice(0, 200)}`);
    }
    submitAgent.destroy();
    out.batch_ms = batchMs.map(r1);
    let timer;
    const timeout = new Promise((r) => (timer = setTimeout(() => r('timeout'), WAIT_MS + 15_000)));
    const raced = await Promise.race([allAnsweredP, timeout]);
    clearTimeout(timer);
    if (raced === 'timeout') errors.push(`only ${answered} of ${POLLS} long polls answered ${WAIT_MS + 15_000} ms after the submit`);
    out.all_answered_ms = tAllAnswered === null ? null : r1(tAllAnswered - tJobs);
    const answerMs = polls.filter((p) => p.at !== null).map((p) => p.at - tJobs);
    out.answer_p50_ms = answerMs.length ? r1(p50(answerMs)) : null;
    out.rss_after_kib = rssKiB(pid);

    // e) every poll: 200, exactly one job of cq, no job twice.
    const ids = new Set();
    let withJob = 0;
    const problems = {};
    const note = (k) => (problems[k] = (problems[k] || 0) + 1);
    for (const p of polls) {
      if (p.error) note(`error: ${p.error}`);
      else if (p.status !== 200) note(`status ${p.status}`);
      else if (!Array.isArray(p.jobs)) note('no jobs array');
      else if (p.jobs.length !== 1) note(`${p.jobs.length} jobs`);
      else if (p.jobs[0].queue !== 'cq') note(`job of queue ${p.jobs[0].queue}`);
      else {
        withJob++;
        ids.add(p.jobs[0].id);
      }
    }
    out.polls_with_one_job = withJob;
    out.distinct_job_ids = ids.size;
    for (const [k, n] of Object.entries(problems)) errors.push(`long polls: ${n} x ${k}`);
    if (withJob !== POLLS) errors.push(`${withJob} of ${POLLS} long polls got exactly one job`);
    if (ids.size !== withJob) errors.push(`${withJob - ids.size} jobs handed out twice`);
    out.idle_closed = idleClosed;
    if (idleClosed) errors.push(`${idleClosed} idle sockets were closed during the run`);
  } catch (e) {
    errors.push(`run aborted: ${e.stack || e}`);
  } finally {
    for (const s of idle) s.destroy();
    pollAgent.destroy();
    if (server) {
      await stopServer(server.child);
      const logged = server.stderr.join('').trim();
      if (logged) out.server_log_tail = logged.slice(-2000);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  out.ok = errors.length === 0;
  out.errors = errors;
  console.log(JSON.stringify(out));
  process.exitCode = out.ok ? 0 : 1;
}

main();
