// The examples in examples/node, run as their users would: the web service answers a cache
// slam with one computation per item, and the export worker writes every page of an export.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { LineProcess, REPO_DIR, startServer, within, type Server } from './harness.js';

const EXAMPLES = join(REPO_DIR, 'examples', 'node');
const LONG = 60_000;

let server: Server;
before(async () => {
  if (!existsSync(join(EXAMPLES, 'node_modules', 'drove-client'))) {
    throw new Error(`the examples are not installed: run \`npm ci\` in ${EXAMPLES} (clients/node/ci.sh does)`);
  }
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

function example(script: string, args: string[] = [], env: Record<string, string> = {}): LineProcess {
  return new LineProcess(process.execPath, [join(EXAMPLES, script), ...args], { DROVE_URL: server.url, ...env });
}

test('web.mjs: 500 concurrent requests for 10 items run 10 computations', async () => {
  const web = example('web.mjs', [], { PORT: '0' });
  try {
    const ready = await within(web.next<{ text: string }>((l) => /^web listening on /.test(l.text ?? '')), LONG, `web.mjs to listen\n${web.log()}`);
    const url = ready.text.replace('web listening on ', '');
    const slam = example('slam.mjs', [url, '500', '10']);
    const summary = await within(slam.next<Record<string, unknown>>((l) => 'requests' in l), LONG, `slam.mjs\n${slam.log()}`);
    assert.deepEqual(
      { requests: summary.requests, answered: summary.answered, wrongItem: summary.wrongItem, computations: summary.computations },
      { requests: 500, answered: 500, wrongItem: 0, computations: 10 },
      JSON.stringify(summary),
    );
    assert.equal((await server.drove.queue('expensive')).counts.succeeded, 10);
  } finally {
    await web.kill('SIGTERM');
  }
  const exit = await web.exited;
  assert.equal(exit.code, 0, `web.mjs did not stop cleanly on SIGTERM: ${JSON.stringify(exit)}\n${web.log()}`);
});

test('export-worker.mjs and export.mjs: an export runs page by page to the end', async () => {
  const worker = example('export-worker.mjs', [], { PAGE_MS: '5' });
  const out = join(server.dir, 'export.jsonl');
  try {
    await within(worker.next((l) => l.text === 'export worker ready'), LONG, `the export worker\n${worker.log()}`);
    const exporter = example('export.mjs', ['1950', out, '100']);
    const exit = await within(exporter.exited, LONG, `export.mjs to finish\n${exporter.log()}`);
    assert.equal(exit.code, 0, exporter.log());
    const result = exporter.lines.find((l: any) => l.rows !== undefined) as { rows: number; pages: number } | undefined;
    assert.deepEqual(result && { rows: result.rows, pages: result.pages }, { rows: 1950, pages: 20 });
    const pages = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { page: number; rows: { id: number }[] });
    assert.deepEqual(pages.map((p) => p.page), Array.from({ length: 20 }, (_, i) => i));
    assert.deepEqual(pages.flatMap((p) => p.rows.map((r) => r.id)), Array.from({ length: 1950 }, (_, i) => i));
  } finally {
    await worker.kill('SIGTERM');
  }
});
