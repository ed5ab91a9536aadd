// A worker: claims jobs of one queue over HTTP and runs a handler per job under a lease.
//
// Key decisions (the shape of River's producer / executor / completer, over the v1 API):
// - One claim loop asks for as many jobs as there are free slots, in one long-polling request,
//   and never holds more jobs than slots. close() aborts that request at once.
// - Each run heartbeats every third of its lease until the server has acknowledged the run's
//   end (not just until the handler returns), so a slow or retried completion never lets the
//   lease lapse. Progress rides on heartbeats (throttled); a checkpoint is sent at once and
//   saveCheckpoint() resolves only when the server has stored it.
// - The handler's AbortSignal fires when the job is cancelled (a heartbeat says so), the lease
//   is lost (409, or no heartbeat answered before it ran out), the job's timeout passes, or
//   the worker closes and its grace runs out.
// - A handler's outcome is always reported, even after its signal fired: the server fences it
//   by the lease (a late completion is refused and reported as a 'refused' event; a cancelled
//   job's failure makes it cancelled; a completion despite a cancel records the success).
// - Run ends are batched through POST /v1/jobs/finish (see finisher.ts); a slot is free as
//   soon as the handler settles, while its end is still on the way.

import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';

import {
  DroveError,
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  WorkerClosedError,
} from './errors.js';
import { Finisher, type Ending, type Settled } from './finisher.js';
import { Transport, delay } from './http.js';
import type { ClaimedJob } from './types.js';

export interface JobContext<P = unknown> {
  /** The claimed job as the server sent it (with `lease` and `lease_expires_at`). */
  readonly job: ClaimedJob<P>;
  readonly id: string;
  readonly payload: P;
  /** The number of this run among the runs that used an attempt (1 on the first run). */
  readonly attempt: number;
  /** The checkpoint this run resumes from (the last one an earlier run saved), or null. */
  readonly checkpoint: unknown;
  /** The run's fencing token, for the handler's own writes downstream. */
  readonly lease: string;
  /** Aborts when the job is cancelled, the lease is lost, the job times out, or the worker
   * closes past its grace; `signal.reason` says which (JobCancelledError, LeaseLostError,
   * JobTimeoutError, WorkerClosedError). */
  readonly signal: AbortSignal;
  /** Reports progress; sent with the next heartbeat (at most one per `progressIntervalMs`). */
  progress(done: number, total?: number | null, message?: string | null): void;
  /** Stores a checkpoint (any JSON); resolves once the server has stored it, rejects with
   * LeaseLostError when the lease is gone (then nothing was stored). */
  saveCheckpoint(value: unknown): Promise<void>;
}

export type Handler<P = unknown, R = unknown> = (ctx: JobContext<P>) => Promise<R> | R;

export interface WorkerOptions {
  /** Jobs run at once (default 1). */
  concurrency?: number;
  /** Lease asked for on claims (1,000 to 86,400,000; default: the queue's, 10 s). Heartbeats go
   * out every third of it. */
  leaseMs?: number;
  /** Shown on running jobs (default `host:pid`). */
  name?: string;
  /** How long one claim request waits for work (default 20 s, at most 60 s). */
  pollMs?: number;
  /** On close(), how long running handlers may take before their jobs are released (default 30 s). */
  graceMs?: number;
  /** At most one progress report per this long (default 1 s). */
  progressIntervalMs?: number;
  /** End runs through POST /v1/jobs/finish, many per request (default true). */
  batchFinish?: boolean;
}

/**
 * Events (all optional):
 * - `completed` (job, result, state): the server stored the success.
 * - `failed` (job, error, kind, state): the server stored the failure; `state` is where the job
 *   went (`scheduled`/`queued` to run again, `failed`, `cancelled`).
 * - `released` (job): the job was handed back unrun (close past its grace).
 * - `refused` (job, error): the server refused the end of the run (lease lost: another run owns
 *   the job now, or it timed out); nothing was changed.
 * - `error` (error): a claim or request failed; the worker keeps trying.
 * Without listeners, `refused` and `error` are written to stderr.
 */
export class Worker<P = unknown, R = unknown> extends EventEmitter {
  readonly queue: string;
  private readonly http: Transport;
  private readonly handler: Handler<P, R>;
  private readonly concurrency: number;
  private readonly leaseMs: number | undefined;
  private readonly name: string;
  private readonly pollMs: number;
  private readonly graceMs: number;
  private readonly progressIntervalMs: number;
  private readonly finisher: Finisher;
  /** Runs whose handler has not settled yet (these hold slots). A set, not a map by job id: a
   * zombie run (lease lost, handler still going) and the job's next run may both be here. */
  private readonly handling = new Set<Run>();
  /** Runs whose end the server has not acknowledged yet (these heartbeat). */
  private readonly live = new Set<Run>();
  private readonly claimAbort = new AbortController();
  private closing = false;
  private closed: Promise<void> | undefined;
  /** The claimer, waiting for a free slot. */
  private wakers: Array<() => void> = [];
  /** Slots asked for by the claim on its way. */
  private reserved = 0;
  private readonly loopDone: Promise<void>;

  constructor(http: Transport, queue: string, handler: Handler<P, R>, opts: WorkerOptions = {}) {
    super();
    if (typeof handler !== 'function') throw new TypeError('worker(queue, handler) needs a handler function');
    this.http = http;
    this.queue = queue;
    this.handler = handler;
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    this.leaseMs = opts.leaseMs;
    this.name = opts.name ?? `${hostname()}:${process.pid}`;
    this.pollMs = Math.min(60_000, Math.max(0, opts.pollMs ?? 20_000));
    this.graceMs = Math.max(0, opts.graceMs ?? 30_000);
    this.progressIntervalMs = Math.max(0, opts.progressIntervalMs ?? 1_000);
    this.finisher = new Finisher(http, 2, opts.batchFinish ?? true, (err) => this.report(err));
    this.loopDone = this.claimLoop();
  }

  /** Handlers running now. */
  get running(): number {
    return this.handling.size;
  }

  /**
   * Stops the worker: stops claiming at once (aborting the pending long poll), lets running
   * handlers finish for up to `graceMs`, then aborts the rest (signal reason
   * WorkerClosedError) and releases their jobs, which are queued again at once with no attempt
   * used. Resolves once the server has acknowledged every run's end. Calling it again returns
   * the same promise.
   */
  close(opts: { graceMs?: number } = {}): Promise<void> {
    this.closed ??= this.shutdown(opts.graceMs ?? this.graceMs);
    return this.closed;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    this.claimAbort.abort(new WorkerClosedError());
    for (const wake of this.wakers.splice(0)) wake();
    await this.loopDone;
    if (this.handling.size > 0) {
      const settled = Promise.all([...this.handling].map((r) => r.settled));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([settled, new Promise<void>((res) => (timer = setTimeout(res, graceMs)))]);
      clearTimeout(timer);
    }
    for (const run of [...this.handling]) this.release(run);
    await Promise.all([...this.live].map((r) => r.ended));
    await this.finisher.drained();
  }

  // ---- claiming

  /**
   * Claims up to the free slots in one request, long-polling when there is no work, so the jobs
   * held never outnumber the slots. (Two claimers sharing the slots were measured too: twice the
   * requests for short jobs, and slower on a 2-core machine, where this client is CPU-bound.)
   */
  private async claimLoop(): Promise<void> {
    const path = `/v1/queues/${encodeURIComponent(this.queue)}/claim`;
    let pause = 100;
    while (!this.closing) {
      const free = this.free();
      if (free <= 0) {
        await new Promise<void>((res) => this.wakers.push(res));
        continue;
      }
      const max = free;
      const body: Record<string, unknown> = { worker: this.name, max, wait_ms: this.pollMs };
      if (this.leaseMs !== undefined) body.lease_ms = this.leaseMs;
      let jobs: ClaimedJob<P>[];
      this.reserved += max;
      try {
        jobs = (await this.http.request<{ jobs: ClaimedJob<P>[] }>('POST', path, body, { signal: this.claimAbort.signal })).body.jobs;
        pause = 100;
      } catch (err) {
        if (this.closing) break;
        this.report(err);
        // A refused claim (a bad lease_ms, a bad queue name) will not get better by itself,
        // but an operator may fix the queue: keep trying, slowly.
        await delay(pause, this.claimAbort.signal).catch(() => undefined);
        pause = Math.min(pause * 2, 5_000);
        continue;
      } finally {
        this.reserved -= max;
      }
      const answeredAt = Date.now();
      for (const job of jobs) this.start(job, answeredAt);
      if (jobs.length < max) this.slotFreed();
    }
  }

  /** Slots neither running a handler nor reserved by a claim on its way, while not too many
   * ends wait to be sent. */
  private free(): number {
    if (this.finisher.pending >= 1_000) return 0;
    return this.concurrency - this.handling.size - this.reserved;
  }

  private slotFreed(): void {
    if (this.wakers.length > 0 && this.free() > 0) for (const wake of this.wakers.splice(0)) wake();
  }

  // ---- running

  private start(job: ClaimedJob<P>, answeredAt: number): void {
    const run = new Run(this, job, answeredAt);
    this.handling.add(run);
    this.live.add(run);
    if (this.closing) {
      // Claimed as close() began: hand it back unrun.
      this.release(run);
      return;
    }
    run.begin();
    this.execute(run).catch((err: unknown) => {
      // Not expected (every step above handles its errors); never let it take the process down.
      this.report(err);
      this.handling.delete(run);
      this.retire(run);
    });
  }

  private async execute(run: Run): Promise<void> {
    let ending: Ending;
    let result: unknown;
    let thrown: unknown;
    try {
      result = await this.handler(run.context as JobContext<P>);
      ending = result instanceof PartialResult ? { kind: 'complete', result: jsonable(result.value), partial: true } : { kind: 'complete', result: jsonable(result) };
      if (result instanceof PartialResult) result = result.value;
    } catch (err) {
      thrown = err;
      ending = failure(err);
    }
    run.handlerSettled();
    this.handling.delete(run);
    this.slotFreed();
    if (run.released) return; // close() handed it back already
    const settled = await this.finisher.end(run.job.id, run.lease, ending, () => !run.lost);
    let answer = settled;
    if (!settled.ok && ending.kind === 'complete' && (settled.error.code === 'payload_too_large' || settled.error.code === 'invalid_value')) {
      // The result cannot be stored; a retry would compute the same one.
      thrown = new Error(`the handler's result was refused: ${settled.error.message}`);
      ending = { kind: 'fail', error: { message: (thrown as Error).message, kind: 'permanent' } };
      answer = await this.finisher.end(run.job.id, run.lease, ending, () => !run.lost);
    }
    this.retire(run);
    this.announce(run, ending, answer, result, thrown);
  }

  /** The run's end is acknowledged (or refused): its heartbeats stop. */
  private retire(run: Run): void {
    run.finished();
    this.live.delete(run);
    this.slotFreed();
  }

  /** Hands a run's job back to the queue (close() past its grace). */
  private release(run: Run): void {
    if (run.released) return;
    run.released = true;
    this.handling.delete(run);
    run.abort(new WorkerClosedError());
    void this.finisher.end(run.job.id, run.lease, { kind: 'release' }, () => !run.lost).then((answer) => {
      this.retire(run);
      this.announce(run, { kind: 'release' }, answer, undefined, undefined);
    });
  }

  private announce(run: Run, ending: Ending, answer: Settled, result: unknown, thrown: unknown): void {
    if (!answer.ok) {
      if (this.listenerCount('refused') > 0) this.emit('refused', run.job, answer.error);
      else if (!run.expectedRefusal) {
        console.warn(`[drove-client] ${this.queue}: the end of job ${run.job.id}'s run was refused: ${answer.error.message}`);
      }
      return;
    }
    if (ending.kind === 'complete') this.emit('completed', run.job, result, answer.state);
    else if (ending.kind === 'fail') this.emit('failed', run.job, thrown, ending.error.kind, answer.state);
    else this.emit('released', run.job, answer.state);
  }

  /** @internal */
  report(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else console.warn(`[drove-client] worker ${this.queue}: ${err instanceof Error ? err.message : String(err)}`);
  }

  /** @internal Settings the runs read. */
  get settings(): { http: Transport; leaseMs: number | undefined; progressIntervalMs: number } {
    return { http: this.http, leaseMs: this.leaseMs, progressIntervalMs: this.progressIntervalMs };
  }
}

/** Wrap a handler's result in this to record a success that left some items undone. */
export class PartialResult<T = unknown> {
  constructor(readonly value: T) {}
}

/** `return partial(result)` from a handler: a success that left some items undone. */
export function partial<T>(value: T): PartialResult<T> {
  return new PartialResult(value);
}

/** The smallest lease the API grants, and the longest progress message it takes. */
const MIN_LEASE_MS = 1_000;
const MAX_MESSAGE_BYTES = 1_024;
const MAX_ERROR_BYTES = 16 * 1024;

/**
 * One run of one job: its lease, heartbeats, progress and checkpoints. Exactly one heartbeat is
 * in flight at a time; what arrives meanwhile (progress, checkpoints) goes in the next one.
 */
class Run {
  readonly job: ClaimedJob;
  readonly lease: string;
  readonly context: JobContext;
  readonly settled: Promise<void>;
  readonly ended: Promise<void>;
  released = false;
  lost = false;
  private readonly worker: Worker<any, any>;
  /** Made when the handler first reads `signal` (most never do); `reason` is kept apart. */
  private controller: AbortController | undefined;
  private reason: Error | undefined;
  private readonly leaseMs: number;
  private readonly every: number;
  private handlerDone = false;
  private over = false;
  private inflight = false;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private nextBeatAt: number;
  private lastSentAt = 0;
  private progressOut: { done: number; total: number | null; message: string | null } | undefined;
  private checkpointOut: { value: unknown; waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> } | undefined;
  private settle!: () => void;
  private end!: () => void;

  constructor(worker: Worker<any, any>, job: ClaimedJob, answeredAt: number) {
    this.worker = worker;
    this.job = job;
    this.lease = String(job.lease);
    // The lease's length, from the server's own two times (no clock skew), else what we asked.
    const granted = Date.parse(job.lease_expires_at) - Date.parse(job.started_at ?? '');
    this.leaseMs = Math.max(MIN_LEASE_MS, worker.settings.leaseMs ?? (Number.isFinite(granted) && granted > 0 ? granted : 10_000));
    this.every = Math.max(100, Math.floor(this.leaseMs / 3));
    this.nextBeatAt = answeredAt + this.every;
    this.settled = new Promise((res) => (this.settle = res));
    this.ended = new Promise((res) => (this.end = res));
    this.armDeadline(answeredAt + this.leaseMs);
    const run = this;
    this.context = {
      job,
      id: job.id,
      payload: job.payload,
      attempt: job.attempt,
      checkpoint: job.checkpoint ?? null,
      lease: this.lease,
      get signal() {
        return run.signal;
      },
      progress(done, total, message) {
        run.progress(done, total, message);
      },
      saveCheckpoint(value) {
        return run.saveCheckpoint(value);
      },
    };
  }

  /** Starts heartbeats and the job's own timeout. */
  begin(): void {
    const timeoutMs = this.job.timeout_ms;
    if (typeof timeoutMs === 'number' && timeoutMs > 0) {
      // The server times the run from its claim, a moment before the answer reached us.
      this.timeoutTimer = setTimeout(() => this.abort(new JobTimeoutError(this.job.id, timeoutMs)), timeoutMs);
      this.timeoutTimer.unref?.();
    }
    this.pump();
  }

  /** The worker already knows the lease is gone (lost, or the job timed out): a refused end
   * is no news. */
  get expectedRefusal(): boolean {
    return this.lost || this.reason instanceof JobTimeoutError;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller?.abort(reason);
  }

  handlerSettled(): void {
    this.handlerDone = true;
    clearTimeout(this.timeoutTimer);
    this.progressOut = undefined;
    this.settle();
  }

  /** The server acknowledged (or refused) the run's end: heartbeats stop. */
  finished(): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.timeoutTimer);
    if (this.checkpointOut) {
      this.failCheckpoints(new LeaseLostError(this.job.id, `job ${this.job.id}: the run has ended; the checkpoint was not stored`, null));
    }
    this.end();
  }

  private progress(done: number, total?: number | null, message?: string | null): void {
    if (this.handlerDone || this.over) return;
    this.progressOut = {
      done: Math.trunc(Number(done) || 0),
      total: total === undefined || total === null ? null : Math.trunc(Number(total) || 0),
      message: message === undefined || message === null ? null : truncate(String(message), MAX_MESSAGE_BYTES),
    };
    this.pump();
  }

  private saveCheckpoint(value: unknown): Promise<void> {
    if (this.lost) return Promise.reject(this.reason ?? new LeaseLostError(this.job.id));
    if (this.over || this.handlerDone) {
      return Promise.reject(new Error(`job ${this.job.id}: saveCheckpoint after the handler returned`));
    }
    return new Promise((resolve, reject) => {
      const waiters = this.checkpointOut?.waiters ?? [];
      waiters.push({ resolve, reject });
      this.checkpointOut = { value: value === undefined ? null : value, waiters };
      this.pump();
    });
  }

  /** Sends a heartbeat if one is due (a checkpoint, the regular beat, throttled progress),
   * else sets a timer for when one will be. */
  private pump(): void {
    if (this.over || this.lost || this.inflight) return;
    clearTimeout(this.timer);
    const now = Date.now();
    let due = this.nextBeatAt;
    if (this.progressOut) due = Math.min(due, this.lastSentAt + this.worker.settings.progressIntervalMs);
    if (this.checkpointOut) due = now;
    if (due <= now) {
      void this.beat();
      return;
    }
    this.timer = setTimeout(() => this.pump(), due - now);
    this.timer.unref?.();
  }

  private async beat(): Promise<void> {
    this.inflight = true;
    const sentAt = Date.now();
    this.lastSentAt = sentAt;
    const body: Record<string, unknown> = { lease: this.lease };
    if (this.worker.settings.leaseMs !== undefined) body.lease_ms = this.worker.settings.leaseMs;
    const progress = this.progressOut;
    const checkpoint = this.checkpointOut;
    this.progressOut = undefined;
    this.checkpointOut = undefined;
    if (progress) body.progress = progress;
    if (checkpoint) body.checkpoint = checkpoint.value;
    const path = `/v1/jobs/${encodeURIComponent(this.job.id)}/heartbeat`;
    let retryIn = this.every;
    try {
      const ack = (await this.worker.settings.http.request<{ lease_expires_at: string; cancel_requested: boolean }>('POST', path, body, { jobId: this.job.id })).body;
      this.armDeadline(sentAt + this.leaseMs);
      for (const w of checkpoint?.waiters ?? []) w.resolve();
      if (ack.cancel_requested && !this.handlerDone) this.abort(new JobCancelledError(this.job.id));
    } catch (err) {
      if (err instanceof LeaseLostError || (err instanceof DroveError && err.status === 404)) {
        this.loseLease(err instanceof LeaseLostError ? err : new LeaseLostError(this.job.id, err.message, err.status));
        for (const w of checkpoint?.waiters ?? []) w.reject(this.reason);
      } else if (err instanceof DroveError && !err.transient) {
        // The server refused what this heartbeat carried (a checkpoint over the size limit):
        // that save fails; the lease still needs a plain heartbeat, at once.
        for (const w of checkpoint?.waiters ?? []) w.reject(err);
        this.worker.report(err);
        retryIn = 0;
      } else {
        // No answer: try again soon, carrying what this one carried unless newer came.
        this.worker.report(err);
        // (Read through a helper: TypeScript forgets that the fields may have changed meanwhile.)
        const newer = this.pendingOut();
        if (checkpoint) {
          if (newer.checkpoint) newer.checkpoint.waiters.unshift(...checkpoint.waiters);
          else this.checkpointOut = checkpoint;
        }
        if (progress && !newer.progress) this.progressOut = progress;
        retryIn = Math.min(1_000, this.every);
      }
    } finally {
      this.inflight = false;
      this.nextBeatAt = sentAt + retryIn;
    }
    this.pump();
  }

  private pendingOut(): { checkpoint: Run['checkpointOut']; progress: Run['progressOut'] } {
    return { checkpoint: this.checkpointOut, progress: this.progressOut };
  }

  /** When no heartbeat has extended the lease by `at`, the lease is gone. */
  private armDeadline(at: number): void {
    clearTimeout(this.deadlineTimer);
    if (this.over) return;
    this.deadlineTimer = setTimeout(() => {
      this.loseLease(new LeaseLostError(this.job.id, `job ${this.job.id}: no heartbeat was answered before the lease ran out`, null));
    }, Math.max(0, at - Date.now()));
    this.deadlineTimer.unref?.();
  }

  private loseLease(err: LeaseLostError): void {
    if (this.lost || this.over) return;
    this.lost = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    this.abort(err);
    this.failCheckpoints(err);
  }

  private failCheckpoints(err: Error): void {
    const pending = this.checkpointOut;
    this.checkpointOut = undefined;
    for (const w of pending?.waiters ?? []) w.reject(err);
  }
}

/** What a handler's throw tells the server: Throttled, Permanent, Snooze, else retryable.
 * Matched by name too, so errors from another copy of this package count. */
function failure(err: unknown): Ending {
  const e = err as { name?: unknown; message?: unknown; retryAfterMs?: unknown; ms?: unknown } | null;
  const name = e && typeof e === 'object' ? e.name : undefined;
  const message = truncate(describe(err), MAX_ERROR_BYTES);
  const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : undefined);
  if (name === 'Throttled') {
    const retry = ms(e!.retryAfterMs);
    return { kind: 'fail', error: { message, kind: 'throttled' }, ...(retry !== undefined ? { retry_after_ms: retry } : {}) };
  }
  if (name === 'Permanent') return { kind: 'fail', error: { message, kind: 'permanent' } };
  if (name === 'Snooze') {
    const retry = ms(e!.ms);
    return { kind: 'fail', error: { message, kind: 'snooze' }, ...(retry !== undefined ? { retry_after_ms: retry } : {}) };
  }
  return { kind: 'fail', error: { message, kind: 'retryable' } };
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const plain = ['Error', 'Throttled', 'Permanent', 'Snooze'].includes(err.name);
    return plain ? err.message : `${err.name}: ${err.message}`;
  }
  try {
    return typeof err === 'string' ? err : JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/** At most `max` bytes of UTF-8, cut on a character boundary. */
function truncate(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  const buf = Buffer.from(text).subarray(0, max - 3);
  return `${buf.toString('utf8').replace(/\uFFFD$/, '')}...`;
}

/** `undefined` is not JSON: a handler that returns nothing completes with a null result. */
function jsonable(value: unknown): unknown {
  return value === undefined ? null : value;
}
