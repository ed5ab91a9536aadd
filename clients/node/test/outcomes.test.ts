// What a handler's outcome does on the server: each thrown error reaches it as the right kind,
// a cancelled job aborts the handler's signal, a lost lease aborts it too and the late
// completion is refused, and close() stops claiming, waits out its grace and releases the rest.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  JobCancelledError,
  JobFailedError,
  JobTimeoutError,
  LeaseLostError,
  Permanent,
  Snooze,
  Throttled,
  WorkerClosedError,
  type ClaimedJob,
  type Job,
  type JobContext,
} from 'drove-client';

import { Partition, deferred, nextEvent, startServer, until, within, type Server } from './harness.js';

const LONG = 30_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

type Mode = 'throttled' | 'snooze' | 'retryable' | 'permanent';

test('each thrown outcome reaches the server as its error kind, and throttled/snooze use no attempt', async () => {
  const { drove } = server;
  await drove.setQueue('kinds', { backoff: { baseMs: 0, maxMs: 0 } });
  // What each job's second run saw: its attempt number and the error its first run left.
  const second = new Map<Mode, { attempt: number; error: Job['error'] }>();
  const runs = new Map<string, number>();
  const worker = drove.worker<{ mode: Mode }>(
    'kinds',
    (ctx) => {
      const mode = ctx.payload.mode;
      const run = (runs.get(ctx.id) ?? 0) + 1;
      runs.set(ctx.id, run);
      if (run === 1) {
        if (mode === 'throttled') throw new Throttled(50, 'the provider said 429');
        if (mode === 'snooze') throw new Snooze(50);
        if (mode === 'retryable') throw new TypeError('connection reset');
        throw new Permanent('the input is malformed');
      }
      second.set(mode, { attempt: ctx.attempt, error: ctx.job.error });
      return { mode, attempt: ctx.attempt };
    },
    { concurrency: 4 },
  );
  const failedKinds: string[] = [];
  worker.on('failed', (_job: ClaimedJob, _err: unknown, kind: string) => failedKinds.push(kind));
  try {
    const run = (mode: Mode) => drove.submitAndWait<{ mode: Mode; attempt: number }>('kinds', { mode }, { waitMs: LONG });
    const [throttled, snooze, retryable] = await within(
      Promise.all([run('throttled'), run('snooze'), run('retryable')]),
      LONG + 5_000,
      'three jobs to succeed on their second run',
    );
    assert.equal(throttled.attempt, 1, 'a throttled run uses no attempt');
    assert.equal(second.get('throttled')?.error?.kind, 'throttled');
    assert.equal(second.get('throttled')?.error?.message, 'the provider said 429');
    assert.equal(snooze.attempt, 1, 'a snoozed run uses no attempt');
    assert.equal(second.get('snooze')?.error, null, 'a snooze is not an error');
    assert.equal(retryable.attempt, 2, 'a retryable failure uses an attempt');
    assert.equal(second.get('retryable')?.error?.kind, 'retryable');
    assert.equal(second.get('retryable')?.error?.message, 'TypeError: connection reset');

    // The worker hears its failure was stored only after the waiters do: wait for its event.
    const permanentStored = nextEvent<[ClaimedJob, unknown, string]>(worker, 'failed', (_j, _e, kind) => kind === 'permanent');
    const failure = await run('permanent').then(
      () => assert.fail('a permanent failure must reject'),
      (e: unknown) => e,
    );
    assert.ok(failure instanceof JobFailedError, String(failure));
    assert.equal(failure.kind, 'permanent');
    assert.equal(failure.job.state, 'failed');
    assert.equal(failure.job.attempt, 1, 'a permanent failure ends the job at once');
    assert.equal(failure.job.error?.message, 'the input is malformed');
    await within(permanentStored, LONG, 'the worker to hear its permanent failure was stored');
    assert.deepEqual(failedKinds.sort(), ['permanent', 'retryable', 'snooze', 'throttled']);
  } finally {
    await worker.close();
  }
});

test('Throttled(retryAfterMs) holds the job for that long', async () => {
  const { drove } = server;
  const worker = drove.worker('hold', () => {
    throw new Throttled(60_000);
  });
  try {
    const failed = nextEvent<[ClaimedJob, unknown, string, string]>(worker, 'failed');
    const job = await drove.submit('hold', null);
    const [, , kind, state] = await within(failed, LONG, 'the throttled run to be stored');
    assert.equal(kind, 'throttled');
    assert.equal(state, 'scheduled');
    const held = await drove.get(job.id);
    assert.equal(held.state, 'scheduled');
    assert.equal(held.attempt, 1);
    assert.equal(held.error?.kind, 'throttled');
    const wait = Date.parse(held.run_at) - Date.parse(held.error!.at);
    assert.ok(wait >= 59_000 && wait <= 61_000, `held for ${wait} ms, asked for 60000`);
    await drove.cancel(job.id);
  } finally {
    await worker.close();
  }
});

test('a result JSON cannot hold fails the job permanently, saying why', async () => {
  const { drove } = server;
  const worker = drove.worker('not-json', () => ({ big: 1n }));
  try {
    const err = await drove.submitAndWait('not-json', null, { waitMs: LONG }).catch((e: unknown) => e);
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.kind, 'permanent');
    assert.match(err.job.error?.message ?? '', /not JSON/);
  } finally {
    await worker.close();
  }
});

test('a job past its timeout aborts the handler\'s signal and fails with kind timeout', async () => {
  const { drove } = server;
  const aborted = deferred<unknown>();
  const worker = drove.worker('timeouts', async (ctx) => {
    await new Promise<void>((res) => ctx.signal.addEventListener('abort', () => res(), { once: true }));
    aborted.resolve(ctx.signal.reason);
    throw ctx.signal.reason;
  });
  try {
    const err = await drove
      .submitAndWait('timeouts', null, { timeoutMs: 1_000, maxAttempts: 1, waitMs: LONG })
      .catch((e: unknown) => e);
    assert.ok((await within(aborted.promise, LONG, 'the signal to abort')) instanceof JobTimeoutError);
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.kind, 'timeout');
  } finally {
    await worker.close();
  }
});

test('cancelling a running job aborts the handler\'s signal and the job ends cancelled', async () => {
  const { drove } = server;
  const started = deferred<JobContext>();
  const aborted = deferred<unknown>();
  // A short lease: heartbeats (which carry the cancel) go out every third of it.
  const worker = drove.worker(
    'cancel',
    async (ctx) => {
      started.resolve(ctx);
      await new Promise<void>((res) => ctx.signal.addEventListener('abort', () => res(), { once: true }));
      aborted.resolve(ctx.signal.reason);
      throw ctx.signal.reason;
    },
    { leaseMs: 1_000 },
  );
  try {
    const waiting = drove.submitAndWait('cancel', { long: true }, { waitMs: LONG });
    const ctx = await within(started.promise, LONG, 'the handler to start');
    const marked = await drove.cancel(ctx.id);
    assert.equal(marked.state, 'running');
    assert.equal(marked.cancel_requested, true);
    const reason = await within(aborted.promise, LONG, 'the signal to abort');
    assert.ok(reason instanceof JobCancelledError, `the signal's reason is ${String(reason)}`);
    const err = await waiting.then(
      () => assert.fail('a cancelled job must reject submitAndWait'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.kind, 'cancelled');
    assert.equal((await drove.get(ctx.id)).state, 'cancelled');
  } finally {
    await worker.close();
  }
});

test('a lost lease aborts the handler\'s signal, and its late completion is refused', async () => {
  const { drove } = server;
  await drove.setQueue('lost', { leaseMs: 1_000, backoff: { baseMs: 0, maxMs: 0 } });
  // Worker A reaches the server through a proxy that the test cuts (a network partition), so
  // its heartbeats stop arriving and the server hands the job to worker B.
  const proxy = new Partition(server.url);
  await proxy.listen();
  const { Drove } = await import('drove-client');
  const viaProxy = new Drove({ url: proxy.url });
  const aStarted = deferred<JobContext>();
  const aAborted = deferred<unknown>();
  const aMayReturn = deferred();
  const a = viaProxy.worker(
    'lost',
    async (ctx) => {
      aStarted.resolve(ctx);
      ctx.signal.addEventListener('abort', () => aAborted.resolve(ctx.signal.reason), { once: true });
      await aMayReturn.promise; // a zombie: it ignores its signal and finishes anyway
      return { by: 'A' };
    },
    { concurrency: 1 },
  );
  const refused = nextEvent<[ClaimedJob, unknown]>(a, 'refused');
  const bStarted = deferred<JobContext>();
  let b: ReturnType<typeof drove.worker> | undefined;
  try {
    const job = await drove.submit('lost', null);
    const ctxA = await within(aStarted.promise, LONG, 'worker A to start the job');
    proxy.partition();
    const reason = await within(aAborted.promise, LONG, 'worker A\'s signal to abort');
    assert.ok(reason instanceof LeaseLostError, `A's signal reason is ${String(reason)}`);

    b = drove.worker('lost', async (ctx) => {
      bStarted.resolve(ctx);
      return { by: 'B' };
    });
    const ctxB = await within(bStarted.promise, LONG, 'worker B to get the job once A\'s lease ran out');
    assert.equal(ctxB.id, job.id);
    assert.equal(ctxB.attempt, 2, 'a lost lease uses an attempt');
    assert.equal(ctxB.job.error?.kind, 'lost');
    assert.notEqual(ctxB.lease, ctxA.lease);
    const done = await drove.get(job.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(done.result, { by: 'B' });

    proxy.heal();
    aMayReturn.resolve();
    const [refusedJob, why] = await within(refused, LONG, 'A\'s late completion to be refused');
    assert.equal(refusedJob.id, job.id);
    assert.ok(why instanceof LeaseLostError, String(why));
    assert.equal(why.status, 409, 'the server itself refused it');
    const after = await drove.get(job.id);
    assert.deepEqual(after.result, { by: 'B' }, 'the zombie\'s result must not overwrite the newer run');
    assert.equal(after.attempt, 2);
  } finally {
    proxy.heal();
    aMayReturn.resolve();
    await Promise.all([a.close({ graceMs: 5_000 }), b?.close()]);
    await proxy.close();
  }
});

test('close() stops claiming at once, lets handlers finish within the grace, and releases the rest', async () => {
  const { drove } = server;
  const idle = drove.worker('closing-idle', () => null, { pollMs: 60_000 });
  // Wait until the idle worker's long poll has reached the server (the queue exists from its
  // first claim), so that close() has a long poll to abort.
  await until(() => drove.queue('closing-idle').then(() => true, () => false), 'the idle worker\'s claim to reach the server');
  const t0 = Date.now();
  await idle.close();
  const took = Date.now() - t0;
  assert.ok(took < 5_000, `closing an idle worker took ${took} ms; its 60 s long poll must be aborted`);

  const quickStarted = deferred();
  const quickMayFinish = deferred();
  const stuckStarted = deferred<JobContext>();
  const stuckReason = deferred<unknown>();
  const w = drove.worker<{ name: string }>(
    'closing',
    async (ctx) => {
      if (ctx.payload.name === 'quick') {
        quickStarted.resolve();
        await quickMayFinish.promise;
        return { done: true };
      }
      stuckStarted.resolve(ctx);
      await new Promise<void>((res) => ctx.signal.addEventListener('abort', () => res(), { once: true }));
      stuckReason.resolve(ctx.signal.reason);
      throw ctx.signal.reason;
    },
    { concurrency: 2 },
  );
  const quick = await drove.submit('closing', { name: 'quick' });
  const stuck = await drove.submit('closing', { name: 'stuck' });
  await within(Promise.all([quickStarted.promise, stuckStarted.promise]), LONG, 'both handlers to start');
  const closing = w.close({ graceMs: 1_500 });
  quickMayFinish.resolve();
  await within(closing, LONG, 'close() to resolve');
  assert.ok((await stuckReason.promise) instanceof WorkerClosedError);
  const q = await drove.get(quick.id);
  assert.equal(q.state, 'succeeded', 'a handler that finished within the grace completes');
  const s = await drove.get(stuck.id);
  assert.equal(s.state, 'queued', 'a handler still running after the grace is released');
  assert.equal(s.attempt, 1);
  await drove.cancel(stuck.id);
});
