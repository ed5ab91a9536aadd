// The batch worker (issue 15): one handler call per claimed batch, one outcome per job reported on
// its own (one throttled job is that job alone), a handler that throws fails the whole batch,
// every job heartbeats while its batch runs, and a per-claim rate hands out batches.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  Drove,
  Permanent,
  Throttled,
  partial,
  type BatchItem,
  type BatchOutcome,
  type ClaimedJob,
  type Worker,
} from 'drove-client';

import { countingFetch, deferred, startServer, until, within, type Server } from './harness.js';

const LONG = 60_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Resolves once `worker` has heard `n` ends stored (completed or failed). */
function ends(worker: Worker<any, any>, n: number): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    const one = () => {
      if (++seen === n) resolve();
    };
    worker.on('completed', one);
    worker.on('failed', one);
  });
}

test('45 jobs, max 20, lingerMs 200: batches of up to 20, each job ends with its own outcome', async () => {
  const N = 45;
  const jobs = await server.drove.submitMany(Array.from({ length: N }, (_, i) => ({ queue: 'batch', payload: { i } })));
  const counter = countingFetch();
  const drove = new Drove({ url: server.url, fetch: counter.fetch });
  const sizes: number[] = [];
  const worker = drove.batchWorker<{ i: number }, { i: number }>(
    'batch',
    (batch: BatchItem<{ i: number }>[]) => {
      sizes.push(batch.length);
      return batch.map((item): BatchOutcome<{ i: number }> => {
        if (item.payload.i === 7) return new Throttled(60_000, 'the provider said 429 for item 7');
        if (item.payload.i === 8) return partial({ i: 8 });
        return { i: item.payload.i };
      });
    },
    { max: 20, lingerMs: 200 },
  );
  const failed: Array<[string, string, string]> = [];
  worker.on('failed', (job: ClaimedJob, _err: unknown, kind: string, state: string) => failed.push([job.id, kind, state]));
  try {
    await within(ends(worker, N), LONG, `${N} ends`);
    assert.deepEqual(sizes, [20, 20, 5], 'two full batches, then the five left after the linger');
    assert.deepEqual(failed, [[jobs[7]!.id, 'throttled', 'scheduled']], 'only item 7 is throttled');
    for (const [i, submitted] of jobs.entries()) {
      const job = await server.drove.get(submitted.id);
      if (i === 7) {
        assert.equal(job.state, 'scheduled');
        assert.equal(job.error?.kind, 'throttled');
        assert.equal(job.error?.message, 'the provider said 429 for item 7');
        continue;
      }
      assert.equal(job.state, 'succeeded', `job ${i}`);
      assert.deepEqual(job.result, { i });
      assert.equal(job.partial, i === 8, `job ${i}: partial`);
    }
    const claims = counter.paths.filter((p) => p.endsWith('/claim')).length;
    const finishes = counter.paths.filter((p) => p === 'POST /v1/jobs/finish').length;
    // Each batch's ends ride on the next claim: no finish requests.
    assert.equal(finishes, 0, `requests: ${counter.paths.join(', ')}`);
    assert.ok(claims <= 5, `claims: ${claims}`);
    console.log(`45 jobs in batches of ${sizes.join(', ')}: ${claims} claims, ${finishes} finish requests`);
    await server.drove.cancel(jobs[7]!.id);
  } finally {
    await worker.close();
  }
});

test('a batch handler that throws fails every job of the batch with that error, classified', async () => {
  const jobs = await server.drove.submitMany([0, 1, 2].map((i) => ({ queue: 'batch-throws', payload: { i } })));
  const worker = server.drove.batchWorker('batch-throws', () => {
    throw new Permanent('the batch endpoint rejected the request');
  }, { max: 10, lingerMs: 50 });
  const kinds: string[] = [];
  worker.on('failed', (_job: ClaimedJob, _err: unknown, kind: string) => kinds.push(kind));
  try {
    await within(ends(worker, 3), LONG, 'three failures');
    assert.deepEqual(kinds, ['permanent', 'permanent', 'permanent']);
    for (const j of jobs) {
      const job = await server.drove.get(j.id);
      assert.equal(job.state, 'failed');
      assert.equal(job.error?.kind, 'permanent');
      assert.equal(job.error?.message, 'the batch endpoint rejected the request');
    }
  } finally {
    await worker.close();
  }
});

test('every job of a batch heartbeats while the batch runs', async () => {
  const counter = countingFetch();
  const drove = new Drove({ url: server.url, fetch: counter.fetch });
  const jobs = await server.drove.submitMany([0, 1, 2, 3].map((i) => ({ queue: 'batch-beats', payload: { i } })));
  const beats = (id: string) => counter.paths.filter((p) => p === `POST /v1/jobs/${id}/heartbeat`).length;
  const allBeat = deferred();
  const worker = drove.batchWorker<{ i: number }>('batch-beats', async (batch) => {
    // Runs for three of its 1 s leases: only heartbeats keep them.
    await allBeat.promise;
    return batch.map((item) => item.payload.i * 10);
  }, { max: 10, lingerMs: 50, leaseMs: 1_000 });
  const refused: unknown[] = [];
  worker.on('refused', (_job: ClaimedJob, err: unknown) => refused.push(err));
  try {
    await until(() => jobs.every((j) => beats(j.id) >= 8), 'every job of the batch to heartbeat for three leases', LONG);
    const done = ends(worker, 4);
    allBeat.resolve();
    await within(done, LONG, 'the batch to end');
    assert.deepEqual(refused, []);
    for (const j of jobs) {
      const job = await server.drove.get(j.id);
      assert.equal(job.state, 'succeeded');
      assert.equal(job.attempt, 1);
      assert.equal(job.result, (j.payload as { i: number }).i * 10);
    }
  } finally {
    allBeat.resolve();
    await worker.close();
  }
});

test('on a queue rated per claim, the handler gets batches, not one job per call', async () => {
  await server.drove.setQueue('per-claim', { rate: { limit: 5, periodMs: 1_000, per: 'claim' } });
  const N = 30;
  await server.drove.submitMany(Array.from({ length: N }, (_, i) => ({ queue: 'per-claim', payload: { i } })));
  const sizes: number[] = [];
  const worker = server.drove.batchWorker<{ i: number }>('per-claim', (batch) => {
    sizes.push(batch.length);
    return batch.map(() => null);
  }, { max: 10, lingerMs: 100 });
  try {
    await within(ends(worker, N), LONG, `${N} jobs`);
    console.log(`per-claim rate of 5/s, max 10: batch sizes ${sizes.join(', ')}`);
    assert.equal(sizes.reduce((a, b) => a + b, 0), N);
    assert.ok(Math.max(...sizes) > 1, `batch sizes: ${sizes.join(', ')}`);
    assert.ok(sizes.length <= N / 2, `${sizes.length} handler calls for ${N} jobs: ${sizes.join(', ')}`);
    assert.equal((await server.drove.queue('per-claim')).counts.succeeded, N);
  } finally {
    await worker.close();
  }
});

test('batchWorker checks its options; close() of an idle batch worker aborts its long poll', async () => {
  assert.throws(() => server.drove.batchWorker('x', () => [], { max: 0, lingerMs: 0 }), RangeError);
  assert.throws(() => server.drove.batchWorker('x', () => [], { max: 1001, lingerMs: 0 }), RangeError);
  assert.throws(() => server.drove.batchWorker('x', () => [], { max: 5, lingerMs: -1 }), RangeError);
  const idle = server.drove.batchWorker('batch-idle', () => [], { max: 5, lingerMs: 100, pollMs: 60_000 });
  await until(() => server.drove.queue('batch-idle').then(() => true, () => false), "the idle worker's claim to reach the server");
  await within(idle.close(), 5_000, 'close() to abort the 60 s long poll');
});
