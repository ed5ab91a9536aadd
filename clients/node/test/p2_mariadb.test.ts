// P2 from Node (docs/PROBLEMS.md, "Deadlocks and transient failures"),
// on a real MariaDB: the classic record-versioning table, updated five at a time, deadlocks
// under InnoDB's gap locks and the database kills one transaction of each deadlock. First a
// hand-written retry loop (the baseline), then the same updates as Drove jobs whose handler
// just throws what mysql2 throws: the worker classifies errno 1213/1205 as transient by itself,
// the server retries those runs fast without using an attempt, and every update lands exactly
// once with no job failed. Both throughputs are printed (never asserted).
//
// MariaDB: DROVE_MARIADB_URL (default mysql://root@127.0.0.1:3306/test). When it is
// unreachable the test is skipped, saying why, unless DROVE_REQUIRE_MARIADB=1 (then it fails).
//
// Why these updates deadlock: an update reads the newest current version of (record_key, type)
// FOR UPDATE through the NON-unique index (type, end_date, deleted), scanning it backwards
// (ORDER BY id DESC LIMIT 1, "the newest version wins"). Under REPEATABLE READ the backward
// scan first locks the gap before the index record just past the type's current versions; gap
// locks never conflict with each other, so two updaters of the same type both hold that gap,
// then one waits for the other's record lock while the other's INSERT of the new current
// version needs an insert-intention lock in that very gap: a cycle, and InnoDB rolls one back
// with errno 1213 (seen in SHOW ENGINE INNODB STATUS: "lock_mode X locks gap before rec insert
// intention waiting"). With 3 types, 5 keys each and 5 updaters, about one update in six meets
// a deadlock in the baseline (one run in four or five through Drove, whose transactions run
// longer on a busy machine), while each update still takes a few milliseconds; one type
// deadlocks more than every other update, and the ascending scan hardly ever deadlocks.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import mysql from 'mysql2/promise';

import type { ClaimedJob, Job } from 'drove-client';

import { deferred, startServer, within, type Server } from './harness.js';

/** Updates per run (each phase runs the same list). */
const N = 500;
/** Updaters at once: loops in the baseline, the worker's slots with Drove, MariaDB connections in both. */
const CONCURRENCY = 5;
const TYPES = ['price', 'stock', 'label'];
const KEYS = ['sku-1', 'sku-2', 'sku-3', 'sku-4', 'sku-5'];
/** Versions the table starts with: one current version per (key, type). */
const SEED = TYPES.length * KEYS.length;
/** A lock wait that lasts this long ends in errno 1205 (transient too) instead of the default 50 s. */
const LOCK_WAIT_TIMEOUT_S = 5;

const MARIADB_URL = process.env.DROVE_MARIADB_URL || 'mysql://root@127.0.0.1:3306/test';
const REQUIRE_MARIADB = process.env.DROVE_REQUIRE_MARIADB === '1';

interface Update {
  update_id: string;
  record_key: string;
  type: string;
  value: string;
}

/** Why MariaDB cannot be used, or undefined when it answers. */
async function probeMariaDb(): Promise<string | undefined> {
  try {
    const conn = await mysql.createConnection({ uri: MARIADB_URL, connectTimeout: 5_000 });
    try {
      await conn.query('SELECT 1');
    } finally {
      await conn.end().catch(() => undefined);
    }
    return undefined;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return `no usable MariaDB at ${redact(MARIADB_URL)} (${e.code ?? 'error'}: ${e.message ?? String(err)})`;
  }
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

const unreachable = await probeMariaDb();
if (unreachable && !REQUIRE_MARIADB) {
  console.log(`P2 (p2_mariadb.test): skipped: ${unreachable}; start MariaDB or set DROVE_MARIADB_URL (DROVE_REQUIRE_MARIADB=1 makes this a failure)`);
}

/** The same N updates for both phases: 3 types in turn, keys from a seeded generator. */
function updates(prefix: string): Update[] {
  let seed = 0x2f6b_1d3a;
  const random = () => {
    // mulberry32: reproducible runs.
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return Array.from({ length: N }, (_, i) => ({
    update_id: `${prefix}-${i}`,
    record_key: KEYS[Math.floor(random() * KEYS.length)]!,
    type: TYPES[i % TYPES.length]!,
    value: `v${i}`,
  }));
}

function newPool(): mysql.Pool {
  const pool = mysql.createPool({ uri: MARIADB_URL, connectionLimit: CONCURRENCY, connectTimeout: 10_000 });
  // Queued on the new connection before anything the pool hands it out for.
  pool.on('connection', (conn) => {
    conn.query(`SET SESSION innodb_lock_wait_timeout = ${LOCK_WAIT_TIMEOUT_S}`);
  });
  return pool;
}

async function createTable(pool: mysql.Pool, table: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS ${table}`);
  await pool.query(
    `CREATE TABLE ${table} (
       id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
       record_key VARCHAR(64) NOT NULL,
       type VARCHAR(32) NOT NULL,
       value VARCHAR(255) NOT NULL,
       start_date DATETIME(6) NOT NULL,
       end_date DATETIME(6) NULL,
       deleted TINYINT(1) NOT NULL DEFAULT 0,
       update_id VARCHAR(64) NULL,
       KEY by_current (type, end_date, deleted)
     ) ENGINE=InnoDB`,
  );
  const seed = TYPES.flatMap((type) => KEYS.map((key) => [key, type, 'seed']));
  await pool.query(`INSERT INTO ${table} (record_key, type, value, start_date) VALUES ${seed.map(() => '(?, ?, ?, NOW(6))').join(', ')}`, seed.flat());
}

/**
 * One update: closes the current version of (record_key, type) and inserts the new one, in one
 * short transaction on a pooled connection. Throws what mysql2 throws (after rolling back).
 */
async function runUpdate(pool: mysql.Pool, table: string, u: Update): Promise<void> {
  const conn = await pool.getConnection();
  try {
    await conn.query('BEGIN');
    try {
      const [rows] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT id FROM ${table} FORCE INDEX (by_current)
          WHERE type = ? AND end_date IS NULL AND deleted = 0 AND record_key = ?
          ORDER BY id DESC LIMIT 1 FOR UPDATE`,
        [u.type, u.record_key],
      );
      const current = rows[0]?.id as number | undefined;
      if (current === undefined) throw new Error(`no current version of ${u.record_key}/${u.type}`);
      await conn.query(`UPDATE ${table} SET end_date = NOW(6) WHERE id = ?`, [current]);
      await conn.query(`INSERT INTO ${table} (record_key, type, value, start_date, update_id) VALUES (?, ?, ?, NOW(6), ?)`, [
        u.record_key,
        u.type,
        u.value,
        u.update_id,
      ]);
      await conn.query('COMMIT');
    } catch (err) {
      // A deadlock rolled the transaction back already; a lock wait timeout only the statement.
      await conn.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    conn.release();
  }
}

/** 1213 (deadlock) and 1205 (lock wait timeout): the errors worth retrying at once. */
function lockError(err: unknown): 'deadlock' | 'lock wait timeout' | undefined {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return errno === 1213 ? 'deadlock' : errno === 1205 ? 'lock wait timeout' : undefined;
}

/** What the table must hold after a phase: the seed plus each update exactly once, and exactly
 * one current version per (key, type). */
async function checkTable(pool: mysql.Pool, table: string, list: Update[], what: string): Promise<void> {
  const [[count]] = await pool.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table}`);
  assert.equal(Number(count!.n), SEED + N, `${what}: version rows = seed + N`);
  const [twice] = await pool.query<mysql.RowDataPacket[]>(
    `SELECT update_id, COUNT(*) AS n FROM ${table} WHERE update_id IS NOT NULL GROUP BY update_id HAVING COUNT(*) > 1`,
  );
  assert.deepEqual(twice, [], `${what}: update_ids that landed more than once`);
  const [ids] = await pool.query<mysql.RowDataPacket[]>(`SELECT update_id FROM ${table} WHERE update_id IS NOT NULL`);
  const landed = new Set(ids.map((r) => String(r.update_id)));
  const missing = list.filter((u) => !landed.has(u.update_id)).map((u) => u.update_id);
  assert.deepEqual(missing, [], `${what}: update_ids that never landed`);
  assert.equal(landed.size, N, `${what}: distinct update_ids`);
  const [current] = await pool.query<mysql.RowDataPacket[]>(
    `SELECT record_key, type, COUNT(*) AS n FROM ${table} WHERE end_date IS NULL AND deleted = 0 GROUP BY record_key, type`,
  );
  assert.equal(current.length, SEED, `${what}: (key, type) pairs with a current version`);
  for (const r of current) assert.equal(Number(r.n), 1, `${what}: current versions of ${r.record_key}/${r.type}`);
}

/** Every job of `queue` (pages of 1,000). */
async function allJobs(server: Server, queue: string): Promise<Job[]> {
  const jobs: Job[] = [];
  let cursor: string | undefined;
  do {
    const page = await server.drove.list({ queue, limit: 1_000, ...(cursor ? { cursor } : {}) });
    jobs.push(...page.jobs);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return jobs;
}

test(
  `P2: ${N} record-versioning updates, ${CONCURRENCY} at a time, deadlock on MariaDB; with Drove each lands exactly once and no job fails`,
  { skip: unreachable && !REQUIRE_MARIADB ? unreachable : false },
  async () => {
    if (unreachable) assert.fail(`DROVE_REQUIRE_MARIADB=1 but ${unreachable}`);
    const base = `drove_p2_${process.pid}_${randomBytes(3).toString('hex')}`;
    const loopTable = `${base}_loop`;
    const droveTable = `${base}_drove`;
    const pool = newPool();
    let server: Server | undefined;
    try {
      // ---- the baseline: a hand-written retry loop, 5 loops sharing the same list.
      await createTable(pool, loopTable);
      const loopUpdates = updates('loop');
      const loopErrors = { deadlock: 0, 'lock wait timeout': 0 };
      let next = 0;
      const loopStarted = performance.now();
      await within(
        Promise.all(
          Array.from({ length: CONCURRENCY }, async () => {
            while (next < loopUpdates.length) {
              const u = loopUpdates[next++]!;
              for (let tries = 1; ; tries++) {
                try {
                  await runUpdate(pool, loopTable, u);
                  break;
                } catch (err) {
                  const kind = lockError(err);
                  if (!kind || tries >= 50) throw err;
                  loopErrors[kind] += 1;
                  // Backoff with full jitter, 10 ms doubling to 1 s (Drove's transient default).
                  await sleep(Math.random() * Math.min(1_000, 10 * 2 ** (tries - 1)));
                }
              }
            }
          }),
        ),
        120_000,
        `the retry loop's ${N} updates`,
      );
      const loopMs = performance.now() - loopStarted;
      await checkTable(pool, loopTable, loopUpdates, 'retry loop');
      const loopDeadlocks = loopErrors.deadlock + loopErrors['lock wait timeout'];
      assert.ok(
        loopErrors.deadlock >= 1,
        `the baseline met no deadlock (${JSON.stringify(loopErrors)}): a test of retries that never meets one proves nothing`,
      );

      // ---- through Drove: one job per update, a worker of 5 slots on the same pool.
      server = await startServer();
      const { drove } = server;
      await createTable(pool, droveTable);
      const droveUpdates = updates('drove');
      const queue = `p2-${base.replace(/_/g, '-')}`;
      const thrown = { deadlock: 0, 'lock wait timeout': 0, other: 0 };
      const failedKinds: Record<string, number> = {};
      let completed = 0;
      let lastSuccessAt = 0;
      const allDone = deferred();
      allDone.promise.catch(() => undefined); // a failure before the wait below begins is still seen by it
      const worker = drove.worker<Update>(
        queue,
        async ({ payload }) => {
          try {
            await runUpdate(pool, droveTable, payload);
          } catch (err) {
            thrown[lockError(err) ?? 'other'] += 1;
            throw err; // the worker classifies it (1213/1205: transient)
          }
          return { update_id: payload.update_id };
        },
        { concurrency: CONCURRENCY },
      );
      worker.on('completed', () => {
        completed += 1;
        if (completed === N) {
          lastSuccessAt = performance.now();
          allDone.resolve();
        }
      });
      worker.on('failed', (job: ClaimedJob, err: unknown, kind: string, state: string) => {
        failedKinds[kind] = (failedKinds[kind] ?? 0) + 1;
        if (state === 'failed' || state === 'cancelled') allDone.reject(new Error(`job ${job.id} ended ${state} (${kind}): ${String(err)}`));
      });
      let droveMs: number;
      try {
        const droveStarted = performance.now();
        const submitted = await drove.submitMany(droveUpdates.map((u) => ({ queue, payload: u })));
        assert.equal(submitted.length, N);
        await within(allDone.promise, 120_000, `${N} jobs to succeed`).catch((err: Error) => {
          throw new Error(`${err.message} (${completed} succeeded; thrown ${JSON.stringify(thrown)}); server log:\n${server!.log()}`);
        });
        droveMs = lastSuccessAt - droveStarted;
      } finally {
        await worker.close();
      }
      await checkTable(pool, droveTable, droveUpdates, 'Drove');

      const jobs = await allJobs(server, queue);
      assert.equal(jobs.length, N, 'jobs listed');
      const notSucceeded = jobs.filter((j) => j.state !== 'succeeded');
      assert.deepEqual(notSucceeded.map((j) => `${j.id}: ${j.state}`), [], 'jobs that did not succeed');
      const retried = jobs.filter((j) => j.attempt !== 1);
      assert.deepEqual(retried.map((j) => `${j.id}: attempt ${j.attempt}, errors ${JSON.stringify(j.errors)}`), [], 'jobs that used more than attempt 1');
      assert.equal(thrown.other, 0, 'the handler threw something other than a deadlock or lock wait timeout');
      const droveLockErrors = thrown.deadlock + thrown['lock wait timeout'];
      const transientRetries = jobs.reduce((sum, j) => sum + (j.transient_retries ?? 0), 0);
      assert.ok(transientRetries >= 1, `no transient retry recorded (the handler threw ${JSON.stringify(thrown)})`);
      assert.equal(transientRetries, droveLockErrors, `transient_retries summed over the jobs vs the deadlocks the handler threw (${JSON.stringify(thrown)})`);
      assert.deepEqual(failedKinds, { transient: droveLockErrors }, 'the worker reported every thrown deadlock as transient, and nothing else');
      // Each job's error history: its transient runs, all on attempt 1 (the newest 25 are kept).
      const histories = jobs.filter((j) => {
        const errors = j.errors ?? [];
        return errors.length !== Math.min(25, j.transient_retries ?? 0) || errors.some((e) => e.kind !== 'transient' || e.attempt !== 1);
      });
      assert.deepEqual(histories.map((j) => `${j.id}: transient_retries ${j.transient_retries}, errors ${JSON.stringify(j.errors)}`), [], 'error histories');
      const mostRetries = Math.max(...jobs.map((j) => j.transient_retries ?? 0));

      // ---- the figures: printed, never asserted.
      const loopRate = (N * 1_000) / loopMs;
      const droveRate = (N * 1_000) / droveMs;
      const line =
        `P2: retry loop ${Math.round(loopRate)} updates/s (${loopDeadlocks} deadlocks retried), ` +
        `Drove ${Math.round(droveRate)} updates/s (${(droveRate / loopRate).toFixed(2)}x), ${droveLockErrors} deadlocks retried` +
        (thrown['lock wait timeout'] + loopErrors['lock wait timeout'] > 0
          ? ` (lock wait timeouts: loop ${loopErrors['lock wait timeout']}, Drove ${thrown['lock wait timeout']})`
          : '') +
        `; at most ${mostRetries} transient retries on one job`;
      console.log(line);
    } finally {
      await server?.stop();
      await pool.query(`DROP TABLE IF EXISTS ${loopTable}`).catch(() => undefined);
      await pool.query(`DROP TABLE IF EXISTS ${droveTable}`).catch(() => undefined);
      await pool.end();
    }
  },
);
