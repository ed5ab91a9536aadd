// Test harness: a real `drove serve` on a free loopback port with a fresh database per test
// file (which a test may crash and restart on the same port and file), child processes read
// line by line, a fetch that counts requests, and waits on events with generous timeouts (never
// a sleep standing in for synchronisation).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Drove } from 'drove-client';

/** clients/node (this file runs from clients/node/build/test). */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO_DIR = resolve(PACKAGE_DIR, '..', '..');

export function droveBin(): string {
  const bin = process.env.DROVE_BIN || join(REPO_DIR, 'target', 'debug', 'drove');
  if (!existsSync(bin)) {
    throw new Error(
      `the drove binary is missing at ${bin}: build it with \`cargo build -p drove-cli\` in ${REPO_DIR}, ` +
        'or point DROVE_BIN at one',
    );
  }
  return bin;
}

export interface Server {
  url: string;
  drove: Drove;
  dir: string;
  /** The running `drove serve` (a new one after restart()). */
  readonly proc: ChildProcess;
  /** The server's stderr so far (its log), for failure messages. */
  log(): string;
  /** SIGKILLs the server (a crash: no graceful shutdown); resolves once it has exited. */
  kill(): Promise<void>;
  /** Starts the server again on the same address and database file; resolves once it listens. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `drove serve` on 127.0.0.1:0 with a fresh database; resolves once it listens. */
export async function startServer(opts: { token?: string; args?: string[]; ca?: string } = {}): Promise<Server> {
  const bin = droveBin();
  const dir = await mkdtemp(join(tmpdir(), 'drove-node-test-'));
  let stderr = '';
  const log = (chunk: string) => {
    stderr = (stderr + chunk).slice(-64 * 1024);
    if (process.env.DROVE_TEST_LOG) process.stderr.write(chunk);
  };
  let serve = await spawnServe(bin, dir, '127.0.0.1:0', opts.token, log, () => stderr, opts.args);
  const url = serve.url;
  return {
    url,
    dir,
    get proc() {
      return serve.proc;
    },
    drove: new Drove({ url, token: opts.token, ca: opts.ca }),
    log: () => stderr,
    async kill() {
      await serve.signal('SIGKILL');
    },
    async restart() {
      await serve.signal('SIGKILL');
      // The port was the kernel's pick, so it is free again once the old process is gone;
      // retry a bind that loses a race with the old sockets for a while.
      const bind = new URL(url).host;
      for (let tries = 0; ; tries++) {
        try {
          serve = await spawnServe(bin, dir, bind, opts.token, log, () => stderr, opts.args);
          return;
        } catch (err) {
          if (tries >= 50 || !/in use/i.test(String(err))) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async stop() {
      await serve.signal('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

interface Serve {
  url: string;
  proc: ChildProcess;
  /** Sends `sig` (SIGTERM escalates to SIGKILL after 15 s) and resolves once it has exited. */
  signal(sig: NodeJS.Signals): Promise<void>;
}

async function spawnServe(
  bin: string,
  dir: string,
  bind: string,
  token: string | undefined,
  log: (chunk: string) => void,
  logSoFar: () => string,
  extra: string[] = [],
): Promise<Serve> {
  const args = ['serve', '--db', join(dir, 'drove.db'), '--bind', bind, ...extra];
  if (token) args.push('--token', token);
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', log);
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  // Should this test process die without its after() hooks, the server goes with it.
  const orphanGuard = () => proc.kill('SIGKILL');
  process.once('exit', orphanGuard);
  void exited.then(() => process.off('exit', orphanGuard));
  const url = await new Promise<string>((res, rej) => {
    const lines = createInterface({ input: proc.stdout! });
    const timer = setTimeout(() => rej(new Error(`drove serve did not say it listens within 30 s; its log:\n${logSoFar()}`)), 30_000);
    lines.on('line', (line) => {
      const m = /^drove listening on (https?:\/\/\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`drove serve exited (${code ?? signal}) before listening; its log:\n${logSoFar()}`));
    });
    proc.once('error', (err) => {
      clearTimeout(timer);
      rej(err);
    });
  });
  return {
    url,
    proc,
    async signal(sig) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(sig);
        const killer = sig === 'SIGKILL' ? undefined : setTimeout(() => proc.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(killer);
      }
      await exited;
    },
  };
}

/** A `fetch` that counts the requests it starts (also those that get no answer) and keeps
 * their method and path, for asserting how many requests a client sent. */
export function countingFetch(): { fetch: typeof fetch; count: number; paths: string[] } {
  const counter = {
    count: 0,
    paths: [] as string[],
    fetch: ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
      counter.count += 1;
      counter.paths.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`);
      return fetch(input, init);
    }) as typeof fetch,
  };
  return counter;
}

/** Rejects with `what` if `p` takes longer than `ms` (a generous bound, not a schedule). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const limit = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** Checks `condition` every 20 ms until it holds (at most `ms`): for states only visible by
 * asking, such as a queue existing on the server. */
export async function until(condition: () => Promise<boolean> | boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** The next `event` on `emitter` whose arguments pass `test`. */
export function nextEvent<A extends unknown[]>(
  emitter: NodeJS.EventEmitter,
  event: string,
  test: (...args: A) => boolean = () => true,
): Promise<A> {
  return new Promise((res) => {
    const on = (...args: unknown[]) => {
      if (test(...(args as A))) {
        emitter.off(event, on);
        res(args as A);
      }
    };
    emitter.on(event, on);
  });
}

/** A child process whose stdout is JSON lines; `next(test)` resolves on the first line passing
 * `test` that arrives after (or arrived before and was not yet taken by) the call. */
export class LineProcess {
  readonly proc: ChildProcess;
  readonly lines: unknown[] = [];
  private waiters: Array<{ test: (l: any) => boolean; resolve: (l: any) => void; from: number }> = [];
  private stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(command: string, args: string[], env: Record<string, string>) {
    this.proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (c: string) => {
      this.stderr = (this.stderr + c).slice(-32 * 1024);
      if (process.env.DROVE_TEST_LOG) process.stderr.write(c);
    });
    createInterface({ input: this.proc.stdout! }).on('line', (text) => {
      let line: unknown;
      try {
        line = JSON.parse(text);
      } catch {
        line = { text };
      }
      this.lines.push(line);
      for (const w of [...this.waiters]) {
        if (w.test(line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    });
    this.exited = new Promise((res) => this.proc.once('exit', (code, signal) => res({ code, signal })));
    const orphanGuard = () => this.proc.kill('SIGKILL');
    process.once('exit', orphanGuard);
    void this.exited.then(() => process.off('exit', orphanGuard));
  }

  /** The first line (already seen or still to come) passing `test`. */
  next<L = any>(test: (line: any) => boolean): Promise<L> {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen as L);
    return new Promise((resolve) => this.waiters.push({ test, resolve, from: this.lines.length }));
  }

  log(): string {
    return this.stderr;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    await this.exited;
  }
}

/**
 * A TCP proxy in front of the server that can be cut (a network partition): while cut, bytes in
 * both directions are held, and they flow again on `heal()`.
 */
export class Partition {
  private readonly server: net.Server;
  private cut = false;
  private readonly held: Array<() => void> = [];
  private readonly sockets = new Set<net.Socket>();
  url = '';

  constructor(private readonly target: string) {
    this.server = net.createServer((client) => this.connect(client));
  }

  async listen(): Promise<string> {
    await new Promise<void>((res) => this.server.listen(0, '127.0.0.1', res));
    const port = (this.server.address() as net.AddressInfo).port;
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  partition(): void {
    this.cut = true;
  }

  heal(): void {
    this.cut = false;
    for (const f of this.held.splice(0)) f();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((res) => this.server.close(() => res()));
  }

  private connect(client: net.Socket): void {
    const { hostname, port } = new URL(this.target);
    const upstream = net.connect(Number(port), hostname);
    this.sockets.add(client).add(upstream);
    const pipe = (from: net.Socket, to: net.Socket) => {
      from.on('data', (chunk) => {
        if (this.cut) this.held.push(() => to.write(chunk));
        else to.write(chunk);
      });
      from.on('end', () => (this.cut ? this.held.push(() => to.end()) : to.end()));
      from.on('error', () => to.destroy());
      from.on('close', () => {
        this.sockets.delete(from);
        to.destroy();
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
  }
}
