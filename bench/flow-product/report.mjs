#!/usr/bin/env node
// The sitting's table: reads the JSON lines of run.mjs (runs.jsonl) and, when present, the
// simulator's (`drove bench flow --json`, sim.jsonl) from a results directory, and prints a
// markdown table: per cell and figure, the median of the runs, the spread (min-max), how many
// runs met the target, and the simulator's figure for the nearest cell (median/worst over its
// seeds) beside it.
//
//   node report.mjs bench/flow-product/results/<UTC>

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { median } from './lib.mjs';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node report.mjs RESULTS_DIR');
  process.exit(1);
}

const readLines = (path) =>
  existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter((l) => l.trim().startsWith('{'))
        .map((l) => JSON.parse(l))
    : [];

const runs = readLines(join(dir, 'runs.jsonl'));
const sim = readLines(join(dir, 'sim.jsonl')).filter((r) => r.role === 'candidate');

/** The simulator's figure `name` of the candidate row whose cell is `cell`: "median/worst". */
function simFig(scenario, cell, name, scale = 1) {
  const row = sim.find((r) => r.scenario === scenario && r.cell === cell);
  const f = row?.figures.find((x) => x.name === name);
  if (!f) return '';
  return `${fmt(f.median * scale)}/${fmt(f.worst * scale)} (${scenario} ${cell})`;
}

function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '-';
  if (typeof x !== 'number') return String(x);
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function get(obj, path) {
  return path.split('.').reduce((o, k) => (o === undefined || o === null ? undefined : o[k]), obj);
}

/** Rows per scenario: [label, path in the result, target (op bound) or null, sim cell, sim figure]. */
function rowsFor(r) {
  if (r.scenario === 'A') {
    const rows = [['unloaded online job p99, ms', 'figures.unloaded.job_p99_ms', null]];
    const simCells = ['c8 s0.3', 'c8->4 s0.3', 'c8->16 s0.3'];
    r.figures.phases.forEach((p, i) => {
      const at = `phase ${i + 1}, c = ${p.c}`;
      const sc = simCells[i];
      rows.push([`${at}: goodput ÷ capacity`, `figures.phases.${i}.goodput`, '>= 0.95', 'A', sc, 'goodput']);
      rows.push([`${at}: online p99 ÷ unloaded`, `figures.phases.${i}.online_p99x`, '<= 2', 'A', sc, 'p99x']);
      rows.push([`${at}: online p50 ÷ unloaded`, `figures.phases.${i}.online_p50x`, '<= 2', 'A', sc, 'p50x']);
      rows.push([`${at}: pool limit (median)`, `figures.phases.${i}.limit_median`, null, 'A', sc, 'limit']);
      rows.push([`${at}: offline limit (median)`, `figures.phases.${i}.offline_limit_median`, null]);
      rows.push([`${at}: calls queued in the provider (mean)`, `figures.phases.${i}.ds_queued_mean`, null]);
    });
    return rows;
  }
  if (r.scenario === 'B') {
    const simCell = r.nodes > 1 ? 'R=100/s 3 inst' : 'R=100/s 1 inst';
    const rows = r.figures.phases.map((p, i) => [
      `R = ${p.r}/s from ${p.from_s} s: accepted ÷ limit (from 5 s after the change)`,
      `figures.phases.${i}.accepted_of_limit`,
      '>= 0.95',
    ]);
    rows.push(['accepted ÷ limit, every steady window', 'figures.accepted_steady', null, 'B', simCell, 'accepted_steady']);
    rows.push(['429s ÷ all calls, %', 'figures.share_429', '<= 0.02', 'B', simCell, 'share_429']);
    rows.push(['429s ÷ calls, first 5 s after the drop, %', 'figures.phases.1.share_429_first_5s', null, 'B', simCell, 'share_429_after_halving']);
    rows.push(['jobs that used attempt 2 or more', 'figures.jobs_over_attempt_1', '<= 0', 'B', simCell, 'attempts_on_429']);
    if (r.nodes > 1) rows.push(['fairness between the nodes\' workers (Jain)', 'figures.fairness', null, 'B', simCell, 'fairness']);
    r.figures.phases.forEach((p, i) => rows.push([`R = ${p.r}/s: the queue's learned rate_now (median, same window)`, `figures.phases.${i}.rate_now_median`, null]));
    return rows;
  }
  const simCell = `c8 online ${r.settings.rho}`;
  return [
    ['online p99 ÷ online alone', 'figures.online_p99x', '<= 1.5', 'C', simCell, 'online_p99x'],
    ['online p50 ÷ online alone', 'figures.online_p50x', null],
    ['offline goodput ÷ leftover capacity', 'figures.offline_of_leftover', '>= 0.9', 'C', simCell, 'offline_of_leftover'],
    ['online alone p99, ms', 'figures.online_alone_p99_ms', null],
    ['pool limit (median)', 'figures.limit_median', null, 'C', simCell, 'limit'],
    ['offline limit (median)', 'figures.offline_limit_median', null, 'C', simCell, 'offline_limit'],
    ['calls queued in the provider (mean)', 'figures.ds_queued_mean', null],
    ['cold start: s until the online queue stayed empty', 'figures.cold_start_s', null],
  ];
}

function cellName(r) {
  const where = r.store === 'postgres' ? `PostgreSQL${r.nodes > 1 ? `, ${r.nodes} nodes` : ''}` : 'SQLite';
  const worker = r.scenario === 'B' ? (r.worker === 'cli' ? ', drove worker' : ', Node workers') : '';
  return `${r.cell} (${where}${worker})`;
}

const passes = (target, v) => {
  if (!target || typeof v !== 'number') return null;
  const [op, b] = target.split(' ');
  return op === '>=' ? v >= Number(b) : v <= Number(b);
};

const cells = new Map();
for (const r of runs) {
  const k = cellName(r);
  if (!cells.has(k)) cells.set(k, []);
  cells.get(k).push(r);
}

const out = [];
const bins = [...new Set(runs.map((r) => `${r.binary} (${r.binary_version})`))];
out.push(`Binary: ${bins.join('; ')}. ${runs.length} runs; median of the runs per cell, spread = min-max, "met" = runs meeting the target.`);
out.push(`Simulator column: \`drove bench flow\` (p50-gradient candidate, median/worst of its seeds) for the nearest cell named beside it; its cells differ (service 10 ms, not 50; A steps 8->4 and 8->16 at 30 s; B R = 100/s GCRA burst 10 with 1 or 3 instances, not 50 -> 25 -> 50/s over a sliding window; C online alone without any limit): compare shapes, not digits.`);
out.push('');
out.push('| cell | figure | target | median | spread | met | simulator |');
out.push('|---|---|---|---|---|---|---|');
for (const [name, rs] of cells) {
  const rows = rowsFor(rs[0]);
  const wall = median(rs.map((r) => r.wall_s));
  for (const [i, [label, path, target, simScenario, simCell, simName]] of rows.entries()) {
    const vals = rs.map((r) => get(r, path));
    // Shares are shown in percent (the target stays a fraction).
    const scale = label.endsWith(', %') ? 100 : 1;
    const nums = vals.filter((v) => typeof v === 'number' && Number.isFinite(v)).map((v) => v * scale);
    let med;
    let spread = '';
    if (nums.length > 0) {
      med = fmt(median(nums));
      spread = nums.length > 1 ? `${fmt(Math.min(...nums))}-${fmt(Math.max(...nums))}` : '';
    } else {
      med = vals.map((v) => fmt(v)).join(', ');
    }
    const met = target ? `${vals.filter((v) => passes(target, v)).length}/${rs.length}` : '';
    const simText = simScenario ? simFig(simScenario, simCell, simName, scale) : '';
    const loads = rs.map((r) => r.load_before);
    const cell = i === 0 ? `${name}, ${rs.length} runs, ${fmt(wall)} s each, load ${fmt(Math.min(...loads))}-${fmt(Math.max(...loads))}` : '';
    const shownTarget = target && scale !== 1 ? `${target.split(' ')[0]} ${Number(target.split(' ')[1]) * scale}` : target;
    out.push(`| ${cell} | ${label} | ${shownTarget ?? ''} | ${med} | ${spread} | ${met} | ${simText} |`);
  }
}
out.push('');
const all = runs.flatMap((r) => r.targets);
out.push(`Targets met: ${all.filter((t) => t.pass).length} of ${all.length} (run by run).`);
console.log(out.join('\n'));
