// A worker rides out a server outage (issue 14): the server is SIGKILLed while a handler saves
// a checkpoint every 100 ms and restarted 5.5 s later on the same port and database, longer
// than the 3 s lease. Every checkpoint promise settles, the handler's slot is freed, the
// worker sends a bounded number of requests while the server is away (also one holding 20
// jobs), and the job resumes from its checkpoint and succeeds once the server is back. Also: a lost lease settles the
// checkpoint a heartbeat still carries (through a partitioned proxy), and a 401 stops a worker.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove, DroveError, LeaseLostError, type ClaimedJob, type JobContext } from 'drove-client';

import { Partition, countingFetch, deferred, nextEvent, startServer, until, within, type Server } from './harness.js';

const LONG = 60_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** What became of each saveCheckpoint() call. */
interface Save {
  attempt: number;
  next: number;
  outcome: 'pending' | 'resolved' | unknown;
}

test('saveCheckpoint and progress ride out a server outage longer than the lease; the job resumes and succeeds', async (t) => {
  const PAGES = 60;
  const OUTAGE_MS = 5_500;
  const LEASE_MS = 3_000;
  await server.drove.setQueue('outage', { backoff: { baseMs: 0, maxMs: 0 } });
  const counter = countingFetch();
  const client = new Drove({ url: server.url, fetch: counter.fetch });

  const written = new Map<number, number>(); // page -> times written
  const saves: Save[] = [];
  const starts: Array<{ attempt: number; from: number }> = [];
  const reachedPage10 = deferred();
  const firstRunOver = deferred<unknown>();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);

  const worker = client.worker<{ pages: number }>(
    'outage',
    async (ctx: JobContext<{ pages: number }>) => {
      const from = (ctx.checkpoint as { next?: number } | null)?.next ?? 0;
      starts.push({ attempt: ctx.attempt, from });
      let done = from;
      // Progress is also reported on a timer, never awaited, straight through the outage.
      const ticker = setInterval(() => ctx.progress(done, PAGES, 'ticking'), 50);
      try {
        for (let page = from; page < PAGES; page++) {
          await sleep(100); // one page of work
          written.set(page, (written.get(page) ?? 0) + 1);
          done = page + 1;
          ctx.progress(done, PAGES, `page ${done} of ${PAGES}`);
          const save: Save = { attempt: ctx.attempt, next: page + 1, outcome: 'pending' };
          saves.push(save);
          await ctx.saveCheckpoint({ next: page + 1 }).then(
            () => (save.outcome = 'resolved'),
            (err: unknown) => {
              save.outcome = err;
              throw err;
            },
          );
          if (ctx.attempt === 1 && page + 1 === 10) reachedPage10.resolve();
        }
        return { pages: PAGES };
      } catch (err) {
        if (ctx.attempt === 1) firstRunOver.resolve(err);
        throw err;
      } finally {
        clearInterval(ticker);
      }
    },
    { leaseMs: LEASE_MS, progressIntervalMs: 0 },
  );
  const errors: unknown[] = [];
  worker.on('error', (err) => errors.push(err));
  const offline = nextEvent<[DroveError]>(worker, 'offline');
  const online = nextEvent<[number]>(worker, 'online');

  // A second worker holds 20 jobs through the same outage (handlers that report progress and
  // stop when their signal fires): its requests must not grow with the jobs it holds.
  const MANY = 20;
  const manyCounter = countingFetch();
  const manyClient = new Drove({ url: server.url, fetch: manyCounter.fetch });
  let manyStarted = 0;
  const allStarted = deferred();
  const many = manyClient.worker(
    'outage-many',
    async (ctx) => {
      if (ctx.attempt > 1) return 'again';
      if (++manyStarted === MANY) allStarted.resolve();
      const ticker = setInterval(() => ctx.progress(Date.now() % 1_000, 1_000), 100);
      try {
        await new Promise((res) => ctx.signal.addEventListener('abort', res, { once: true }));
        throw ctx.signal.reason;
      } finally {
        clearInterval(ticker);
      }
    },
    { concurrency: MANY, leaseMs: LEASE_MS },
  );
  many.on('error', () => undefined);
  many.on('offline', () => undefined);
  many.on('online', () => undefined);
  try {
    await server.drove.setQueue('outage-many', { backoff: { baseMs: 0, maxMs: 0 } });
    const manyJobs = await server.drove.submitMany(Array.from({ length: MANY }, (_, i) => ({ queue: 'outage-many', payload: { i } })));
    const job = await client.submit('outage', { pages: PAGES });
    await within(Promise.all([reachedPage10.promise, allStarted.promise]), LONG, 'the handler to reach page 10 and the 20 others to start');

    await server.kill();
    const killedAt = Date.now();
    const sentBefore = counter.count;
    const manySentBefore = manyCounter.count;
    await within(offline, LONG, 'the worker to notice the server is away');

    // The lease (3 s) runs out during the outage: the checkpoint on its way must settle, the
    // handler (which awaits it) ends, and its slot is free again, all while the server is down.
    const why = await within(firstRunOver.promise, LONG, 'the first run to end during the outage');
    assert.ok(why instanceof LeaseLostError, `the first run ended with ${String(why)}`);
    await until(() => worker.running === 0, 'the slot to be freed', 5_000);
    assert.ok(Date.now() - killedAt < OUTAGE_MS, 'the run should end within the outage');

    // The outage itself: the server stays down for 5.5 s in all (the scenario, not a wait for
    // something to happen).
    await sleep(Math.max(0, killedAt + OUTAGE_MS - Date.now()));
    const sentDuringOutage = counter.count - sentBefore;
    const outagePaths = counter.paths.slice(sentBefore);
    const manySentDuringOutage = manyCounter.count - manySentBefore;
    const manyOutagePaths = manyCounter.paths.slice(manySentBefore);
    assert.equal(many.running, 0, 'the 20 handlers stopped when their leases were lost');
    await server.restart();
    const offlineMs = (await within(online, LONG, 'the worker to see the server again'))[0];

    const done = await new Drove({ url: server.url }).get(job.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.result, { pages: PAGES });
    assert.equal(done.attempt, 2, 'the lost lease used one attempt');

    // Every saveCheckpoint() settled; in the first run, only those after the lease was lost
    // were refused, each with LeaseLostError.
    for (const s of saves) assert.notEqual(s.outcome, 'pending', `the checkpoint of page ${s.next} (attempt ${s.attempt}) never settled`);
    const refused = saves.filter((s) => s.outcome !== 'resolved');
    assert.ok(refused.length >= 1, 'the checkpoint in flight at the lease loss should be refused');
    for (const s of refused) {
      assert.equal(s.attempt, 1);
      assert.ok(s.outcome instanceof LeaseLostError, `checkpoint ${s.next} was refused with ${String(s.outcome)}`);
    }

    // Every page was written; at most one twice (the one whose checkpoint was lost), and the
    // second run resumed from the last checkpoint the first one saw stored.
    for (let p = 0; p < PAGES; p++) assert.ok(written.has(p), `page ${p} was never written`);
    const twice = [...written].filter(([, n]) => n > 1);
    assert.ok(twice.length <= 1 && twice.every(([, n]) => n === 2), `pages written more than once: ${JSON.stringify(twice)}`);
    const lastStored = Math.max(...saves.filter((s) => s.attempt === 1 && s.outcome === 'resolved').map((s) => s.next));
    assert.equal(starts.length, 2);
    assert.ok(starts[1]!.from >= lastStored, `the second run started at page ${starts[1]!.from}; page ${lastStored} was checkpointed`);

    for (const j of manyJobs) {
      const d = await server.drove.get(j.id, { waitMs: LONG });
      assert.equal(d.state, 'succeeded', JSON.stringify(d));
      assert.equal(d.attempt, 2);
    }

    assert.deepEqual(unhandled, [], 'no promise may be left rejected without a handler');
    t.diagnostic(
      `requests during the ${OUTAGE_MS} ms outage: ${sentDuringOutage} (${summarise(outagePaths)}); ` +
        `offline for ${offlineMs} ms; 'error' events: ${errors.length}; pages written twice: ${twice.map(([p]) => p).join(', ') || 'none'}; ` +
        `second run resumed at page ${starts[1]!.from}`,
    );
    t.diagnostic(`the worker holding ${MANY} jobs sent ${manySentDuringOutage} requests during the outage (${summarise(manyOutagePaths)})`);
    assert.ok(sentDuringOutage <= 60, `the worker sent ${sentDuringOutage} requests while the server was down: ${summarise(outagePaths)}`);
    assert.ok(manySentDuringOutage <= 60, `the worker holding ${MANY} jobs sent ${manySentDuringOutage} requests while the server was down: ${summarise(manyOutagePaths)}`);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await Promise.all([worker.close({ graceMs: 5_000 }), many.close({ graceMs: 5_000 })]);
  }
});

function summarise(paths: string[]): string {
  const by = new Map<string, number>();
  for (const p of paths) {
    const key = p.replace(/\/\d+\//, '/ID/');
    by.set(key, (by.get(key) ?? 0) + 1);
  }
  return [...by].map(([k, n]) => `${n} x ${k}`).join(', ');
}

test('a lost lease settles the checkpoint a heartbeat still carries, aborts the signal, and reports a handler that ignores it', async () => {
  // The worker reaches the server through a proxy the test partitions: the heartbeat that
  // carries the checkpoint is held on its way and never answered, and the lease runs out.
  const proxy = new Partition(server.url);
  await proxy.listen();
  const viaProxy = new Drove({ url: proxy.url });
  const started = deferred<JobContext>();
  const checkpoint = deferred<unknown>();
  const stuckReported = deferred<[ClaimedJob, unknown, number]>();
  const worker = viaProxy.worker(
    'partitioned',
    async (ctx) => {
      started.resolve(ctx);
      await ctx.saveCheckpoint({ step: 1 });
      proxy.partition();
      checkpoint.resolve(
        await ctx.saveCheckpoint({ step: 2 }).then(
          () => 'resolved',
          (err: unknown) => err,
        ),
      );
      // A handler that ignores its signal: it returns only once the worker has reported it.
      await stuckReported.promise;
      return { late: true };
    },
    { leaseMs: 1_000, stuckAfterMs: 300 },
  );
  worker.on('stuck', (job: ClaimedJob, reason: unknown, ms: number) => stuckReported.resolve([job, reason, ms]));
  worker.on('refused', () => undefined);
  try {
    const job = await server.drove.submit('partitioned', null);
    const ctx = await within(started.promise, LONG, 'the handler to start');
    const outcome = await within(checkpoint.promise, LONG, 'the checkpoint in flight to settle');
    assert.ok(outcome instanceof LeaseLostError, `saveCheckpoint settled with ${String(outcome)}`);
    assert.ok(ctx.signal.aborted);
    assert.ok(ctx.signal.reason instanceof LeaseLostError, String(ctx.signal.reason));
    assert.equal(worker.running, 1, 'the handler still holds its slot');
    const [stuckJob, reason] = await within(stuckReported.promise, LONG, 'the stuck handler to be reported');
    assert.equal(stuckJob.id, job.id);
    assert.ok(reason instanceof LeaseLostError);
    await until(() => worker.running === 0, 'the slot to be freed once the handler returned', 5_000);
    // A second saveCheckpoint after the loss is refused at once.
    await assert.rejects(ctx.saveCheckpoint({ step: 3 }), LeaseLostError);
    const seen = await server.drove.get(job.id);
    assert.deepEqual(seen.checkpoint, { step: 1 }, 'the held checkpoint must not have been stored');
    await server.drove.cancel(job.id).catch(() => undefined);
  } finally {
    proxy.heal();
    await worker.close({ graceMs: 5_000 });
    await proxy.close();
  }
});

test('a 401 stops the worker with a clear error instead of retrying forever', async () => {
  const guarded = await startServer({ token: 's3cret' });
  try {
    const counter = countingFetch();
    const wrong = new Drove({ url: guarded.url, token: 'not-the-token', fetch: counter.fetch });
    const worker = wrong.worker('auth', () => null, { pollMs: 1_000 });
    const errors: unknown[] = [];
    worker.on('error', (err) => errors.push(err));
    const closed = nextEvent<[unknown]>(worker, 'closed');
    const stoppedBy = await within(worker.done, LONG, 'the worker to stop');
    assert.ok(stoppedBy instanceof DroveError, String(stoppedBy));
    assert.equal(stoppedBy.status, 401);
    assert.equal(stoppedBy.code, 'unauthorized');
    assert.deepEqual(errors, [stoppedBy], 'the error is reported once');
    assert.equal((await closed)[0], stoppedBy);
    await within(worker.close(), LONG, 'close() after the stop');
    assert.equal(counter.count, 1, `the worker sent ${counter.count} requests: ${counter.paths.join(', ')}`);
  } finally {
    await guarded.stop();
  }
});
