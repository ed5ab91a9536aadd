// Transient failures: which thrown errors a worker reports as kind `transient` (the default
// rules, the `classify` option, the steering errors; pure functions), Throttled built from a
// downstream's 429 answer, and end to end: a handler that deadlocks three times then succeeds
// ends succeeded on its first attempt with `transient_retries` 3. A server that predates the
// kind answers 422 to it; that is detected once, the end-to-end test is then skipped (saying
// so), and the worker's fallback to `retryable` is tested instead.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  DroveError,
  JobFailedError,
  Permanent,
  Snooze,
  Throttled,
  Transient,
  classifyError,
  isTransientError,
  parseRetryAfter,
  type ClaimedJob,
} from 'drove-client';

import { startServer, within, type Server } from './harness.js';

const LONG = 30_000;

let server: Server;
/** Whether the server under test knows fail kind `transient` (detected once, in before()). */
let knowsTransient = false;

before(async () => {
  server = await startServer();
  knowsTransient = await probeTransientKind();
});
after(async () => {
  await server?.stop();
});

/** Fails a claimed job with kind `transient` by hand: an older server answers 422. */
async function probeTransientKind(): Promise<boolean> {
  const job = await server.drove.submit('transient-probe', null);
  const post = (path: string, body: unknown) =>
    fetch(server.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const claimed = (await (await post('/v1/queues/transient-probe/claim', { worker: 'probe', max: 1 })).json()) as { jobs: ClaimedJob[] };
  const lease = claimed.jobs[0]!.lease;
  const res = await post(`/v1/jobs/${job.id}/fail`, { lease, error: { message: 'probe', kind: 'transient' } });
  await res.text();
  await server.drove.cancel(job.id).catch(() => undefined);
  if (res.status === 422) return false;
  assert.equal(res.status, 200, `the probe's fail answered ${res.status}`);
  return true;
}

const deadlock = () =>
  Object.assign(new Error('Deadlock found when trying to get lock; try restarting transaction'), { errno: 1213, code: 'ER_LOCK_DEADLOCK' });

// ---- the rules, as pure functions

test('isTransientError recognises deadlocks, lock waits, serialization failures, dropped connections and 503s', () => {
  const transient: Array<[string, unknown]> = [
    ['mysql2 deadlock', Object.assign(new Error('Deadlock found'), { errno: 1213, code: 'ER_LOCK_DEADLOCK', sqlState: '40001' })],
    ['mysql lock wait timeout', Object.assign(new Error('Lock wait timeout exceeded'), { errno: 1205, code: 'ER_LOCK_WAIT_TIMEOUT' })],
    ['mariadb deadlock (errno only)', { errno: 1213, message: 'deadlock' }],
    ['lock wait timeout (code only)', { code: 'ER_LOCK_WAIT_TIMEOUT' }],
    ['postgres serialization failure', Object.assign(new Error('could not serialize access'), { code: '40001' })],
    ['postgres deadlock', Object.assign(new Error('deadlock detected'), { code: '40P01' })],
    ['sqlState 40P01', { sqlState: '40P01' }],
    ['ECONNRESET', Object.assign(new Error('read ECONNRESET'), { errno: -104, code: 'ECONNRESET' })],
    ['ETIMEDOUT', Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' })],
    ['ECONNRESET as the cause (fetch)', new TypeError('fetch failed', { cause: Object.assign(new Error('other side closed'), { code: 'ECONNRESET' }) })],
    ['a deadlock three causes deep', new Error('a', { cause: new Error('b', { cause: new Error('c', { cause: deadlock() }) }) })],
    ['an ORM wrapping the driver error (parent)', Object.assign(new Error('SequelizeDatabaseError'), { parent: { code: '40P01' } })],
    ['status 503', Object.assign(new Error('Service Unavailable'), { status: 503 })],
    ['statusCode 503', Object.assign(new Error('Service Unavailable'), { statusCode: 503 })],
    ['response.status 503 (axios)', Object.assign(new Error('Request failed'), { response: { status: 503 } })],
    ['a DroveError with status 503', new DroveError(503, 'unavailable', 'the store is unavailable')],
  ];
  for (const [what, err] of transient) assert.equal(isTransientError(err), true, what);

  const cyclic = new Error('cycle') as Error & { cause?: unknown };
  cyclic.cause = cyclic;
  const throwing = Object.defineProperty(new Error('getter'), 'code', {
    get() {
      throw new Error('no');
    },
  });
  const other: Array<[string, unknown]> = [
    ['a plain error', new Error('boom')],
    ['postgres unique violation', Object.assign(new Error('duplicate key'), { code: '23505' })],
    ['mysql duplicate entry', Object.assign(new Error('Duplicate entry'), { errno: 1062, code: 'ER_DUP_ENTRY' })],
    ['ECONNREFUSED', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })],
    ['status 500', Object.assign(new Error('Internal'), { status: 500 })],
    ['status "503" as a string', { status: '503' }],
    ['an unreachable Drove server', new DroveError(null, 'unreachable', 'no answer')],
    ['a cycle', cyclic],
    ['a throwing getter', throwing],
    ['a string', 'ECONNRESET'],
    ['null', null],
    ['undefined', undefined],
    ['a number', 1213],
  ];
  for (const [what, err] of other) assert.equal(isTransientError(err), false, what);
});

test('classifyError: steering errors say it themselves, then the classify option, then the default rules', () => {
  assert.equal(classifyError(new Throttled(5)), 'throttled');
  assert.equal(classifyError(new Permanent('no')), 'permanent');
  assert.equal(classifyError(new Snooze(5)), 'snooze');
  assert.equal(classifyError(new Transient('flaky')), 'transient');
  assert.equal(classifyError({ name: 'Transient', message: 'from another copy of the package' }), 'transient');
  assert.equal(classifyError(new Error('boom')), 'retryable');
  assert.equal(classifyError(deadlock()), 'transient');
  assert.equal(classifyError('a string'), 'retryable');
  assert.equal(classifyError(Object.assign(new Error('x'), { name: 'toString' })), 'retryable');

  const mine = (err: unknown) => {
    const m = (err as Error).message;
    if (m === 'bad input') return 'permanent' as const;
    if (m.startsWith('Deadlock')) return 'retryable' as const;
    if (m === 'weird') return 'nonsense' as never;
    return undefined;
  };
  assert.equal(classifyError(new Error('bad input'), mine), 'permanent');
  assert.equal(classifyError(deadlock(), mine), 'retryable', 'the option overrides the default rules');
  assert.equal(classifyError(new Error('other'), mine), 'retryable');
  assert.equal(classifyError(Object.assign(new Error('other'), { code: '40001' }), mine), 'transient', 'undefined: the default rules');
  assert.equal(classifyError(new Error('weird'), mine), 'retryable', 'an unknown answer counts as undefined');
  assert.equal(classifyError(new Permanent('bad input'), () => 'transient'), 'permanent', 'a steering error wins over the option');
});

test('Throttled.fromResponse reads Retry-After in seconds or as an HTTP date', () => {
  const res = (status: number, retryAfter?: string) =>
    new Response(null, { status, headers: retryAfter === undefined ? {} : { 'Retry-After': retryAfter } });
  const seconds = Throttled.fromResponse(res(429, '120'));
  assert.ok(seconds instanceof Throttled);
  assert.equal(seconds.retryAfterMs, 120_000);
  assert.match(seconds.message, /429/);
  assert.equal(classifyError(seconds), 'throttled');

  const at = new Date(Date.now() + 30_000).toUTCString(); // whole seconds: 29 to 30 s away
  const dated = Throttled.fromResponse(res(503, at), 'the provider is busy');
  assert.ok(dated.retryAfterMs! > 28_000 && dated.retryAfterMs! <= 30_000, `retryAfterMs ${dated.retryAfterMs}`);
  assert.equal(dated.message, 'the provider is busy');

  assert.equal(Throttled.fromResponse(res(429, new Date(Date.now() - 60_000).toUTCString())).retryAfterMs, 0, 'a date in the past');
  assert.equal(Throttled.fromResponse(res(429)).retryAfterMs, undefined, 'no header: the server default applies');
  assert.equal(Throttled.fromResponse(res(429, 'soon')).retryAfterMs, undefined, 'an unreadable header');
  assert.equal(Throttled.fromResponse({ status: 429, headers: new Headers({ 'retry-after': ' 2 ' }) }).retryAfterMs, 2_000);
  assert.equal(parseRetryAfter('1.5'), 1_500);
  assert.equal(parseRetryAfter('-5'), undefined);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:00 GMT')), 60_000);
});

// ---- end to end

test('a handler that deadlocks on its first 3 runs ends succeeded on attempt 1 with transient_retries 3', async (t) => {
  if (!knowsTransient) {
    t.skip(`this drove (${process.env.DROVE_BIN ?? 'target/debug/drove'}) answers 422 to fail kind "transient": it predates it`);
    return;
  }
  const { drove } = server;
  let runs = 0;
  const worker = drove.worker('deadlocks', () => {
    runs += 1;
    if (runs <= 3) throw deadlock();
    return { runs };
  });
  const kinds: string[] = [];
  worker.on('failed', (_job: ClaimedJob, _err: unknown, kind: string) => kinds.push(kind));
  try {
    const job = await drove.submit('deadlocks', null);
    const done = await drove.get(job.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.result, { runs: 4 });
    assert.equal(done.attempt, 1, 'transient failures use no attempt');
    assert.equal(done.transient_retries, 3);
    assert.deepEqual(kinds, ['transient', 'transient', 'transient']);
  } finally {
    await worker.close();
  }
});

test('against a server without fail kind transient, transient failures are reported as retryable', async (t) => {
  if (knowsTransient) {
    t.skip('the server knows fail kind "transient"');
    return;
  }
  const { drove } = server;
  await drove.setQueue('deadlocks-old', { backoff: { baseMs: 0, maxMs: 0 } });
  // Both ways a worker ends runs: batched (POST /v1/jobs/finish) and one by one.
  for (const batchFinish of [true, false]) {
    let runs = 0;
    const worker = drove.worker(
      'deadlocks-old',
      () => {
        runs += 1;
        if (runs <= 3) throw deadlock();
        return { runs };
      },
      { batchFinish },
    );
    const kinds: string[] = [];
    worker.on('failed', (_job: ClaimedJob, _err: unknown, kind: string) => kinds.push(kind));
    try {
      const job = await drove.submit('deadlocks-old', null);
      const done = await drove.get(job.id, { waitMs: LONG });
      assert.equal(done.state, 'succeeded', `batchFinish ${batchFinish}: ${JSON.stringify(done)}`);
      assert.equal(done.attempt, 4);
      assert.deepEqual(kinds, ['retryable', 'retryable', 'retryable'], `batchFinish ${batchFinish}`);
      assert.deepEqual(done.errors?.map((e) => e.kind), ['retryable', 'retryable', 'retryable']);
    } finally {
      await worker.close();
    }
  }
});

test('the classify option decides for the errors a handler throws', async () => {
  const { drove } = server;
  const worker = drove.worker(
    'classified',
    () => {
      throw new Error('bad input');
    },
    { classify: (err) => ((err as Error).message === 'bad input' ? 'permanent' : undefined) },
  );
  try {
    const err = await within(drove.submitAndWait('classified', null, { waitMs: LONG }).catch((e: unknown) => e), LONG, 'the job to fail');
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.kind, 'permanent');
    assert.equal(err.job.attempt, 1);
  } finally {
    await worker.close();
  }
});
