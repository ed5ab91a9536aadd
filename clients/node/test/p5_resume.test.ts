// P5 from Node (docs/PROBLEMS.md, "Long-running work that survives its worker"): a worker process
// running a paged job is SIGKILLed, twice; each new worker process resumes from the last
// checkpoint; the job completes; no page before a checkpoint is done again.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { LineProcess, PACKAGE_DIR, startServer, within, type Server } from './harness.js';

const LONG = 60_000;
const PAGES = 60;

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

function startWorker(log: string): LineProcess {
  return new LineProcess(process.execPath, [join(PACKAGE_DIR, 'build', 'test', 'fixtures', 'paged-worker.js')], {
    DROVE_URL: server.url,
    PAGES_LOG: log,
  });
}

interface Start {
  event: 'start';
  id: string;
  attempt: number;
  from: number;
  pid: number;
}

test('a SIGKILLed worker process\'s paged job resumes from its checkpoint in a new process', async (t) => {
  const { drove } = server;
  // A dead worker's lease runs out after 1 s, and the job is queued again at once.
  await drove.setQueue('export', { leaseMs: 1_000, backoff: { baseMs: 0, maxMs: 0 } });
  const log = join(server.dir, 'pages.log');
  const job = await drove.submit('export', { pages: PAGES });

  const starts: Start[] = [];
  const acked: number[] = []; // per killed run: the last checkpoint it saw stored
  let worker = startWorker(log);
  const killAt = [15, 35];
  try {
    for (const [i, at] of killAt.entries()) {
      const start = await within(worker.next<Start>((l) => l.event === 'start'), LONG, `run ${i + 1} to start\n${worker.log()}`);
      starts.push(start);
      const last = await within(
        worker.next<{ next: number }>((l) => l.event === 'checkpoint' && l.next >= at),
        LONG,
        `run ${i + 1} to reach page ${at}\n${worker.log()}`,
      );
      await worker.kill('SIGKILL');
      acked.push(Math.max(last.next, ...worker.lines.filter((l: any) => l.event === 'checkpoint').map((l: any) => l.next)));
      const seen = await drove.get(job.id);
      assert.ok(seen.progress && seen.progress.done >= last.next, `progress ${JSON.stringify(seen.progress)} lags checkpoint ${last.next}`);
      worker = startWorker(log);
    }
    starts.push(await within(worker.next<Start>((l) => l.event === 'start'), LONG, `the last run to start\n${worker.log()}`));
    const done = await drove.get(job.id, { waitMs: LONG });
    assert.equal(done.state, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.result, { pages: PAGES });
    assert.deepEqual(done.progress, { done: PAGES, total: PAGES, message: `page ${PAGES} of ${PAGES}` });
  } finally {
    await worker.kill('SIGTERM');
  }

  // Each new run resumed from at least the last checkpoint the killed run saw stored.
  assert.equal(starts[0]!.from, 0);
  for (let i = 1; i < starts.length; i++) {
    assert.ok(starts[i]!.from >= acked[i - 1]!, `run ${i + 1} resumed at page ${starts[i]!.from}, but page ${acked[i - 1]} was checkpointed`);
    assert.ok(starts[i]!.attempt > starts[i - 1]!.attempt, 'a lost lease uses an attempt');
  }
  // Every page was done; a page done twice can only be the one in flight at a kill (processed
  // but not yet checkpointed), which its next run starts from.
  const pages = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { page: number; pid: number });
  const count = new Map<number, number>();
  for (const p of pages) count.set(p.page, (count.get(p.page) ?? 0) + 1);
  for (let p = 0; p < PAGES; p++) assert.ok(count.has(p), `page ${p} was never done`);
  const redone = [...count].filter(([, n]) => n > 1).map(([p]) => p);
  const resumedAt = starts.slice(1).map((s) => s.from);
  for (const p of redone) assert.ok(resumedAt.includes(p), `page ${p} was done twice though it was before a checkpoint`);
  for (const [i, s] of starts.entries()) {
    const mine = pages.filter((p) => p.pid === s.pid).map((p) => p.page);
    assert.ok(mine.every((p) => p >= s.from), `run ${i + 1} did a page before its checkpoint ${s.from}`);
  }
  t.diagnostic(`runs started at pages ${starts.map((s) => s.from).join(', ')}; pages done twice: ${redone.join(', ') || 'none'}`);
});
