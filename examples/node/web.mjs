// The seed's web service: a plain node:http server whose /api?item=ID answers an expensive
// computation. The computation runs as a Drove job keyed by the item, through drove.once():
// however many requests ask for an item at once, on however many instances of this service,
// it is computed once and every request gets that one result (and, for a minute after,
// requests reuse it like a cache). Within one instance, concurrent requests for an item share
// one request to Drove.
//
//   DROVE_URL=http://127.0.0.1:7070 PORT=3000 node web.mjs
//   curl 'localhost:3000/api?item=42'
//
// Each instance also runs a worker for the computations (WORKER=0 leaves that to others).

import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove, DroveError, JobFailedError, WaitTimeoutError } from 'drove-client';

const drove = new Drove({ url: process.env.DROVE_URL ?? 'http://127.0.0.1:7070', token: process.env.DROVE_TOKEN });
const QUEUE = 'expensive';

// The expensive computation (a slow query, a third-party call, a render).
async function compute(item, ctx) {
  await sleep(Number(process.env.COMPUTE_MS ?? 300), undefined, { signal: ctx.signal });
  return { item, value: `answer for ${item}`, job: ctx.id, computedAt: new Date().toISOString(), by: process.pid };
}

const worker =
  process.env.WORKER === '0'
    ? undefined
    : drove.worker(QUEUE, (ctx) => compute(ctx.payload.item, ctx), { concurrency: Number(process.env.CONCURRENCY ?? 16) });
worker?.on('error', (err) => console.error(`worker: ${err.message}`));

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname !== '/api') return send(res, 404, { error: 'try /api?item=ID' });
  const item = url.searchParams.get('item');
  if (!item || !/^[\w.:-]{1,100}$/.test(item)) return send(res, 400, { error: 'item must be 1-100 of [A-Za-z0-9_.:-]' });
  try {
    const answer = await drove.once(QUEUE, `item:${item}`, { item }, { reuseForMs: 60_000, waitMs: 10_000 });
    send(res, 200, answer);
  } catch (err) {
    if (err instanceof WaitTimeoutError) send(res, 504, { error: 'still computing, try again', job: err.job.id });
    else if (err instanceof JobFailedError) send(res, 502, { error: `the computation failed (${err.kind})` });
    else if (err instanceof DroveError) send(res, 503, { error: `job system: ${err.message}` });
    else send(res, 500, { error: String(err) });
  }
});

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`web listening on http://127.0.0.1:${server.address().port}`);
});

// Deploys send SIGTERM: stop taking requests, let running computations finish, hand back the rest.
process.once('SIGTERM', async () => {
  server.close();
  await worker?.close({ graceMs: 10_000 });
  process.exit(0);
});
