// A paged export worker: a job exports `rows` rows of a (here, generated) data set to a file,
// `pageSize` rows per page. After each page it saves a checkpoint (the next page) and reports
// progress, so the web tier can show how far it got, and when this process dies (deploy, OOM,
// SIGKILL) another worker resumes from the last checkpoint instead of from the start.
//
//   DROVE_URL=http://127.0.0.1:7070 node export-worker.mjs
//
// The file is written with one append per page, and each page says which page it is, so a
// page redone after a crash (at most the one in flight) is visible and easy to skip downstream.
// A restart of Drove itself is ridden out too: the worker backs off while the server is away
// and carries on (from the last checkpoint, if the lease ran out meanwhile) when it is back.
// A deadlock or a dropped connection thrown by a real query is retried fast as transient,
// without using an attempt; a wrong DROVE_TOKEN stops the worker (and this process).

import { appendFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove, Permanent } from 'drove-client';

const drove = new Drove({ url: process.env.DROVE_URL ?? 'http://127.0.0.1:7070', token: process.env.DROVE_TOKEN });
const PAGE_MS = Number(process.env.PAGE_MS ?? 50);

/** One page of the data set: the stand-in for `SELECT … WHERE id > $cursor LIMIT $n`. */
async function fetchPage(page, pageSize, rows, signal) {
  await sleep(PAGE_MS, undefined, { signal });
  const first = page * pageSize;
  return Array.from({ length: Math.min(pageSize, rows - first) }, (_, i) => ({ id: first + i, name: `row ${first + i}` }));
}

const worker = drove.worker(
  'export',
  async (ctx) => {
    const { rows, pageSize = 100, out } = ctx.payload ?? {};
    if (!Number.isInteger(rows) || rows < 0 || typeof out !== 'string') {
      throw new Permanent('payload must be { rows: integer, pageSize?: integer, out: path }');
    }
    const pages = Math.ceil(rows / pageSize);
    let page = ctx.checkpoint?.nextPage ?? 0;
    if (page > 0) console.log(`job ${ctx.id}: resuming at page ${page} of ${pages} (attempt ${ctx.attempt})`);
    for (; page < pages; page++) {
      const data = await fetchPage(page, pageSize, rows, ctx.signal); // stops when cancelled
      await appendFile(out, `${JSON.stringify({ page, rows: data })}\n`);
      ctx.progress(page + 1, pages, `page ${page + 1} of ${pages}`);
      await ctx.saveCheckpoint({ nextPage: page + 1 });
    }
    return { rows, pages, out };
  },
  { concurrency: Number(process.env.CONCURRENCY ?? 2), leaseMs: Number(process.env.LEASE_MS ?? 10_000) },
);
worker.on('completed', (job, result) => console.log(`job ${job.id}: exported ${result.rows} rows to ${result.out}`));
worker.on('error', (err) => console.error(`worker: ${err.message}`));
worker.done.then((err) => {
  // Only a refused token (401/403) stops a worker on its own.
  if (err) process.exit(1);
});
console.log('export worker ready');

process.once('SIGTERM', async () => {
  await worker.close({ graceMs: 5_000 });
  process.exit(0);
});
