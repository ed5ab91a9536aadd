#!/usr/bin/env node
// A provider on loopback for the flow benchmark through the real product (README.md here).
//
//   node downstream.mjs [--port 0] --mode concurrency --slots 8@0,3@15,12@30 [--mean-ms 50] [--sigma 0.3]
//   node downstream.mjs [--port 0] --mode rate --rates 50@0,25@20,50@40 [--burst 0] [--retry-after s|ms]
//
// Prints one JSON line `{"port": N}` once it listens. Schedules (`VALUE@SECONDS,...`) count from
// `POST /start` (before it, the first value holds); they change without notice to the callers.
//
// Concurrency mode: c slots; a call holds a slot for a service time drawn from a lognormal with
// the given mean and sigma; calls beyond c wait in FIFO order inside the provider (queueing at
// the provider, which is what an adaptive limit must avoid). When c drops, calls in service
// finish and no new one starts until fewer than c are busy.
//
// Rate mode: at most R accepted calls in any sliding 1 s window (and, with --burst B > 0, also a
// GCRA of rate R and burst B). A call beyond it is answered at once with 429, `Retry-After` in
// whole seconds (rounded up) and, with --retry-after ms, also `Retry-After-Ms`. Accepted calls are
// served for a lognormal service time (unlimited slots unless --slots is given).
//
// A call: `POST /call?job=ID&att=N&w=WORKER` with the job's payload as body (JSON with `cls`, the
// class, and `sub`, the submit time in epoch ms). Every call is recorded: arrival, start, end,
// class, accepted or rejected, attempt, job id, submit time, worker.
//   GET  /stats   -> {t0, mode, schedule, calls: [[arr, start, end, cls, ok, att, job, sub, w,
//                     drawn_ms]...], samples: [[t, busy, queued, capacity]...] (every 100 ms)}
//   GET  /events  -> NDJSON, one line per call end: {job, cls, ok, att, arr, st, end, sub}
//   POST /start   -> {t0}: the schedules start now.
// The process exits when its stdin ends (the runner that started it died) or on SIGTERM.
//
// Times are epoch milliseconds with a fraction (performance.timeOrigin + performance.now(),
// the clock every process of the benchmark uses).

import http from 'node:http';
import { parseArgs } from 'node:util';

import { lognormal, now, parseSchedule, rng } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    mode: { type: 'string', default: 'concurrency' },
    slots: { type: 'string' },
    rates: { type: 'string', default: '50@0' },
    burst: { type: 'string', default: '0' },
    'retry-after': { type: 'string', default: 'ms' },
    'mean-ms': { type: 'string' },
    sigma: { type: 'string', default: '0.3' },
    seed: { type: 'string', default: '1' },
  },
});

const mode = opt.mode;
if (mode !== 'concurrency' && mode !== 'rate') throw new Error('--mode concurrency|rate');
const slotSchedule = opt.slots ? parseSchedule(opt.slots) : mode === 'concurrency' ? parseSchedule('8@0') : null;
const rateSchedule = mode === 'rate' ? parseSchedule(opt.rates) : null;
const burst = Number(opt.burst);
const retryAfterMs = opt['retry-after'] === 'ms';
const meanMs = Number(opt['mean-ms'] ?? (mode === 'rate' ? 20 : 50));
const draw = lognormal(rng(Number(opt.seed) * 7919 + 17), meanMs, Number(opt.sigma));

let t0 = null;
const valueAt = (schedule, t) => {
  if (t0 === null) return schedule[0][1];
  let v = schedule[0][1];
  for (const [at, value] of schedule) if (t - t0 >= at) v = value;
  return v;
};
const slotsAt = (t) => (slotSchedule ? valueAt(slotSchedule, t) : Infinity);
const rateAt = (t) => valueAt(rateSchedule, t);

// ---- the provider's state

const calls = []; // [arr, start, end, cls, ok, att, job, sub, w, drawn]
const samples = [];
let busy = 0;
const waiting = []; // FIFO of calls waiting for a slot
const listeners = new Set();
// Rate mode: accepted arrival times within the last second, and the GCRA's theoretical arrival time.
const window = [];
let tat = 0;

function admit(t) {
  const r = rateAt(t);
  while (window.length > 0 && window[0] <= t - 1000) window.shift();
  let wait = 0;
  if (window.length >= r) wait = Math.max(wait, window[window.length - r] + 1000 - t);
  if (burst > 0) {
    const T = 1000 / r;
    const tau = (burst - 1) * T;
    const at = Math.max(tat, t);
    if (at - tau > t) wait = Math.max(wait, at - tau - t);
    else if (wait === 0) tat = at + T;
  }
  if (wait > 0) return wait;
  window.push(t);
  return 0;
}

function dispatch() {
  const t = now();
  while (waiting.length > 0 && busy < slotsAt(t)) serve(waiting.shift(), t);
}

function serve(call, t) {
  busy += 1;
  call.start = t;
  const drawn = draw();
  call.drawn = drawn;
  setTimeout(() => finish(call), drawn);
}

function finish(call) {
  busy -= 1;
  const t = now();
  record(call, t, true);
  call.res.writeHead(200, { 'content-type': 'application/json' });
  call.res.end(`{"ok":true,"ms":${(t - call.start).toFixed(2)}}`);
  dispatch();
}

function record(call, end, ok) {
  const rec = [call.arr, call.start ?? end, end, call.cls, ok ? 1 : 0, call.att, call.job, call.sub, call.w, call.drawn ?? 0];
  calls.push(rec);
  if (listeners.size > 0) {
    const line = `${JSON.stringify({ job: call.job, cls: call.cls, ok, att: call.att, arr: call.arr, st: rec[1], end, sub: call.sub })}\n`;
    for (const res of listeners) res.write(line);
  }
}

function onCall(req, res, url) {
  const arr = now();
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let payload = {};
    try {
      payload = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
    } catch {
      payload = {};
    }
    const q = url.searchParams;
    const call = {
      arr,
      res,
      cls: String(payload?.cls ?? q.get('cls') ?? ''),
      sub: Number(payload?.sub ?? 0),
      job: q.get('job') ?? '',
      att: Number(q.get('att') ?? 0),
      w: q.get('w') ?? '',
      start: null,
      drawn: 0,
    };
    if (rateSchedule) {
      const wait = admit(arr);
      if (wait > 0) {
        record(call, arr, false);
        const headers = { 'content-type': 'application/json', 'retry-after': String(Math.max(1, Math.ceil(wait / 1000))) };
        if (retryAfterMs) headers['retry-after-ms'] = String(Math.ceil(wait));
        res.writeHead(429, headers);
        res.end('{"error":"rate limited"}');
        return;
      }
    }
    waiting.push(call);
    dispatch();
  });
}

const server = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/call') return onCall(req, res, url);
  if (req.method === 'POST' && url.pathname === '/start') {
    req.resume();
    t0 = now();
    if (slotSchedule) scheduleSteps(slotSchedule);
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ t0 }));
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    if (url.searchParams.has('light')) return res.end(JSON.stringify({ t0, busy, queued: waiting.length, calls: calls.length }));
    return res.end(
      JSON.stringify({
        t0,
        mode,
        mean_ms: meanMs,
        sigma: Number(opt.sigma),
        slots: slotSchedule,
        rates: rateSchedule,
        burst,
        retry_after: opt['retry-after'],
        busy,
        queued: waiting.length,
        calls,
        samples,
      }),
    );
  }
  if (req.method === 'GET' && url.pathname === '/events') {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.write('\n');
    listeners.add(res);
    req.on('close', () => listeners.delete(res));
    return;
  }
  if (req.method === 'GET' && url.pathname === '/healthz') {
    res.writeHead(200);
    return res.end('ok');
  }
  res.writeHead(404);
  res.end();
});
server.keepAliveTimeout = 30_000;
server.headersTimeout = 35_000;
server.requestTimeout = 0;

/** Wakes the queue when capacity rises (a step up must not wait for the next completion). */
function scheduleSteps(schedule) {
  for (const [at] of schedule) if (at > 0) setTimeout(dispatch, at + 1).unref();
}

setInterval(() => {
  const t = now();
  samples.push([t, busy, waiting.length, slotSchedule ? slotsAt(t) : rateAt(t)]);
}, 100).unref();

server.listen(Number(opt.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (!process.stdin.isTTY) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
