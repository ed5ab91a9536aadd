// The client's calls against a real server: submit and its options, batches, reads and long
// waits, cancel and retry, queue settings, checkpoints and progress, errors and the token.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  Drove,
  DroveError,
  KeyConflictError,
  WaitTimeoutError,
  partial,
  type JobContext,
} from 'drove-client';

import { deferred, startServer, within, type Server } from './harness.js';

const LONG = 30_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test('submit sends every option, and a second submit of a key joins the first', async () => {
  const { drove } = server;
  const runAt = new Date(Date.now() + 3_600_000);
  const a = await drove.submit('opts', { n: 1 }, {
    key: 'k1',
    group: 'g1',
    kind: 'welcome',
    priority: 7,
    runAt,
    maxAttempts: 3,
    timeoutMs: 5_000,
  });
  assert.equal(a.deduplicated, false);
  assert.equal(a.state, 'scheduled');
  assert.equal(Date.parse(a.run_at), runAt.getTime());
  assert.deepEqual(
    [a.key, a.group, a.kind, a.priority, a.max_attempts, a.timeout_ms],
    ['k1', 'g1', 'welcome', 7, 3, 5_000],
  );
  const b = await drove.submit('opts', { n: 2 }, { key: 'k1' });
  assert.equal(b.id, a.id);
  assert.equal(b.deduplicated, true);
  assert.deepEqual(b.payload, { n: 1 }, 'a join changes nothing');

  const replaced = await drove.submit('opts', { n: 3 }, { key: 'k1', onConflict: 'replace', delayMs: 0 });
  assert.equal(replaced.id, a.id);
  assert.deepEqual(replaced.payload, { n: 3 });
  assert.equal(replaced.state, 'queued');

  const err = await drove.submit('opts', null, { key: 'k1', onConflict: 'reject' }).catch((e: unknown) => e);
  assert.ok(err instanceof KeyConflictError, String(err));
  assert.equal(err.status, 409);
  assert.equal(err.code, 'key_conflict');
  await drove.cancel(a.id);
});

test('submitMany answers every job in order', async () => {
  const { drove } = server;
  const specs = Array.from({ length: 1_500 }, (_, i) => ({ queue: 'many', payload: { i }, delayMs: 3_600_000 }));
  const jobs = await drove.submitMany(specs);
  assert.equal(jobs.length, 1_500);
  jobs.forEach((j, i) => assert.deepEqual(j.payload, { i }));
  assert.equal(new Set(jobs.map((j) => j.id)).size, 1_500);
  assert.equal((await drove.queue('many')).counts.scheduled, 1_500);
});

test('invalid input is a DroveError naming the field', async () => {
  const { drove } = server;
  const err = await drove.submit('bad name!', null).catch((e: unknown) => e);
  assert.ok(err instanceof DroveError, String(err));
  assert.equal(err.status, 422);
  assert.equal(err.code, 'invalid_value');
  assert.equal(err.field, 'queue');
  const missing = await drove.get('999999').catch((e: unknown) => e);
  assert.ok(missing instanceof DroveError);
  assert.equal(missing.status, 404);
  const unknownQueue = await drove.queue('never-used').catch((e: unknown) => e);
  assert.ok(unknownQueue instanceof DroveError);
  assert.equal(unknownQueue.status, 404);
});

test('an unreachable server is a DroveError with code "unreachable"', async () => {
  const nobody = new Drove({ url: 'http://127.0.0.1:9' });
  const err = await nobody.submit('q', null).catch((e: unknown) => e);
  assert.ok(err instanceof DroveError, String(err));
  assert.equal(err.status, null);
  assert.equal(err.code, 'unreachable');
  assert.equal(err.transient, true);
});

test('get(id, { waitMs }) answers the job as it is when the wait runs out; submitAndWait throws', async () => {
  const { drove } = server;
  const job = await drove.submit('nobody-works-here', null);
  const t0 = Date.now();
  const seen = await drove.get(job.id, { waitMs: 300 });
  assert.equal(seen.state, 'queued');
  assert.ok(Date.now() - t0 >= 290, 'get with waitMs must wait');
  const err = await drove.submitAndWait('nobody-works-here', null, { waitMs: 300 }).catch((e: unknown) => e);
  assert.ok(err instanceof WaitTimeoutError, String(err));
  assert.equal(err.job.state, 'queued');
});

test('a wait longer than one long poll keeps polling until the job ends', async () => {
  // Polls of at most 200 ms (as behind a proxy that cuts idle requests sooner), and a job that
  // only ends after three polls came back empty: the answer must come from a later poll.
  const polls: string[] = [];
  const thirdPoll = deferred();
  const counting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (String(input).includes('wait=')) {
      polls.push(String(input));
      if (polls.length === 3) thirdPoll.resolve();
    }
    return res;
  };
  const drove = new Drove({ url: server.url, longPollMs: 200, fetch: counting });
  const release = deferred();
  const worker = server.drove.worker('slow', async () => {
    await release.promise;
    return 'finally';
  });
  try {
    const waiting = drove.submitAndWait<string>('slow', null, { waitMs: LONG });
    await within(thirdPoll.promise, LONG, 'three polls');
    release.resolve();
    assert.equal(await within(waiting, LONG, 'the result'), 'finally');
    assert.ok(polls.length >= 4, `${polls.length} polls`);
    assert.match(polls[0]!, /\/v1\/jobs\?wait=200ms$/);
    assert.match(polls[1]!, /\/v1\/jobs\/\d+\?wait=200ms$/);
  } finally {
    release.resolve();
    await worker.close();
  }
});

test('cancel and retry', async () => {
  const { drove } = server;
  const job = await drove.submit('cancel-retry', { x: 1 });
  const cancelled = await drove.cancel(job.id);
  assert.equal(cancelled.state, 'cancelled');
  const again = await drove.cancel(job.id).catch((e: unknown) => e);
  assert.ok(again instanceof DroveError);
  assert.equal(again.status, 409);
  const retried = await drove.retry(job.id);
  assert.equal(retried.state, 'queued');
  assert.equal(retried.attempt, 0);
  await drove.cancel(job.id);
});

test('setQueue takes camelCase settings; queues() lists them', async () => {
  const { drove } = server;
  const q = await drove.setQueue('settings', {
    concurrency: 4,
    groupConcurrency: 1,
    rate: { limit: 100, periodMs: 1_000, burst: 10 },
    backoff: { baseMs: 10, maxMs: 1_000 },
    leaseMs: 5_000,
    reuseForMs: 60_000,
    maxAttempts: 7,
  });
  assert.equal(q.name, 'settings');
  assert.equal(q.config.group_concurrency, 1);
  assert.deepEqual(q.config.rate, { limit: 100, period_ms: 1_000, burst: 10 });
  assert.deepEqual(q.config.backoff, { base_ms: 10, max_ms: 1_000 });
  assert.equal(q.config.lease_ms, 5_000);
  const cleared = await drove.setQueue('settings', { rate: null });
  assert.equal(cleared.config.rate, null);
  assert.equal(cleared.config.concurrency, 4, 'absent settings are left as they are');
  const all = await drove.queues();
  assert.ok(all.some((x) => x.name === 'settings' && x.config.max_attempts === 7));
  const bad = await drove.setQueue('settings', { concurrency: 0 }).catch((e: unknown) => e);
  assert.ok(bad instanceof DroveError);
  assert.equal(bad.status, 422);
});

test('saveCheckpoint resolves once the server stored it; progress reaches the server', async () => {
  const { drove } = server;
  const saved = deferred<JobContext>();
  const goOn = deferred();
  const worker = drove.worker(
    'checkpoints',
    async (ctx) => {
      ctx.progress(3, 10, 'three of ten');
      await ctx.saveCheckpoint({ cursor: 'abc' });
      saved.resolve(ctx);
      await goOn.promise;
      return partial({ done: 3, of: 10 });
    },
    { progressIntervalMs: 0 },
  );
  try {
    const job = await drove.submit('checkpoints', null);
    await within(saved.promise, LONG, 'the checkpoint to be saved');
    const seen = await drove.get(job.id);
    assert.deepEqual(seen.checkpoint, { cursor: 'abc' });
    assert.deepEqual(seen.progress, { done: 3, total: 10, message: 'three of ten' });
    goOn.resolve();
    const done = await drove.get(job.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded');
    assert.equal(done.partial, true);
    assert.deepEqual(done.result, { done: 3, of: 10 });
  } finally {
    goOn.resolve();
    await worker.close();
  }
});

test('a server with a token refuses a client without it', async () => {
  const guarded = await startServer({ token: 's3cret' });
  try {
    const without = new Drove({ url: guarded.url });
    const err = await without.queues().catch((e: unknown) => e);
    assert.ok(err instanceof DroveError);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'unauthorized');
    const worker = guarded.drove.worker('tok', (ctx) => ctx.payload);
    try {
      assert.deepEqual(await guarded.drove.submitAndWait('tok', { ok: 1 }, { waitMs: LONG }), { ok: 1 });
    } finally {
      await worker.close();
    }
  } finally {
    await guarded.stop();
  }
});
