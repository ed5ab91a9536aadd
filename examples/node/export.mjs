// Starts an export and shows its progress, as a web tier would: the request only records the
// job; progress comes from the job itself, whichever worker runs it.
//
//   DROVE_URL=http://127.0.0.1:7070 node export.mjs 100000 /tmp/export.jsonl

import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Drove } from 'drove-client';

const drove = new Drove({ url: process.env.DROVE_URL ?? 'http://127.0.0.1:7070', token: process.env.DROVE_TOKEN });
const [rows = '10000', out = 'export.jsonl', pageSize = '100'] = process.argv.slice(2);

// One export per output file at a time: a second request for the same file joins the first.
const key = `export:${createHash('sha256').update(resolve(out)).digest('hex').slice(0, 32)}`;
const job = await drove.submit('export', { rows: Number(rows), pageSize: Number(pageSize), out: resolve(out) }, { key });
console.log(`export job ${job.id}${job.deduplicated ? ' (already running: joined it)' : ''}`);

let last = '';
for (;;) {
  // Wait up to a second for the end; meanwhile show the job's progress.
  const now = await drove.get(job.id, { waitMs: 1_000 });
  const p = now.progress;
  const line = p ? `${now.state} ${p.done}/${p.total ?? '?'} ${p.message ?? ''}` : now.state;
  if (line !== last) console.log(line);
  last = line;
  if (now.state === 'succeeded') {
    console.log(JSON.stringify(now.result));
    break;
  }
  if (now.state === 'failed' || now.state === 'cancelled') {
    console.error(`export ${now.state}: ${now.error?.message ?? ''}`);
    process.exit(1);
  }
  if (now.state !== 'running') await sleep(200); // queued: nobody has it yet
}
