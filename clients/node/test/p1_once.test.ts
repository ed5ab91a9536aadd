// P1 from Node (docs/PROBLEMS.md, "Same key, same work"): 500 concurrent `once` calls
// over 10 keys against a Node worker whose handler takes 300 ms run exactly 10 computations,
// and every caller gets its own key's result. In one process, concurrent calls for one key
// share one request; a caller that aborts leaves alone.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove, type JobContext } from 'drove-client';

import { countingFetch, deferred, startServer, within, type Server } from './harness.js';

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

interface Answer {
  item: number;
  execution: number;
  jobId: string;
}

test('500 concurrent once() calls over 10 keys run 10 computations and answer every caller', async (t) => {
  const { drove } = server;
  const executions = new Map<number, number>();
  let total = 0;
  const worker = drove.worker<{ item: number }, Answer>(
    'p1-slam',
    async (ctx: JobContext<{ item: number }>) => {
      const item = ctx.payload.item;
      total += 1;
      const execution = (executions.get(item) ?? 0) + 1;
      executions.set(item, execution);
      await sleep(300); // the expensive computation
      return { item, execution, jobId: ctx.id };
    },
    { concurrency: 16 },
  );
  try {
    const started = Date.now();
    const answeredAt: number[] = [];
    // The result is cached for a minute (reuseForMs), as a web service would: sending 500
    // requests from one Node process takes longer than the 300 ms computation on a small
    // machine, so the last callers arrive after their key's job succeeded and must reuse it
    // rather than compute again. Callers that arrive while it runs join it.
    const calls = Array.from({ length: 500 }, (_, i) => {
      const item = i % 10;
      return drove.once<Answer>('p1-slam', `item:${item}`, { item }, { reuseForMs: 60_000, waitMs: 60_000 }).then((a) => {
        answeredAt.push(Date.now());
        return { asked: item, answer: a };
      });
    });
    const results = await within(Promise.all(calls), 90_000, '500 once() answers');
    const span = Math.max(...answeredAt) - started;

    assert.equal(total, 10, `expected 10 computations, the handler ran ${total} times`);
    for (const [item, n] of executions) assert.equal(n, 1, `item ${item} was computed ${n} times`);
    const jobOf = new Map<number, string>();
    for (const { asked, answer } of results) {
      assert.equal(answer.item, asked, 'a caller got another key\'s result');
      assert.equal(answer.execution, 1);
      const seen = jobOf.get(asked);
      if (seen === undefined) jobOf.set(asked, answer.jobId);
      else assert.equal(answer.jobId, seen, `callers of item ${asked} got results of different jobs`);
    }
    assert.equal(jobOf.size, 10);
    const counts = (await drove.queue('p1-slam')).counts;
    assert.equal(counts.succeeded, 10, `the queue holds ${JSON.stringify(counts)}`);
    t.diagnostic(`P1: 500 callers answered by 10 computations; last answer ${span} ms after the first call`);
    // PROBLEMS.md asks for "well under a second" from the first to the last answer; a shared CI
    // machine is allowed ten times that before this fails.
    assert.ok(span < 10_000, `the last caller waited ${span} ms`);
  } finally {
    await worker.close();
  }
});

test('once() reuses a recent success for reuseForMs, then computes again', async () => {
  const { drove } = server;
  let runs = 0;
  const worker = drove.worker('p1-reuse', async () => ({ run: ++runs }), { concurrency: 2 });
  try {
    const a = await drove.once<{ run: number }>('p1-reuse', 'k', null, { reuseForMs: 60_000 });
    const b = await drove.once<{ run: number }>('p1-reuse', 'k', null, { reuseForMs: 60_000 });
    assert.deepEqual([a.run, b.run], [1, 1], 'the second call should reuse the first result');
    const c = await drove.once<{ run: number }>('p1-reuse', 'k', null, { reuseForMs: 0 });
    assert.equal(c.run, 2, 'without reuse the key computes again');
  } finally {
    await worker.close();
  }
});

test('50 concurrent once() calls for one key in one process send one submit', async () => {
  const counter = countingFetch();
  const client = new Drove({ url: server.url, fetch: counter.fetch });
  let runs = 0;
  const worker = server.drove.worker('p1-coalesce', async () => ({ run: ++runs }));
  try {
    const calls = Array.from({ length: 50 }, (_, i) => client.once<{ run: number }>('p1-coalesce', 'k', { caller: i }));
    const answers = await within(Promise.all(calls), 30_000, '50 once() answers');
    assert.equal(runs, 1);
    for (const a of answers) assert.deepEqual(a, { run: 1 });
    const submits = counter.paths.filter((p) => p === 'POST /v1/jobs');
    assert.equal(submits.length, 1, `requests: ${counter.paths.join(', ')}`);
    assert.ok(counter.count <= 2, `one submit (and at most one more poll): ${counter.paths.join(', ')}`);

    // Settled calls are forgotten: the next call asks the server again (which reuses nothing
    // without reuseForMs: a new computation).
    const again = await client.once<{ run: number }>('p1-coalesce', 'k', null);
    assert.deepEqual(again, { run: 2 });
    assert.equal(counter.paths.filter((p) => p === 'POST /v1/jobs').length, 2);
  } finally {
    await worker.close();
  }
});

test('a once() caller whose signal aborts leaves alone; the shared call goes on for the others', async () => {
  const counter = countingFetch();
  const client = new Drove({ url: server.url, fetch: counter.fetch });
  const started = deferred();
  const release = deferred();
  const worker = server.drove.worker('p1-leave', async () => {
    started.resolve();
    await release.promise;
    return 'shared';
  });
  try {
    const leaving = new AbortController();
    const staying = new AbortController();
    const a = client.once<string>('p1-leave', 'k', null, { signal: leaving.signal });
    const b = client.once<string>('p1-leave', 'k', null, { signal: staying.signal });
    const c = client.once<string>('p1-leave', 'k', null);
    await within(started.promise, 30_000, 'the job to start');
    leaving.abort(new Error('this caller gave up'));
    await assert.rejects(a, /this caller gave up/);
    release.resolve();
    assert.deepEqual(await within(Promise.all([b, c]), 30_000, 'the others\' answers'), ['shared', 'shared']);
    assert.equal(counter.paths.filter((p) => p === 'POST /v1/jobs').length, 1);

    // When every caller leaves, the shared request is aborted and forgotten.
    const gone = new AbortController();
    const d = client.once('p1-leave', 'k2', null, { signal: gone.signal, waitMs: 60_000 });
    gone.abort(new Error('gone'));
    await assert.rejects(d, /gone/);
    const e = client.once('p1-leave', 'k2', null, { waitMs: 60_000 });
    assert.equal(await within(e, 30_000, 'a fresh call after everyone left'), 'shared');
  } finally {
    release.resolve();
    await worker.close();
  }
});
