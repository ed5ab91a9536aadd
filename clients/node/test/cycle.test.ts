// One request per worker cycle and the bounded prefetch: a busy worker's run ends ride on its
// claims (no finish requests of their own), a server that refuses `finish` on claims gets them
// through POST /v1/jobs/finish instead, the prefetch stays within its cap and off on a queue with
// a concurrency limit, two workers share a few slow jobs, buffered jobs heartbeat, and close()
// hands them back at once.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove, type ClaimedJob, type JobContext, type Worker } from 'drove-client';

import { countingFetch, deferred, startServer, until, within, type Server } from './harness.js';

const LONG = 60_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Requests by kind: claims, finishes, heartbeats, others. */
function tally(paths: string[]): { claims: number; finishes: number; heartbeats: number; other: number } {
  const t = { claims: 0, finishes: 0, heartbeats: 0, other: 0 };
  for (const p of paths) {
    if (/^POST \/v1\/queues\/[^/]+\/claim$/.test(p)) t.claims += 1;
    else if (p === 'POST /v1/jobs/finish' || /^POST \/v1\/jobs\/[^/]+\/(complete|fail|release)$/.test(p)) t.finishes += 1;
    else if (/\/heartbeat$/.test(p)) t.heartbeats += 1;
    else t.other += 1;
  }
  return t;
}

/** Resolves once `worker` has emitted `completed` `n` times (counting from now). */
function completions(worker: Worker<any, any>, n: number): Promise<ClaimedJob[]> {
  const jobs: ClaimedJob[] = [];
  return new Promise((resolve) => {
    worker.on('completed', (job: ClaimedJob) => {
      jobs.push(job);
      if (jobs.length === n) resolve(jobs);
    });
  });
}

/** Submits `n` jobs to `queue` in one request; answers their ids. */
async function submit(queue: string, n: number, payload: (i: number) => unknown = (i) => ({ i })): Promise<string[]> {
  const jobs = await server.drove.submitMany(Array.from({ length: n }, (_, i) => ({ queue, payload: payload(i) })));
  return jobs.map((j) => j.id);
}

/** Runs a worker on a queue with `n` quick jobs until they are done, so that its prefetch has a
 * size (a handler ended) and the queue's settings are known. */
async function warmUp(worker: Worker<any, any>, queue: string, n = 4): Promise<void> {
  const done = completions(worker, n);
  await submit(queue, n, () => ({ warm: true }));
  await within(done, LONG, 'the warm-up jobs');
}

test('a busy worker makes one request per cycle: the ends of its runs ride on its claims', async () => {
  const N = 600;
  const CONCURRENCY = 8;
  await submit('busy', N);
  const counter = countingFetch();
  const drove = new Drove({ url: server.url, fetch: counter.fetch });
  const seen = new Set<number>();
  const worker = drove.worker<{ i: number }>('busy', (ctx) => {
    seen.add(ctx.payload.i);
    return { i: ctx.payload.i };
  }, { concurrency: CONCURRENCY });
  try {
    const done = await within(completions(worker, N), LONG, `${N} completions`);
    assert.equal(done.length, N);
    assert.equal(seen.size, N, 'every job ran');
    const t = tally(counter.paths);
    // While it is busy every claim carries the ends of the runs before it: no finish requests
    // (at most the last ends, should they arrive while the final long poll is out).
    assert.ok(t.finishes <= 2, `finish requests while busy: ${JSON.stringify(t)}`);
    // A claim takes up to concurrency + prefetch (8 + 8) jobs: about N / 16 claims, never more
    // than one per concurrency's worth of jobs (and the last one, empty, carrying the last ends).
    assert.ok(t.claims <= Math.ceil(N / CONCURRENCY) + 3, `claims: ${JSON.stringify(t)}`);
    const perJob = (t.claims + t.finishes) / N;
    console.log(`busy drain of ${N} no-op jobs, concurrency ${CONCURRENCY}: ${JSON.stringify(t)}, ${perJob.toFixed(3)} requests per job`);
    const q = await server.drove.queue('busy');
    assert.equal(q.counts.succeeded, N);
    assert.equal(q.counts.running, 0);
  } finally {
    await worker.close();
  }
});

test('an end that arrives while a long poll is out goes at once through POST /v1/jobs/finish', async () => {
  const counter = countingFetch();
  const drove = new Drove({ url: server.url, fetch: counter.fetch });
  const gate = deferred();
  const worker = drove.worker('longpoll', async () => {
    await gate.promise;
    return 'done';
  }, { concurrency: 2, pollMs: 60_000 });
  try {
    const completed = completions(worker, 1);
    await submit('longpoll', 1);
    await until(() => worker.running === 1, 'the job to run');
    // Its other slot is free and the queue empty: the worker's next claim is a long poll.
    await until(() => tally(counter.paths).claims >= 2, 'the long poll for the free slot');
    gate.resolve();
    const [job] = await within(completed, 10_000, 'the end to be acknowledged well before the 60 s long poll returns');
    assert.equal((await server.drove.get(job!.id)).state, 'succeeded');
    const t = tally(counter.paths);
    assert.equal(t.finishes, 1, `the end went in a finish request: ${counter.paths.join(', ')}`);
    assert.equal(t.claims, 2, 'the long poll is still out');
  } finally {
    gate.resolve();
    await worker.close();
  }
});

test('a server that refuses finish on claims gets the ends through POST /v1/jobs/finish (warned once)', async () => {
  const N = 40;
  await submit('oldserver', N);
  const counter = countingFetch();
  let refused = 0;
  const decoder = new TextDecoder();
  // An older server: a claim with `finish` is a 422 naming the field, as serde's unknown field.
  const old = ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const body = init?.body instanceof Uint8Array ? decoder.decode(init.body) : String(init?.body ?? '');
    if (/\/claim$/.test(new URL(String(input)).pathname) && body.includes('"finish"')) {
      refused += 1;
      const error = { code: 'invalid_value', message: 'finish: unknown field `finish`, expected one of `worker`, `max`, `wait_ms`, `lease_ms`', field: 'finish' };
      return Promise.resolve(new Response(JSON.stringify({ error }), { status: 422, headers: { 'content-type': 'application/json' } }));
    }
    return counter.fetch(input, init);
  }) as typeof fetch;
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args.join(' '));
  const drove = new Drove({ url: server.url, fetch: old });
  const worker = drove.worker('oldserver', () => 'ok', { concurrency: 4 });
  try {
    await within(completions(worker, N), LONG, `${N} completions against an old server`);
    assert.equal(refused, 1, 'one claim with finish, then none');
    assert.equal(warnings.filter((w) => /finish/.test(w)).length, 1, `warned once: ${warnings.join(' | ')}`);
    const t = tally(counter.paths);
    assert.ok(t.finishes >= 1, `the ends went through finish requests: ${JSON.stringify(t)}`);
    assert.equal((await server.drove.queue('oldserver')).counts.succeeded, N);
  } finally {
    await worker.close();
    console.warn = warn;
  }
});

test('prefetch: a worker holds at most concurrency + maxPrefetch jobs, and uses the buffer', async () => {
  const CONCURRENCY = 4;
  const N = 80;
  let maxHeld = 0;
  let maxBuffered = 0;
  let worker!: Worker<{ i?: number; warm?: boolean }>;
  const sample = () => {
    maxHeld = Math.max(maxHeld, worker.running + worker.buffered);
    maxBuffered = Math.max(maxBuffered, worker.buffered);
  };
  worker = server.drove.worker<{ i?: number; warm?: boolean }>('prefetch', async (ctx) => {
    sample();
    if (!ctx.payload.warm) await sleep(20); // the work
    sample();
    return null;
  }, { concurrency: CONCURRENCY });
  try {
    await warmUp(worker, 'prefetch');
    await until(() => worker.prefetch > 0, 'the prefetch to have a size');
    assert.equal(worker.prefetch, CONCURRENCY, 'about 250 ms of 20 ms jobs is more than the cap (concurrency)');
    const done = completions(worker, N);
    await submit('prefetch', N);
    // Watch the server too while it runs: running counts every job the worker holds.
    let serverMax = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        serverMax = Math.max(serverMax, (await server.drove.queue('prefetch')).counts.running);
        sample();
        await sleep(5); // a sampling interval, not a synchronisation
      }
    })();
    await within(done, LONG, `${N} jobs`);
    watching = false;
    await watch;
    assert.ok(maxHeld <= CONCURRENCY * 2, `held ${maxHeld}, at most ${CONCURRENCY * 2}`);
    assert.ok(serverMax <= CONCURRENCY * 2, `the server saw ${serverMax} running`);
    assert.ok(maxBuffered > 0, 'jobs were claimed ahead of free slots');
  } finally {
    await worker.close();
  }
});

test('prefetch: on a queue with a concurrency limit the worker claims no more than its free slots', async () => {
  await server.drove.setQueue('limited', { concurrency: 2 });
  const N = 40;
  let maxBuffered = 0;
  let worker!: Worker;
  worker = server.drove.worker('limited', async (ctx: JobContext) => {
    maxBuffered = Math.max(maxBuffered, worker.buffered);
    if (!(ctx.payload as { warm?: boolean }).warm) await sleep(20);
    return null;
  }, { concurrency: 4, maxPrefetch: 4 });
  try {
    await warmUp(worker, 'limited');
    const done = completions(worker, N);
    await submit('limited', N);
    let serverMax = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        serverMax = Math.max(serverMax, (await server.drove.queue('limited')).counts.running);
        maxBuffered = Math.max(maxBuffered, worker.buffered);
        await sleep(5); // a sampling interval, not a synchronisation
      }
    })();
    await within(done, LONG, `${N} jobs`);
    watching = false;
    await watch;
    assert.equal(worker.prefetch, 0, 'no prefetch on a queue with a concurrency limit');
    assert.equal(maxBuffered, 0, 'nothing was claimed ahead of free slots');
    assert.ok(serverMax <= 2, `the server saw ${serverMax} running`);
  } finally {
    await worker.close();
  }
});

test('prefetch: two workers on one queue of a few slow jobs both get work', async () => {
  const runs = { a: 0, b: 0 };
  const slow = (who: 'a' | 'b') => async () => {
    runs[who] += 1;
    await sleep(300); // the work
    return who;
  };
  const a = server.drove.worker('slow', slow('a'), { concurrency: 4 });
  const b = server.drove.worker('slow', slow('b'), { concurrency: 4 });
  try {
    const done = deferred();
    let n = 0;
    const count = () => {
      if (++n === 6) done.resolve();
    };
    a.on('completed', count);
    b.on('completed', count);
    await submit('slow', 6);
    await within(done.promise, LONG, 'six slow jobs');
    assert.equal(runs.a + runs.b, 6);
    assert.ok(runs.a > 0 && runs.b > 0, `both workers ran some: ${JSON.stringify(runs)}`);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('prefetch: buffered jobs heartbeat while they wait, and run on their first lease', async () => {
  const counter = countingFetch();
  const drove = new Drove({ url: server.url, fetch: counter.fetch });
  const gate = deferred();
  const ran: Array<{ id: string; attempt: number; error: unknown }> = [];
  const worker = drove.worker<{ warm?: boolean; block?: boolean }>('beat', async (ctx) => {
    if (ctx.payload.block) await gate.promise;
    if (!ctx.payload.warm) ran.push({ id: ctx.id, attempt: ctx.attempt, error: ctx.job.error });
    return null;
  }, { concurrency: 1, maxPrefetch: 1, leaseMs: 1_000 });
  const refused: unknown[] = [];
  worker.on('refused', (_job: ClaimedJob, err: unknown) => refused.push(err));
  try {
    await warmUp(worker, 'beat');
    await until(() => worker.prefetch === 1, 'the prefetch to have a size');
    // Both at once: the first runs, the second is claimed ahead (a claim finding nothing ahead
    // stops the prefetch until a slot frees).
    const [blocker, waiting] = await server.drove.submitMany([
      { queue: 'beat', payload: { block: true } },
      { queue: 'beat', payload: {} },
    ]);
    await until(() => worker.running === 1 && worker.buffered === 1, 'one job running, one claimed ahead');
    // Three times its lease in the buffer: only heartbeats keep it.
    const beats = () => counter.paths.filter((p) => p === `POST /v1/jobs/${waiting!.id}/heartbeat`).length;
    await until(() => beats() >= 8, 'the buffered job to heartbeat for three leases', LONG);
    const done = completions(worker, 2);
    gate.resolve();
    await within(done, LONG, 'both jobs');
    assert.deepEqual(ran.map((r) => r.id), [blocker!.id, waiting!.id]);
    assert.equal(ran[1]!.attempt, 1, 'the buffered job ran on its first attempt');
    assert.equal(ran[1]!.error, null, 'its lease never ran out');
    assert.deepEqual(refused, []);
  } finally {
    gate.resolve();
    await worker.close();
  }
});

test('close() hands prefetched jobs back at once (queued again, attempt unchanged)', async () => {
  const gate = deferred();
  const worker = server.drove.worker<{ warm?: boolean; block?: boolean }>('handback', async (ctx) => {
    if (ctx.payload.block) await gate.promise;
    return null;
  }, { concurrency: 1, maxPrefetch: 2 });
  try {
    await warmUp(worker, 'handback');
    await until(() => worker.prefetch === 2, 'the prefetch to have a size');
    const jobs = await server.drove.submitMany([0, 1, 2].map(() => ({ queue: 'handback', payload: { block: true } })));
    await until(() => worker.running === 1 && worker.buffered === 2, 'one job running, two claimed ahead');
    const released: string[] = [];
    const bothReleased = new Promise<void>((res) =>
      worker.on('released', (job: ClaimedJob) => {
        released.push(job.id);
        if (released.length === 2) res();
      }),
    );
    const closing = worker.close();
    // Handed back while the running handler still has its grace.
    await within(bothReleased, LONG, 'the buffered jobs to be released');
    assert.equal(worker.running, 1, 'the running handler is still running');
    for (const id of released) {
      const job = await server.drove.get(id);
      assert.equal(job.state, 'queued');
      assert.equal(job.attempt, 1, 'a release uses no attempt');
      assert.equal(job.error, null);
    }
    const running = jobs.filter((j) => !released.includes(j.id));
    assert.equal(running.length, 1);
    assert.equal((await server.drove.get(running[0]!.id)).state, 'running');
    gate.resolve();
    await within(closing, LONG, 'close()');
    assert.equal((await server.drove.get(running[0]!.id)).state, 'succeeded');
    // The next run of a released job keeps its attempt number.
    const again = server.drove.worker<{ block?: boolean }>('handback', (ctx) => ctx.attempt);
    try {
      const next = completions(again, 2);
      const results = await within(next, LONG, 'the released jobs to run again');
      for (const job of results) assert.equal(job.attempt, 1);
    } finally {
      await again.close();
    }
  } finally {
    gate.resolve();
    await worker.close();
  }
});
