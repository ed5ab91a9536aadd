// A `drove serve` of its own for a benchmark: a fresh SQLite database in a temporary directory,
// port 0, durable unless asked otherwise. DROVE_BIN names the binary, else the repository's
// target/release/drove.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export function droveBin() {
  const bin = process.env.DROVE_BIN || resolve(here, '..', '..', '..', 'target', 'release', 'drove');
  if (!existsSync(bin)) {
    console.error(`no drove binary at ${bin}: cargo build --release -p drove-cli, or set DROVE_BIN`);
    process.exit(1);
  }
  return bin;
}

/** Starts the server; answers { url, cpuMs(), stop() }. */
export async function serve({ relaxed = false } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'drove-node-bench-'));
  const args = ['serve', '--db', join(dir, 'drove.db'), '--bind', '127.0.0.1:0'];
  if (relaxed) args.push('--relaxed-durability');
  const proc = spawn(droveBin(), args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
  const url = await new Promise((res, rej) => {
    createInterface({ input: proc.stdout }).on('line', (l) => {
      const m = /^drove listening on (\S+)$/.exec(l);
      if (m) res(m[1]);
    });
    proc.once('exit', (c) => rej(new Error(`drove serve exited (${c})`)));
  });
  return {
    url,
    /** CPU time (user + system, ms) the server process has used so far. */
    cpuMs() {
      const f = readFileSync(`/proc/${proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, 100 ticks a second
    },
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The q-quantile of sorted xs (nearest rank). */
export const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
