// Flow control through the real product (bench/flow-product, docs/FLOW.md §5.2):
// scenarios A and C in --quick mode, each a `drove serve` on a fresh SQLite database, its
// limit service, Node worker processes and a provider on loopback (c slots of ~50 ms). The
// bounds are generous on purpose (counts, orders and ratios, no timed assertion): they catch a
// product that stops protecting online work or stops filling the provider, not a few percent.
// The real targets and figures come from `bench/flow-product/sitting.sh`.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';

import { LineProcess, REPO_DIR, droveBin, within } from './harness.js';

const RUN = join(REPO_DIR, 'bench', 'flow-product', 'run.mjs');

interface Result {
  scenario: string;
  pass: boolean;
  failed: string[];
  figures: any;
  series: any;
  cpu_s: Record<string, number>;
}

/** Runs one scenario of the harness in --quick mode and answers its JSON line. */
async function quick(args: string[]): Promise<Result> {
  const proc = new LineProcess(process.execPath, [RUN, '--quick', ...args], { DROVE_BIN: droveBin() });
  try {
    const exit = await within(proc.exited, 120_000, `run.mjs ${args.join(' ')}\n${proc.log()}`);
    assert.equal(exit.code, 0, `run.mjs ${args.join(' ')} failed:\n${proc.log()}`);
    const line = proc.lines.find((l: any) => l && typeof l === 'object' && 'scenario' in l) as Result | undefined;
    assert.ok(line, `run.mjs printed no result line:\n${proc.log()}`);
    return line;
  } finally {
    await proc.kill('SIGTERM');
  }
}

test('A (adaptive pool, capacity 8 -> 3 -> 12 slots): the provider stays busy, online work is not held behind the backlog', async () => {
  const r = await quick(['--scenario', 'A']);
  const f = r.figures;
  // Every online job was served (the run waits for each one) and nothing was refused.
  assert.ok(f.online_submitted > 50, `online jobs submitted: ${f.online_submitted}`);
  assert.equal(f.online_done, f.online_submitted, 'every online job served exactly once');
  assert.equal(f.rejected_calls, 0, 'no call refused');
  assert.equal(f.max_attempt, 1, 'no job needed a second attempt');
  assert.ok(f.offline_done > 500, `offline jobs done: ${f.offline_done}`);
  const [c8, c3, c12] = f.phases;
  // The provider is kept busy once the limits have settled. The first phase starts the offline
  // lane on a pool that idled at a limit of 1 or 2: the ramp (3 to 6 s today, reported by the
  // sitting) fills most of its quick window, so only a collapse is caught there.
  assert.ok(c8.goodput > 0.25, `goodput at 8 slots, with the ramp: ${c8.goodput} (${JSON.stringify(c8)})`);
  assert.ok(c3.goodput > 0.7, `goodput at 3 slots: ${c3.goodput} (${JSON.stringify(c3)})`);
  assert.ok(c12.goodput > 0.7, `goodput at 12 slots: ${c12.goodput} (${JSON.stringify(c12)})`);
  // The unloaded baseline of a quick run is a handful of jobs: the bound is wide. At 3 slots the
  // limit must come down from what 8 slots allowed, and calls queue in the provider meanwhile.
  assert.ok(c8.online_p99x < 4, `online p99 / unloaded at 8 slots: ${c8.online_p99x}`);
  assert.ok(c12.online_p99x < 4, `online p99 / unloaded at 12 slots: ${c12.online_p99x}`);
  assert.ok(c3.online_p99x < 6, `online p99 / unloaded at 3 slots: ${c3.online_p99x}`);
  // The pool's offline limit (its estimate of the provider's capacity) follows the capacity
  // (against the first phase, still ramping in a quick run, this would not be an order).
  assert.ok(c3.offline_limit_median < c12.offline_limit_median, `offline limit at 3 slots (${c3.offline_limit_median}) below the one at 12 (${c12.offline_limit_median})`);
});

test('C (online and offline lanes of one pool, online at 0.3 of capacity): online latency holds, offline work fills what is left', async () => {
  const r = await quick(['--scenario', 'C', '--rho', '0.3']);
  const f = r.figures;
  assert.ok(f.online_submitted > 200, `online jobs submitted: ${f.online_submitted}`);
  assert.equal(f.online_done, f.online_submitted, 'every online job served exactly once');
  assert.equal(f.rejected_calls, 0, 'no call refused');
  assert.equal(f.max_attempt, 1, 'no job needed a second attempt');
  assert.ok(f.online_alone_n > 50, `baseline samples: ${f.online_alone_n}`);
  assert.ok(f.online_p99x < 4, `online p99 / online alone: ${f.online_p99x}`);
  assert.ok(f.offline_of_leftover > 0.7, `offline goodput / leftover capacity: ${f.offline_of_leftover}`);
  assert.ok(f.goodput > 0.7, `goodput: ${f.goodput}`);
});
