// Jobs that wait on jobs, and schedules, from Node against a real `drove serve`: a parent that
// fans out 2,000 children to two worker processes (one SIGKILLed and replaced) and fans in once;
// the three ways a run's end reaches the server all carry await_children; batches of children
// above 10,000; a chain of dependencies and a failed one; follow-ups; stale answers; schedules.
// Every wait is on an event or a state, with a generous bound; nothing is timed.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  Drove,
  DroveError,
  JobFailedError,
  Permanent,
  awaitChildren,
  type ClaimedJob,
  type Job,
  type JobContext,
} from 'drove-client';

import { LineProcess, PACKAGE_DIR, deferred, nextEvent, startServer, within, type Server } from './harness.js';

const LONG = 120_000;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

function childWorker(): LineProcess {
  return new LineProcess(process.execPath, [join(PACKAGE_DIR, 'build', 'test', 'fixtures', 'child-worker.js')], {
    DROVE_URL: server.url,
  });
}

/** The most a child worker process reported done. */
function reportedDone(p: LineProcess): number {
  return Math.max(0, ...p.lines.filter((l: any) => l?.event === 'done').map((l: any) => l.done as number));
}

/** A fetch that keeps every request's method, path and body text. */
function recordingFetch(): { fetch: typeof fetch; sent: Array<{ method: string; path: string; body: string }> } {
  const sent: Array<{ method: string; path: string; body: string }> = [];
  const decoder = new TextDecoder();
  const f = ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const body = init?.body instanceof Uint8Array ? decoder.decode(init.body) : typeof init?.body === 'string' ? init.body : '';
    sent.push({ method: init?.method ?? 'GET', path: new URL(String(input)).pathname, body });
    return fetch(input, init);
  }) as typeof fetch;
  return { fetch: f, sent };
}

test('fan-out: 2,000 children run by two worker processes, one SIGKILLed and replaced; the fan-in runs once and reads every child', async (t) => {
  const { drove } = server;
  const N = 2_000;
  // A killed worker's runs come back once their 1 s lease has run out, and run again at once.
  await drove.setQueue('pages', { leaseMs: 1_000, backoff: { baseMs: 0, maxMs: 0 } });
  const firstRuns: string[] = [];
  const fanIns: ClaimedJob[] = [];
  const read = new Map<number, Job>();
  const parentWorker = drove.worker<{ pages: number }>('report', async (ctx) => {
    if (ctx.job.fan_in) {
      fanIns.push(ctx.job);
      for await (const child of drove.children(ctx.id)) {
        assert.ok(!read.has(child.payload as number), `child ${String(child.payload)} listed twice`);
        read.set(child.payload as number, child);
      }
      return { pages: read.size };
    }
    firstRuns.push(ctx.id);
    const kids = await ctx.submitChildren(Array.from({ length: ctx.payload.pages }, (_, i) => ({ queue: 'pages', payload: i })));
    return awaitChildren({ submitted: kids.length });
  });
  const a = childWorker();
  const b = childWorker();
  let a2: LineProcess | undefined;
  try {
    const waiting = nextEvent<[ClaimedJob, unknown, string]>(parentWorker, 'completed', (_job, _result, state) => state === 'waiting');
    const parent = await drove.submit('report', { pages: N });
    const [, firstResult] = await within(waiting, LONG, "the parent's first run to end awaiting its children");
    assert.deepEqual(firstResult, { submitted: N });
    const mid = await drove.get(parent.id);
    assert.equal(mid.state === 'waiting' || mid.state === 'queued', true, JSON.stringify(mid));
    assert.equal(mid.children?.total, N);

    // One worker is SIGKILLed once it has done 100 children, and replaced.
    await within(a.next((l) => l.event === 'done' && l.done >= 100), LONG, `worker A to run 100 children\n${a.log()}`);
    await a.kill('SIGKILL');
    const atKill = await drove.get(parent.id);
    assert.ok(atKill.children!.succeeded < N, `the kill came mid-way: ${JSON.stringify(atKill.children)}`);
    a2 = childWorker();

    const done = await drove.get(parent.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.result, { pages: N });
    const counts = { total: N, succeeded: N, partial: 0, failed: 0, cancelled: 0 };
    assert.deepEqual(done.children, counts);

    // The fan-in ran once, used no attempt, saw every child ended and the first run's result.
    assert.equal(firstRuns.length, 1);
    assert.equal(fanIns.length, 1);
    const fanIn = fanIns[0]!;
    assert.equal(fanIn.fan_in, true);
    assert.deepEqual(fanIn.children, counts);
    assert.equal(fanIn.attempt, 1, 'the fan-in used no attempt');
    assert.deepEqual(fanIn.result, { submitted: N }, "the first run's result is kept");
    const report = await drove.queue('report');
    assert.deepEqual([report.counts.succeeded, report.counts.queued, report.counts.waiting, report.counts.running], [1, 0, 0, 0]);

    // Every child's result, read by the fan-in through drove.children.
    assert.equal(read.size, N);
    let lost = 0;
    for (let i = 0; i < N; i++) {
      const child = read.get(i);
      assert.ok(child, `child ${i} was not listed`);
      assert.equal(child.state, 'succeeded');
      assert.equal(child.parent, parent.id);
      assert.deepEqual({ page: (child.result as any).page, square: (child.result as any).square }, { page: i, square: i * i });
      if (child.errors?.some((e) => e.kind === 'lost')) lost += 1;
    }
    assert.ok(lost >= 1, 'the SIGKILLed worker held runs, which were lost and ran again');
    const ops = await drove.list({ operations: true });
    assert.ok(ops.jobs.some((j) => j.id === parent.id), 'the parent is listed among operations');
    const byPid = new Map<number, number>();
    for (const c of read.values()) byPid.set((c.result as any).pid, (byPid.get((c.result as any).pid) ?? 0) + 1);
    t.diagnostic(
      `children by worker process: ${[...byPid.values()].join(', ')}; A reported ${reportedDone(a)} before its SIGKILL; ` +
        `${lost} runs lost to it ran again`,
    );
  } finally {
    await Promise.all([a.kill('SIGTERM'), b.kill('SIGTERM'), a2?.kill('SIGTERM')]);
    await parentWorker.close();
  }
});

test('awaitChildren travels on every path a run end takes: on a claim, POST /v1/jobs/finish, the single complete, a batch outcome', async () => {
  const rec = recordingFetch();
  const drove = new Drove({ url: server.url, fetch: rec.fetch });
  const kids = drove.worker('paths-kids', (ctx) => ({ kid: ctx.payload }), { concurrency: 4 });
  const variants = [
    { queue: 'paths-default', opts: {}, paths: ['/v1/queues/paths-default/claim', '/v1/jobs/finish'] },
    { queue: 'paths-finish', opts: { finishOnClaim: false }, paths: ['/v1/jobs/finish'] },
    { queue: 'paths-single', opts: { finishOnClaim: false, batchFinish: false }, paths: ['/v1/jobs/ID/complete'] },
    { queue: 'paths-batch', opts: { max: 5, lingerMs: 0 }, paths: ['/v1/queues/paths-batch/claim', '/v1/jobs/finish'] },
  ];
  try {
    for (const v of variants) {
      const seenFanIn: ClaimedJob[] = [];
      const handle = async (ctx: JobContext) => {
        if (ctx.job.fan_in) {
          seenFanIn.push(ctx.job);
          return 'fanned in';
        }
        await ctx.submitChildren([1, 2, 3].map((n) => ({ queue: 'paths-kids', payload: n })));
        return awaitChildren(`first run of ${v.queue}`);
      };
      const worker =
        v.queue === 'paths-batch'
          ? drove.batchWorker(v.queue, (batch) => Promise.all(batch.map(handle)), v.opts as { max: number; lingerMs: number })
          : drove.worker(v.queue, handle, v.opts);
      try {
        const job = await drove.submit(v.queue, null);
        const done = await drove.get(job.id, { waitMs: LONG });
        assert.equal(done.state, 'succeeded', `${v.queue}: ${JSON.stringify(done)}`);
        assert.equal(done.result, 'fanned in');
        assert.deepEqual(done.children, { total: 3, succeeded: 3, partial: 0, failed: 0, cancelled: 0 });
        assert.equal(seenFanIn.length, 1);
        assert.equal(seenFanIn[0]!.result, `first run of ${v.queue}`);
        const carried = rec.sent.filter(
          (r) => r.body.includes('"await_children":true') && (r.body.includes(`"id":"${job.id}"`) || r.path === `/v1/jobs/${job.id}/complete`),
        );
        assert.equal(carried.length, 1, `${v.queue}: one request carried the await: ${JSON.stringify(carried)}`);
        const path = carried[0]!.path.replace(`/v1/jobs/${job.id}/`, '/v1/jobs/ID/');
        assert.ok(v.paths.includes(path), `${v.queue}: the await went through ${path}, expected one of ${v.paths.join(', ')}`);
      } finally {
        await worker.close();
      }
    }
  } finally {
    await kids.close();
  }
});

test('ctx.submitChildren sends 10,001 children in two requests; cancelling the waiting parent cancels them', async () => {
  const rec = recordingFetch();
  const drove = new Drove({ url: server.url, fetch: rec.fetch });
  const N = 10_001;
  let submitted: Job[] = [];
  const worker = drove.worker('wide', async (ctx) => {
    submitted = await ctx.submitChildren(Array.from({ length: N }, (_, i) => ({ queue: 'wide-kids', payload: i, delayMs: 3_600_000 })));
    return awaitChildren();
  });
  try {
    const waiting = nextEvent<[ClaimedJob, unknown, string]>(worker, 'completed');
    const parent = await drove.submit('wide', null);
    const [, , state] = await within(waiting, LONG, 'the parent to submit its children');
    assert.equal(state, 'waiting');
    assert.equal(submitted.length, N);
    submitted.forEach((j, i) => {
      assert.equal(j.payload, i);
      assert.equal(j.parent, parent.id);
    });
    const batches = rec.sent.filter((r) => r.path === '/v1/jobs/batch');
    assert.deepEqual(batches.map((r) => (JSON.parse(r.body) as { jobs: unknown[] }).jobs.length), [10_000, 1]);
    const p = await drove.get(parent.id);
    assert.deepEqual([p.state, p.waiting_for, p.children?.total], ['waiting', 'children', N]);
    const cancelled = await drove.cancel(parent.id);
    assert.equal(cancelled.state, 'cancelled');
    assert.equal((await drove.queue('wide-kids')).counts.cancelled, N, 'a cancelled parent cancels its unfinished children');
  } finally {
    await worker.close();
  }
});

test('submitMany sends 1,000 per request to a server that takes no more (it refused 10,000 and stored nothing)', async () => {
  // A stand-in for an older server: 422 on `jobs` for a batch over 1,000.
  const sizes: number[] = [];
  const older = (async (_input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const { jobs } = JSON.parse(new TextDecoder().decode(init!.body as Uint8Array)) as { jobs: Array<{ payload: number }> };
    sizes.push(jobs.length);
    if (jobs.length > 1_000) {
      return new Response(JSON.stringify({ error: { code: 'invalid_value', message: 'must hold 1 to 1000 jobs', field: 'jobs' } }), { status: 422 });
    }
    return new Response(JSON.stringify({ jobs: jobs.map((j) => ({ id: String(j.payload + 1), payload: j.payload })) }), { status: 200 });
  }) as typeof fetch;
  const drove = new Drove({ url: 'http://older.invalid', fetch: older });
  const jobs = await drove.submitMany(Array.from({ length: 2_500 }, (_, i) => ({ queue: 'q', payload: i })));
  assert.deepEqual(jobs.map((j) => j.payload), Array.from({ length: 2_500 }, (_, i) => i));
  assert.deepEqual(sizes, [2_500, 1_000, 1_000, 500]);
  await drove.submitMany(Array.from({ length: 1_200 }, (_, i) => ({ queue: 'q', payload: i })));
  assert.deepEqual(sizes.slice(4), [1_000, 200], 'remembered for that client');
});

test('a chain of 5 dependencies runs in order; a failed dependency fails its dependents with kind dependency', async () => {
  const { drove } = server;
  const log: string[] = [];
  const worker = drove.worker<{ step: number; fail?: boolean }>(
    'steps',
    async (ctx) => {
      log.push(`start ${ctx.payload.step}`);
      await new Promise((r) => setImmediate(r));
      log.push(`end ${ctx.payload.step}`);
      if (ctx.payload.fail) throw new Permanent(`step ${ctx.payload.step} cannot be done`);
      return ctx.payload.step;
    },
    { concurrency: 4 },
  );
  try {
    // Submitted all at once: only the first may start; each next waits for the one before.
    const chain: Job[] = [];
    for (let step = 0; step < 5; step++) {
      const prev = chain[step - 1];
      chain.push(await drove.submit('steps', { step }, prev ? { dependsOn: [prev.id] } : {}));
    }
    for (const [i, job] of chain.entries()) {
      if (i === 0) continue;
      assert.equal(job.state, 'waiting', JSON.stringify(job));
      assert.equal(job.waiting_for, 'dependencies');
      assert.deepEqual(job.depends_on, [chain[i - 1]!.id]);
    }
    const last = await drove.get(chain[4]!.id, { waitMs: LONG });
    assert.equal(last.state, 'succeeded', JSON.stringify(last));
    assert.deepEqual(log, [0, 1, 2, 3, 4].flatMap((s) => [`start ${s}`, `end ${s}`]), 'each step after the one it depends on');

    // A failed dependency: its dependents end failed without running, down the chain; one with
    // onDependencyFailure 'run' runs anyway.
    log.length = 0;
    const x = await drove.submit('steps', { step: 10, fail: true });
    const y = await drove.submit('steps', { step: 11 }, { dependsOn: [x.id] });
    const z = await drove.submit('steps', { step: 12 }, { dependsOn: [y.id, chain[4]!.id] });
    const anyway = await drove.submit('steps', { step: 13 }, { dependsOn: [x.id], onDependencyFailure: 'run' });
    assert.equal(anyway.on_dependency_failure, 'run');
    const zDone = await drove.get(z.id, { waitMs: LONG });
    assert.equal(zDone.state, 'failed');
    assert.equal(zDone.error?.kind, 'dependency');
    assert.equal(zDone.error?.message, `dependency ${y.id} failed`);
    const yDone = await drove.get(y.id);
    assert.deepEqual([yDone.state, yDone.error?.kind, yDone.error?.message], ['failed', 'dependency', `dependency ${x.id} failed`]);
    const anywayDone = await drove.get(anyway.id, { waitMs: LONG });
    assert.deepEqual([anywayDone.state, anywayDone.result], ['succeeded', 13]);
    assert.ok(!log.includes('start 11') && !log.includes('start 12'), `dependents of a failed job never ran: ${log.join(', ')}`);
    // Awaiting a job whose dependency already failed: JobFailedError of kind dependency.
    const err = await drove.submitAndWait('steps', { step: 14 }, { dependsOn: [x.id], waitMs: LONG }).catch((e: unknown) => e);
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.kind, 'dependency');
    // An unknown dependency is refused, naming it.
    const bad = await drove.submit('steps', null, { dependsOn: ['999999999'] }).catch((e: unknown) => e);
    assert.ok(bad instanceof DroveError && bad.status === 422 && bad.field === 'depends_on[0]', String(bad));
  } finally {
    await worker.close();
  }
});

test('50 follow-up submits while a job of the key runs make exactly one more run, with the newest payload', async () => {
  const { drove } = server;
  const key = 'account:7';
  const runs: number[] = [];
  const log: string[] = [];
  const firstStarted = deferred();
  const release = deferred();
  const worker = drove.worker<number>(
    'sync',
    async (ctx) => {
      runs.push(ctx.payload);
      log.push(`start ${ctx.payload}`);
      if (runs.length === 1) {
        firstStarted.resolve();
        await release.promise;
      }
      log.push(`end ${ctx.payload}`);
      return ctx.payload;
    },
    { concurrency: 4 },
  );
  try {
    const first = await drove.submit('sync', 0, { key, onConflict: 'follow_up' });
    await within(firstStarted.promise, LONG, 'the first run to start');
    // 49 at once, then the newest.
    const answers = await Promise.all(
      Array.from({ length: 49 }, (_, i) => drove.submit('sync', i + 1, { key, onConflict: 'follow_up' })),
    );
    answers.push(await drove.submit('sync', 50, { key, onConflict: 'follow_up' }));
    const ids = new Set(answers.map((a) => a.id));
    assert.equal(ids.size, 1, `every follow-up answered the one successor: ${[...ids].join(', ')}`);
    const next = answers[answers.length - 1]!;
    assert.notEqual(next.id, first.id);
    assert.deepEqual([next.state, next.waiting_for, next.key, next.payload], ['waiting', 'key', key, 50]);
    assert.equal(answers.filter((a) => a.deduplicated === false).length, 1, 'one submit created it; the rest joined');
    release.resolve();
    const done = await drove.get(next.id, { waitMs: LONG });
    assert.deepEqual([done.state, done.result], ['succeeded', 50]);
    assert.deepEqual(log, ['start 0', 'end 0', 'start 50', 'end 50'], 'the follow-up ran after the first run ended');
    // Exactly one more run: the key's jobs are the first and the successor, both ended.
    const jobs = await drove.list({ queue: 'sync', key });
    assert.deepEqual(jobs.jobs.map((j) => j.id).sort(), [first.id, next.id].sort());
    const counts = (await drove.queue('sync')).counts;
    assert.deepEqual([counts.waiting, counts.queued, counts.running, counts.succeeded], [0, 0, 0, 2]);
    assert.deepEqual(runs, [0, 50]);
  } finally {
    release.resolve();
    await worker.close();
  }
});

test('staleForMs: once() answers the stale result at once and the key is refreshed by one job', async () => {
  const { drove } = server;
  let n = 0;
  let gate: Promise<void> | undefined;
  const refreshStarted = deferred();
  const worker = drove.worker('prices', async () => {
    n += 1;
    const mine = n;
    if (gate) {
      refreshStarted.resolve();
      await gate;
    }
    return `v${mine}`;
  });
  const release = deferred();
  try {
    const opts = { staleForMs: 3_600_000 };
    assert.equal(await drove.once('prices', 'eur', null, opts), 'v1', 'the first call computes');
    const first = (await drove.list({ queue: 'prices', key: 'eur' })).jobs[0]!;
    gate = release.promise;
    // Stale: answered at once while the refresh is held in its handler.
    assert.equal(await within(drove.once('prices', 'eur', null, opts), LONG, 'the stale answer'), 'v1');
    const answer = await drove.submit('prices', null, { key: 'eur', ...opts });
    assert.equal(answer.id, first.id);
    assert.deepEqual([answer.state, answer.result, answer.stale], ['succeeded', 'v1', true]);
    assert.ok(answer.refresh && answer.refresh !== first.id, JSON.stringify(answer));
    const refresh = answer.refresh;
    // However many ask meanwhile: one refresh.
    const more = await Promise.all(Array.from({ length: 10 }, () => drove.submit('prices', null, { key: 'eur', ...opts })));
    assert.deepEqual(new Set(more.map((m) => `${m.id} ${m.refresh} ${m.stale}`)), new Set([`${first.id} ${refresh} true`]));
    await within(refreshStarted.promise, LONG, 'the refresh to run');
    assert.equal((await drove.get(refresh)).state, 'running', 'the stale answers did not wait for the refresh');
    release.resolve();
    const refreshed = await drove.get(refresh, { waitMs: LONG });
    assert.deepEqual([refreshed.state, refreshed.result], ['succeeded', 'v2']);
    assert.equal(n, 2, 'one refresh ran');
    assert.equal((await drove.list({ queue: 'prices', key: 'eur' })).jobs.length, 2);
    // The next stale answer is the refreshed result.
    assert.equal(await drove.once('prices', 'eur', null, opts), 'v2');
    // staleForMs needs a key.
    const err = await drove.submit('prices', null, { staleForMs: 1_000 }).catch((e: unknown) => e);
    assert.ok(err instanceof DroveError && err.status === 422 && err.field === 'stale_for_ms', String(err));
  } finally {
    release.resolve();
    await worker.close();
  }
});

test('schedules: an @every 1s schedule ticks into a Node worker; pause stops it, runNow runs it, resume, patch, delete', async () => {
  const { drove } = server;
  const completed: Array<{ id: string; payload: any }> = [];
  const waiters: Array<{ test: () => boolean; resolve: () => void }> = [];
  const seen = (test: () => boolean, what: string) => {
    if (test()) return Promise.resolve();
    const d = deferred();
    waiters.push({ test, resolve: d.resolve });
    return within(d.promise, LONG, what);
  };
  const worker = drove.worker<any>('beats', (ctx) => ({ ran: ctx.payload }), { concurrency: 2 });
  worker.on('completed', (job: ClaimedJob) => {
    completed.push({ id: job.id, payload: job.payload });
    for (const w of [...waiters]) if (w.test()) waiters.splice(waiters.indexOf(w), 1) && w.resolve();
  });
  const ticks = () => completed.filter((c) => c.payload?.from === 'schedule');
  try {
    const bad = await drove.schedules.set('bad', { cron: '61 * * * *', queue: 'beats' }).catch((e: unknown) => e);
    assert.ok(bad instanceof DroveError && bad.status === 422 && bad.field === 'cron', String(bad));

    const set = await drove.schedules.set('beat', { cron: '@every 1s', queue: 'beats', payload: { from: 'schedule' }, maxAttempts: 3 });
    assert.deepEqual(
      [set.name, set.cron, set.queue, set.payload, set.max_attempts, set.catch_up, set.paused, set.timezone],
      ['beat', '@every 1s', 'beats', { from: 'schedule' }, 3, 'last', false, undefined],
    );
    assert.ok(set.next_at && Date.parse(set.next_at) > Date.parse(set.created_at), JSON.stringify(set));
    await seen(() => ticks().length >= 2, 'two ticks run by the worker');
    const ticking = (await drove.schedules.get('beat'))!;
    assert.ok(ticking.last_tick_at !== null && ticking.last_job !== null, JSON.stringify(ticking));
    assert.ok((await drove.schedules.list()).some((s) => s.name === 'beat'));

    // Paused: no more ticks. runNow still enqueues its job (and is the schedule's last job);
    // a job delayed by 3 s is the clock: once the worker has run it, three ticks would have
    // fired had the schedule been ticking.
    const paused = await drove.schedules.pause('beat');
    assert.equal(paused.paused, true);
    const now = await drove.schedules.runNow('beat');
    assert.deepEqual([now.queue, now.payload, now.deduplicated, now.max_attempts], ['beats', { from: 'schedule' }, false, 3]);
    const marker = await drove.submit('beats', { marker: true }, { delayMs: 3_000 });
    await seen(() => completed.some((c) => c.id === marker.id) && completed.some((c) => c.id === now.id), 'the run-now job and the delayed marker');
    const after = (await drove.schedules.get('beat'))!;
    assert.equal(after.paused, true);
    assert.equal(after.last_job, now.id, 'no tick replaced the run-now job as the last job');
    assert.equal(after.last_tick_at, paused.last_tick_at, 'no tick since the pause');
    assert.equal(after.last_job_state, 'succeeded');
    // (A tick the pause raced is its answer's last job.)
    const since = (await drove.list({ queue: 'beats' })).jobs.filter(
      (j) => Date.parse(j.created_at) > Date.parse(paused.updated_at) && j.id !== paused.last_job,
    );
    assert.deepEqual(since.map((j) => j.id).sort(), [now.id, marker.id].sort(), 'only the run-now job and the marker since the pause');

    // Resumed: it ticks again, from the next tick after now.
    const resumed = await drove.schedules.resume('beat');
    assert.equal(resumed.paused, false);
    assert.ok(resumed.next_at && Date.parse(resumed.next_at) > Date.parse(resumed.updated_at), JSON.stringify(resumed));
    const before = ticks().length;
    await seen(() => ticks().length > before, 'a tick after resuming');

    // A patch replaces the fields it names (the payload whole); null clears an optional one.
    const patched = await drove.schedules.patch('beat', { payload: { from: 'schedule', v: 2 }, timezone: 'Europe/Berlin', maxAttempts: null });
    assert.deepEqual([patched.payload, patched.timezone, patched.max_attempts, patched.cron], [{ from: 'schedule', v: 2 }, 'Europe/Berlin', undefined, '@every 1s']);
    const missing = await drove.schedules.pause('nope').catch((e: unknown) => e);
    assert.ok(missing instanceof DroveError && missing.status === 404, String(missing));

    assert.equal(await drove.schedules.delete('beat'), true);
    assert.equal(await drove.schedules.get('beat'), null);
    assert.equal(await drove.schedules.delete('beat'), false);
    assert.ok(!(await drove.schedules.list()).some((s) => s.name === 'beat'));
    const gone = await drove.schedules.runNow('beat').catch((e: unknown) => e);
    assert.ok(gone instanceof DroveError && gone.status === 404, String(gone));
  } finally {
    await worker.close();
  }
});
