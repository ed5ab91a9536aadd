// A worker: claims jobs of one queue over HTTP and runs a handler per job (or per batch of jobs,
// see BatchWorker) under a lease.
//
// Key decisions (the shape of River's producer / executor / completer, over the v1 API):
// - One claim loop asks for jobs in one request at a time. When the worker has free slots and
//   nothing buffered it long-polls for as many jobs as it has free slots; close() aborts that
//   request at once.
// - One request per cycle: the ends of runs that are waiting when the claim loop sends its next
//   claim ride on it (`finish` in the claim's body, answered in `finished`), instead of a
//   `POST /v1/jobs/finish` of their own. The loop decides once a burst of handler ends has
//   landed (it wakes through setImmediate, not at the first end), so the ends of a claim's worth
//   of quick handlers go together. Ends that arrive while a claim that answers at once is out
//   wait for the next claim; ends that arrive while a long poll is out (the worker waits for
//   work) go through the finisher at once (finisher.ts). A claim that carries ends never
//   long-polls (wait_ms 0; a batch worker's waits at most its linger), so no end waits for work
//   to arrive, and close() lets it finish rather than aborting it (it answers at once). A server
//   that refuses `finish` (400/422 naming it, or an answer without `finished`) gets the ends
//   through the finisher from then on (warned once).
// - A bounded prefetch: when work flows, a claim also asks for a few jobs ahead of the free
//   slots, so one request serves more jobs than there are slots. The buffer is sized to about
//   PREFETCH_WINDOW_MS of work at the recent handler durations (an EWMA; nothing before the first
//   handler ended), at most `maxPrefetch` (default: `concurrency`); it is refilled by claims
//   that answer at once, only while they find work. A long poll (the worker is idle) asks for
//   free slots only. Buffered jobs heartbeat (their leases stay alive) and count against the
//   worker's holdings; one whose signal fires before it starts (cancelled, lease lost, timed out)
//   is handed back at once, and close() hands every buffered job back at once (`release`: queued
//   again, no attempt used). No prefetch on a queue with a concurrency limit, group limits, a
//   rate (also `auto`), an adaptive limit or a pool: there a held job counts against the limit
//   while it waits, so it would keep another worker idle. The worker reads the queue
//   (GET /v1/queues/NAME) once its first handler has ended and every minute after; until it
//   knows, it does not prefetch.
// - Each run heartbeats every third of its lease until the server has acknowledged the run's
//   end (not just until the handler returns), so a slow or retried completion never lets the
//   lease lapse. Progress rides on heartbeats (throttled); a checkpoint is sent at once and
//   saveCheckpoint() resolves only when the server has stored it.
// - Every request goes through one Link per worker (link.ts): while the server is away, the
//   claim loop, the heartbeats of every held job and the finisher wait their turn there, one
//   request per backoff interval in all, and all resume the moment the server answers again.
//   Each retrier also backs off on its own (capped, jittered), should the server answer others.
//   While the server is away no claim carries ends (the finisher sends them, as before).
// - The handler's AbortSignal fires when the job is cancelled (a heartbeat says so), the lease
//   is lost (409, or no heartbeat answered before it ran out), the job's timeout passes, or
//   the worker closes and its grace runs out. When the lease is lost, every checkpoint not yet
//   confirmed is rejected at once, including the one a heartbeat still carries (that request
//   may never be answered), so no saveCheckpoint() is left pending. A handler still running
//   `stuckAfterMs` after its signal fired is reported ('stuck'); its slot is free when it returns.
// - A handler's outcome is always reported, even after its signal fired: the server fences it
//   by the lease (a late completion is refused and reported as a 'refused' event; a cancelled
//   job's failure makes it cancelled; a completion despite a cancel records the success).
// - A slot is free as soon as the handler settles, while its end is still on the way.
// - A 401 or 403 stops the worker (as close() with no grace): retrying cannot fix a token.

import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { types } from 'node:util';

import { classifyError, type Classifier } from './classify.js';
import {
  DroveError,
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  WorkerClosedError,
} from './errors.js';
import { Finisher, type Carried, type Ending, type FinishRow, type Settled } from './finisher.js';
import { RawBody, Transport, delay } from './http.js';
import { Link, backoffMs, isAuthError } from './link.js';
import { startRun } from './otel.js';
import { submitBatches, submitBody } from './submit.js';
import type { ClaimedJob, Job, JobSpec, QueueInfo } from './types.js';

/** A child to submit from a handler (`ctx.submitChildren`): a job spec whose `parent` is the
 * running job. */
export type ChildSpec<P = unknown> = Omit<JobSpec<P>, 'parent'>;

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
  /** Reports progress; sent with the next heartbeat (at most one per `progressIntervalMs`).
   * Never throws and returns nothing to await: safe to call at any time. */
  progress(done: number, total?: number | null, message?: string | null): void;
  /** Stores a checkpoint (any JSON); resolves once the server has stored it. While the server is
   * away it keeps trying; it rejects with LeaseLostError when the lease is gone before the server
   * confirmed it (the next run resumes from whichever checkpoint the server holds). */
  saveCheckpoint(value: unknown): Promise<void>;
  /**
   * Submits children of this job (each spec's `parent` is set to it) through
   * `POST /v1/jobs/batch`, 10,000 per request, and answers them in order. The job's `children`
   * counts them as they end; return `awaitChildren(result)` to run again (the fan-in) once every
   * child has ended. Each request is all or nothing; a failed one rejects the call (the requests
   * before it were stored: a handler that may run again should checkpoint what it submitted).
   * It is not sent again on failure (a submit without a key is not safe to repeat). Rejects at
   * once after the handler returned or the lease was lost; the run's end waits for the calls
   * still out, so a fan-in never starts before every child the handler submitted is stored.
   */
  submitChildren<C = unknown>(jobs: ChildSpec<C>[]): Promise<Job<C>[]>;
}

export type Handler<P = unknown, R = unknown> = (ctx: JobContext<P>) => Promise<R> | R;

/** One job of a batch: the same context a single worker's handler gets. */
export type BatchItem<P = unknown> = JobContext<P>;

/**
 * What a batch handler answers for one job: a value (the job's result), `partial(value)` (a
 * success that left some items undone), or an Error (the job fails, classified exactly like a
 * single worker's throw: Throttled, Transient, Permanent, Snooze, `classify`, else retryable).
 */
export type BatchOutcome<R = unknown> = R | PartialResult<R> | Error;

/** Gets the jobs of one claim and answers one outcome per job, in the same order. */
export type BatchHandler<P = unknown, R = unknown> = (batch: BatchItem<P>[]) => Promise<BatchOutcome<R>[]> | BatchOutcome<R>[];

export interface WorkerOptions {
  /** Jobs run at once (default 1). For a batch worker: batches run at once. */
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
  /**
   * Your own rules for errors a handler throws (other than Throttled, Transient, Permanent and
   * Snooze, which say it themselves): return `'transient'`, `'retryable'`, `'permanent'` or
   * `'throttled'`, or undefined for the default rules (see `isTransientError`; else retryable).
   */
  classify?: Classifier;
  /** A handler still running this long after its signal fired is reported with a `stuck`
   * event (or a console warning) (default 10 s; 0 turns it off). */
  stuckAfterMs?: number;
  /**
   * Jobs claimed ahead of free slots at most (default: `concurrency`; 0 turns prefetch off). The
   * buffer is sized to about 250 ms of work at the recent handler durations, within this cap,
   * and is never used on a queue with a concurrency, group, rate, adaptive or pool limit.
   * Not for batch workers.
   */
  maxPrefetch?: number;
  /** The ends of runs ride on the worker's next claim when one is about to go (default true);
   * false sends them through POST /v1/jobs/finish only. */
  finishOnClaim?: boolean;
}

export interface BatchWorkerOptions extends Omit<WorkerOptions, 'maxPrefetch'> {
  /** Jobs per batch at most (1 to 1,000): one claim takes up to this many. */
  max: number;
  /** Once one job is ready, how long a claim may wait for `max` to be ready (0 to 60,000 ms;
   * the server's `linger_ms`). */
  lingerMs: number;
}

/** Jobs claimed ahead of free slots are sized to about this long of work. */
const PREFETCH_WINDOW_MS = 250;
/** Weight of the newest handler duration in the average that sizes the prefetch. */
const EWMA_WEIGHT = 0.3;
/** A claim takes at most this many jobs (the API's bound on `max`). */
const MAX_CLAIM = 1_000;
/** How often the worker reads its queue's limits (to know whether it may prefetch). */
const LIMITS_EVERY_MS = 60_000;

/** What the next claim asks for. */
interface Plan {
  max: number;
  wait: number;
  linger: number;
  carry: boolean;
}

/**
 * Events (all optional):
 * - `completed` (job, result, state): the server stored the success.
 * - `failed` (job, error, kind, state): the server stored the failure; `state` is where the job
 *   went (`scheduled`/`queued` to run again, `failed`, `cancelled`).
 * - `released` (job): the job was handed back unrun (close past its grace, a prefetched job
 *   never started).
 * - `refused` (job, error): the server refused the end of the run (lease lost: another run owns
 *   the job now, or it timed out); nothing was changed.
 * - `error` (error): a claim or request failed; the worker keeps trying (an outage is reported
 *   once, when it begins), except after a 401 or 403: then the worker stops (see `done`).
 * - `offline` (error): the server stopped answering; requests now wait their turn and back off.
 * - `online` (ms): the server answered again after `ms` offline.
 * - `stuck` (job, reason, ms): a handler still runs `ms` after its signal fired (`reason`); it
 *   holds its slot until it returns.
 * - `closed` (error | undefined): the worker has stopped (as `done` resolves).
 * Without listeners, `refused`, `error` and `stuck` are written to stderr, and so are the start
 * and end of an outage when neither `error` nor `offline`/`online` has one.
 */
export class Worker<P = unknown, R = unknown> extends EventEmitter {
  readonly queue: string;
  /**
   * Resolves once the worker has stopped and the server has acknowledged every run's end (or
   * refused it): with the DroveError that stopped it (a 401 or 403: the token is wrong), or
   * undefined after close(). Never rejects.
   */
  readonly done: Promise<DroveError | undefined>;
  private readonly link: Link;
  private readonly http: Transport;
  private readonly handler: Handler<P, R>;
  /** A batch worker's claims: up to `max` jobs, lingering `lingerMs` for them. */
  private readonly batch: { max: number; lingerMs: number } | undefined;
  private readonly concurrency: number;
  private readonly leaseMs: number | undefined;
  private readonly name: string;
  private readonly pollMs: number;
  private readonly graceMs: number;
  private readonly progressIntervalMs: number;
  private readonly stuckAfterMs: number;
  private readonly classify: Classifier | undefined;
  private readonly maxPrefetch: number;
  private readonly finisher: Finisher;
  /** Runs whose handler has not settled yet (these hold slots). A set, not a map by job id: a
   * zombie run (lease lost, handler still going) and the job's next run may both be here. */
  private readonly handling = new Set<Run>();
  /** Runs whose end the server has not acknowledged yet (these heartbeat). */
  private readonly live = new Set<Run>();
  /** Runs claimed ahead of free slots, oldest first: heartbeating, not started. */
  private readonly buffer: Run[] = [];
  /** Batches whose handler runs (a batch worker's slots). */
  private batches = 0;
  /** Recent handler durations (ms, an EWMA); undefined before the first handler ended. */
  private durationMs: number | undefined;
  /** Whether the queue has limits a held job counts against; undefined until known. */
  private limited: boolean | undefined;
  private limitsTimer: NodeJS.Timeout | undefined;
  /** Ends may ride on claims (false once the server refused `finish`). */
  private claimFinish: boolean;
  /** The claim on its way: aborted by close() unless it carries ends. */
  private claim: { abort: AbortController; carries: boolean } | undefined;
  /** New ends wait for the claim loop (it is about to claim, or a claim that answers at once
   * is out); see finisher.ts. */
  private holding = false;
  /** The last claim that answered at once found fewer jobs than asked: no refill until a
   * handler ends. */
  private dry = false;
  private closing = false;
  /** Aborted when close() begins (ends a claim loop's backoff). */
  private readonly closeAbort = new AbortController();
  private stopping: Promise<void> | undefined;
  /** close() has resolved. */
  private stopped = false;
  /** The refusal (401/403) that stopped the worker. */
  private fatalError: DroveError | undefined;
  private resolveDone!: (err: DroveError | undefined) => void;
  /** The claim loop, waiting for something to change. */
  private wake: (() => void) | undefined;
  private readonly loopDone: Promise<void>;

  /** Use `Drove.worker()` (or `Drove.batchWorker()`). `batch` is internal: BatchWorker's claims. */
  constructor(http: Transport, queue: string, handler: Handler<P, R>, opts: WorkerOptions = {}, batch?: { max: number; lingerMs: number }) {
    super();
    if (typeof handler !== 'function') throw new TypeError('worker(queue, handler) needs a handler function');
    if (opts.classify !== undefined && typeof opts.classify !== 'function') throw new TypeError('worker option classify must be a function');
    this.queue = queue;
    this.http = http;
    this.handler = handler;
    this.batch = batch;
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    this.leaseMs = opts.leaseMs;
    this.name = opts.name ?? `${hostname()}:${process.pid}`;
    this.pollMs = Math.min(60_000, Math.max(0, opts.pollMs ?? 20_000));
    this.graceMs = Math.max(0, opts.graceMs ?? 30_000);
    this.progressIntervalMs = Math.max(0, opts.progressIntervalMs ?? 1_000);
    this.stuckAfterMs = Math.max(0, opts.stuckAfterMs ?? 10_000);
    this.classify = opts.classify;
    const cap = Math.floor(Number(opts.maxPrefetch ?? this.concurrency));
    this.maxPrefetch = batch ? 0 : Math.max(0, Math.min(Number.isFinite(cap) ? cap : 0, MAX_CLAIM - Math.min(this.concurrency, MAX_CLAIM)));
    this.claimFinish = opts.finishOnClaim ?? true;
    this.done = new Promise((res) => (this.resolveDone = res));
    this.link = new Link(http, {
      offline: (err) => {
        // A request still out when close() resolved may fail later: that is no news.
        if (this.stopped) return;
        const heard = this.listenerCount('error') + this.listenerCount('offline') > 0;
        if (this.listenerCount('error') > 0) this.emit('error', err);
        if (this.listenerCount('offline') > 0) this.emit('offline', err);
        if (!heard) console.warn(`[drove-client] worker ${this.queue}: the server is unreachable, retrying with backoff: ${err.message}`);
      },
      online: (ms) => {
        if (this.stopped) return;
        const heard = this.listenerCount('error') + this.listenerCount('online') > 0;
        if (this.listenerCount('online') > 0) this.emit('online', ms);
        if (!heard) console.warn(`[drove-client] worker ${this.queue}: the server answers again after ${ms} ms`);
      },
      fatal: (err) => this.fatal(err),
    });
    this.finisher = new Finisher(this.link, 2, opts.batchFinish ?? true);
    this.finisher.hold = () => this.holding;
    this.loopDone = this.claimLoop();
  }

  /** Handlers running now (for a batch worker: jobs in the batches running now). */
  get running(): number {
    return this.handling.size;
  }

  /** Jobs claimed ahead of free slots, waiting for one (they heartbeat meanwhile). */
  get buffered(): number {
    return this.buffer.length;
  }

  /** How many jobs the worker claims ahead of its free slots now: about 250 ms of work at the
   * recent handler durations, at most `maxPrefetch`; 0 before a handler has ended, before the
   * queue's settings are known, and on a queue with limits (see `maxPrefetch`). */
  get prefetch(): number {
    return this.prefetchTarget();
  }

  /** The server is unreachable as far as this worker knows (between `offline` and `online`). */
  get offline(): boolean {
    return this.link.offline;
  }

  /**
   * Stops the worker: stops claiming at once (aborting the pending long poll), hands the jobs
   * claimed ahead and never started back at once, lets running handlers finish for up to
   * `graceMs`, then aborts the rest (signal reason WorkerClosedError) and releases their jobs,
   * which are queued again at once with no attempt used. Resolves once the server has
   * acknowledged every run's end. Calling it again returns the same promise.
   */
  close(opts: { graceMs?: number } = {}): Promise<void> {
    this.stopping ??= this.shutdown(opts.graceMs ?? this.graceMs);
    return this.stopping;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    this.closeAbort.abort(new WorkerClosedError());
    clearInterval(this.limitsTimer);
    // A claim that carries ends is not aborted: its answer says how they ended, and it answers
    // at once (a batch worker's within its linger).
    if (this.claim && !this.claim.carries) this.claim.abort.abort(new WorkerClosedError());
    this.poke();
    await this.loopDone;
    for (const run of this.buffer.splice(0)) this.release(run);
    if (this.handling.size > 0 && graceMs > 0) {
      const settled = Promise.all([...this.handling].map((r) => r.settled));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([settled, new Promise<void>((res) => (timer = setTimeout(res, graceMs)))]);
      clearTimeout(timer);
    }
    for (const run of [...this.handling]) this.release(run);
    await Promise.all([...this.live].map((r) => r.ended));
    await this.finisher.drained();
    this.stopped = true;
    this.emit('closed', this.fatalError);
    this.resolveDone(this.fatalError);
  }

  /** The server refused the worker's token (401/403): trying again cannot help, so the worker
   * says why and stops at once; its jobs' leases run out on the server. */
  private fatal(err: DroveError): void {
    if (this.fatalError || this.stopping) return;
    this.fatalError = err;
    this.report(err);
    void this.close({ graceMs: 0 });
  }

  // ---- claiming

  /**
   * One claim at a time: for the free slots (a long poll when there is nothing buffered and no
   * end to carry), to refill the prefetch buffer, or to carry the ends of runs (see the top of
   * this file). (Two claimers sharing the slots were measured too: twice the requests for short
   * jobs, and slower on a 2-core machine, where this client is CPU-bound.)
   */
  private async claimLoop(): Promise<void> {
    const path = `/v1/queues/${encodeURIComponent(this.queue)}/claim`;
    let failures = 0;
    this.holding = this.canCarry();
    while (!this.closing) {
      // Let a burst of handler ends land first (quick handlers end in the same turn), so that
      // one claim carries them all and asks for all the slots they freed.
      await new Promise<void>((res) => setImmediate(res));
      if (this.closing) break;
      this.fill();
      const plan = this.plan(failures === 0);
      if (!plan) {
        this.stopHolding();
        await new Promise<void>((res) => (this.wake = res));
        continue;
      }
      const carried = plan.carry ? this.finisher.take() : undefined;
      // A claim that answers at once: ends arriving meanwhile wait for the next one.
      if (plan.wait === 0 && this.canCarry()) this.holding = true;
      else this.stopHolding();
      let text = `{"worker":${JSON.stringify(this.name)},"max":${plan.max},"wait_ms":${plan.wait}`;
      if (this.leaseMs !== undefined) text += `,"lease_ms":${JSON.stringify(this.leaseMs)}`;
      if (plan.linger > 0) text += `,"linger_ms":${plan.linger}`;
      if (carried) text += `,"finish":[${carried.json}]`;
      text += '}';
      const claim = (this.claim = { abort: new AbortController(), carries: carried !== undefined });
      let answer: { jobs: ClaimedJob<P>[]; finished?: FinishRow[] };
      try {
        answer = (await this.link.request<typeof answer>('POST', path, new RawBody(text), { signal: claim.abort.signal })).body;
      } catch (err) {
        this.claim = undefined;
        if (carried) {
          this.finisher.giveBack(carried);
          if (this.refusesFinish(err)) continue; // claim again at once, without ends
        }
        this.stopHolding();
        if (this.closing) break; // close(), or a 401/403 that stops the worker
        // A server that is away: the Link reported it and paces the retries. A refused claim
        // (a bad lease_ms, a bad queue name) will not get better by itself, but an operator
        // may fix the queue: report it and keep trying, slowly.
        const transient = err instanceof DroveError && err.transient;
        if (!transient) this.report(err);
        const pause = transient ? backoffMs(failures) : Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
        failures += 1;
        await delay(pause, this.closeAbort.signal).catch(() => undefined);
        this.holding = this.canCarry();
        continue;
      }
      this.claim = undefined;
      failures = 0;
      if (carried) {
        const rows = answer.finished;
        if (Array.isArray(rows) && rows.length === carried.entries.length) this.finisher.settle(carried, rows);
        else {
          // A server that ignores `finish`: it ended nothing; the finisher sends them.
          this.noClaimFinish();
          this.finisher.giveBack(carried);
        }
      }
      const jobs = Array.isArray(answer.jobs) ? answer.jobs : [];
      this.dry = plan.wait === 0 && jobs.length < plan.max;
      this.admit(jobs, Date.now());
      // Until the loop has decided, new ends wait for it.
      this.holding = this.canCarry();
    }
    this.stopHolding();
  }

  /** What the next claim asks for, or undefined when there is nothing to claim for. */
  private plan(mayCarry: boolean): Plan | undefined {
    if (this.finisher.pending >= 1_000) return undefined; // ends pile up: let them go first
    const carry = mayCarry && this.canCarry() && this.finisher.queued > 0;
    if (this.batch) {
      if (this.batches >= this.concurrency) return undefined;
      const { max, lingerMs } = this.batch;
      // Carrying ends, it waits no longer than its linger: their answers must not wait for work.
      return { max, wait: carry ? Math.min(lingerMs, this.pollMs) : this.pollMs, linger: lingerMs, carry };
    }
    const running = this.handling.size;
    const free = this.concurrency - running; // fill() ran: free > 0 means nothing is buffered
    const target = this.prefetchTarget();
    const room = Math.min(MAX_CLAIM, this.concurrency + target - running - this.buffer.length);
    if (room <= 0) return undefined;
    // Idle slots: long-poll for them; or, carrying ends, ask at once for them and a buffer.
    if (free > 0) return carry ? { max: room, wait: 0, linger: 0, carry } : { max: free, wait: this.pollMs, linger: 0, carry };
    // Busy: refill the buffer while claims find work, or carry the ends that wait anyway.
    if (target > 0 && !this.dry && this.buffer.length < Math.floor(target / 2) + 1) return { max: room, wait: 0, linger: 0, carry };
    if (carry) return { max: room, wait: 0, linger: 0, carry };
    return undefined;
  }

  /** Jobs to claim ahead of free slots: about PREFETCH_WINDOW_MS of work, at most maxPrefetch;
   * none on a queue whose limits a held job counts against, or before that is known. */
  private prefetchTarget(): number {
    if (this.maxPrefetch <= 0 || this.limited !== false || this.durationMs === undefined) return 0;
    const perMs = this.concurrency / Math.max(this.durationMs, 0.01);
    return Math.min(this.maxPrefetch, Math.floor(PREFETCH_WINDOW_MS * perMs));
  }

  private canCarry(): boolean {
    return this.claimFinish && !this.closing && !this.link.offline;
  }

  /** Ends stop waiting for a claim: those waiting go through the finisher. */
  private stopHolding(): void {
    if (!this.holding) return;
    this.holding = false;
    this.finisher.kick();
  }

  /** The server refused the claim because of its `finish` (it predates it): stop carrying. */
  private refusesFinish(err: unknown): boolean {
    if (!(err instanceof DroveError) || (err.status !== 400 && err.status !== 422)) return false;
    if (err.field !== 'finish' && !/\bfinish\b/.test(err.message)) return false;
    this.noClaimFinish();
    return true;
  }

  private noClaimFinish(): void {
    if (!this.claimFinish) return;
    this.claimFinish = false;
    this.stopHolding();
    console.warn(`[drove-client] worker ${this.queue}: the server does not take the ends of runs on claims (finish); they go through POST /v1/jobs/finish instead`);
  }

  /** Wakes the claim loop to look again (a handler ended, an end is waiting, closing). */
  poke(): void {
    const wake = this.wake;
    if (!wake) return;
    this.wake = undefined;
    // The loop is about to decide: ends arriving meanwhile wait for it.
    this.holding = this.canCarry();
    wake();
  }

  /** Reads the queue's settings: may this worker prefetch? */
  private async readLimits(): Promise<void> {
    if (this.closing || this.link.offline) return;
    try {
      const info = (await this.link.request<QueueInfo>('GET', `/v1/queues/${encodeURIComponent(this.queue)}`)).body;
      this.limited = hasLimits(info);
    } catch (err) {
      // A queue never used has no settings; otherwise what was known still holds.
      if (err instanceof DroveError && err.status === 404) this.limited = false;
    }
    this.poke();
  }

  // ---- running

  /** Takes in the jobs a claim answered: each starts heartbeating at once, and runs in a free
   * slot or waits in the buffer (a batch worker runs them as one batch). */
  private admit(jobs: ClaimedJob<P>[], answeredAt: number): void {
    if (jobs.length === 0) return;
    const runs = jobs.map((job) => new Run(this, job, answeredAt));
    for (const run of runs) this.live.add(run);
    if (this.closing) {
      // Claimed as close() began: hand them back unrun.
      for (const run of runs) this.release(run);
      return;
    }
    for (const run of runs) run.begin();
    if (this.batch) {
      this.executeBatch(runs).catch((err: unknown) => {
        this.report(err);
        for (const run of runs) {
          this.handling.delete(run);
          this.retire(run);
        }
      });
      return;
    }
    for (const run of runs) {
      if (this.handling.size < this.concurrency) this.start(run);
      else this.buffer.push(run);
    }
  }

  /** Starts buffered runs in free slots; hands back at once those that can no longer start. */
  private fill(): void {
    if (this.buffer.some((r) => r.aborted)) {
      for (const run of this.buffer.filter((r) => r.aborted)) {
        this.buffer.splice(this.buffer.indexOf(run), 1);
        this.release(run);
      }
    }
    if (this.closing) return; // close() hands the buffer back
    while (this.buffer.length > 0 && this.handling.size < this.concurrency) this.start(this.buffer.shift()!);
  }

  private start(run: Run): void {
    this.handling.add(run);
    run.started = true;
    this.execute(run).catch((err: unknown) => {
      // Not expected (every step above handles its errors); never let it take the process down.
      this.report(err);
      this.handling.delete(run);
      this.retire(run);
    });
  }

  private async execute(run: Run): Promise<void> {
    const startedAt = performance.now();
    const trace = startRun(this.queue, run.job);
    let outcome: Outcome;
    try {
      const ctx = run.context as JobContext<P>;
      outcome = this.outcome(await (trace ? trace.within(() => this.handler(ctx)) : this.handler(ctx)), false);
    } catch (err) {
      outcome = { ending: this.failure(err), result: undefined, thrown: err };
    }
    trace?.end(outcomeLabel(outcome.ending), outcome.thrown);
    this.observe(performance.now() - startedAt);
    run.handlerSettled();
    this.handling.delete(run);
    this.dry = false;
    this.fill(); // the freed slot takes a buffered job at once
    this.poke();
    await run.childrenStored();
    if (run.released) return; // close() handed it back already
    await this.conclude(run, outcome);
  }

  /** A batch: one handler call for the runs of one claim, one end per run. */
  private async executeBatch(runs: Run[]): Promise<void> {
    this.batches += 1;
    for (const run of runs) {
      this.handling.add(run);
      run.started = true;
    }
    let outcomes: Outcome[];
    try {
      const answer: unknown = await (this.handler as unknown as BatchHandler<P, R>)(runs.map((r) => r.context as JobContext<P>));
      if (!Array.isArray(answer)) throw new TypeError(`the batch handler must answer an array of outcomes, one per job (it answered ${typeof answer})`);
      outcomes = runs.map((_, i) =>
        i < answer.length
          ? this.outcome(answer[i], true)
          : this.thrown(new TypeError(`the batch handler answered ${answer.length} outcomes for ${runs.length} jobs: none for this one`)),
      );
    } catch (err) {
      // The handler threw: every job of the batch fails with that error.
      outcomes = runs.map(() => this.thrown(err));
    }
    for (const run of runs) {
      run.handlerSettled();
      this.handling.delete(run);
    }
    this.batches -= 1;
    this.poke();
    await Promise.all(runs.map(async (run, i) => {
      await run.childrenStored();
      if (!run.released) await this.conclude(run, outcomes[i]!);
    }));
  }

  /** What a handler's answer (a single worker's return, one entry of a batch's) ends a run with.
   * In a batch an Error is a failure; a single worker's handler throws instead (what it returns
   * is its result, whatever it is). */
  private outcome(value: unknown, errorsFail: boolean): Outcome {
    if (errorsFail && (value instanceof Error || types.isNativeError(value))) return this.thrown(value);
    if (value instanceof PartialResult) return { ending: { kind: 'complete', result: jsonable(value.value), partial: true }, result: value.value, thrown: undefined };
    if (value instanceof AwaitChildren) {
      return { ending: { kind: 'complete', result: jsonable(value.value), await_children: true }, result: value.value, thrown: undefined };
    }
    return { ending: { kind: 'complete', result: jsonable(value) }, result: value, thrown: undefined };
  }

  private thrown(err: unknown): Outcome {
    return { ending: this.failure(err), result: undefined, thrown: err };
  }

  /** Sends a run's end and tells what the server answered. */
  private async conclude(run: Run, outcome: Outcome): Promise<void> {
    let { ending, thrown } = outcome;
    const settled = await this.finisher.end(run.job.id, run.lease, ending, () => !run.lost);
    let answer = settled;
    if (!settled.ok && ending.kind === 'complete' && (settled.error.code === 'payload_too_large' || settled.error.code === 'invalid_value')) {
      // The result cannot be stored; a retry would compute the same one.
      thrown = new Error(`the handler's result was refused: ${settled.error.message}`);
      ending = { kind: 'fail', error: { message: (thrown as Error).message, kind: 'permanent' } };
      answer = await this.finisher.end(run.job.id, run.lease, ending, () => !run.lost);
    }
    this.retire(run);
    this.announce(run, ending, answer, outcome.result, thrown);
  }

  /** A handler took `ms`: the average that sizes the prefetch. */
  private observe(ms: number): void {
    if (this.durationMs === undefined && this.maxPrefetch > 0 && !this.closing) {
      // The first handler ended: from now on the prefetch has a size, once the queue's limits
      // are known. (Read only now: a worker that never runs a job never asks.)
      void this.readLimits();
      this.limitsTimer = setInterval(() => void this.readLimits(), LIMITS_EVERY_MS);
      this.limitsTimer.unref?.();
    }
    this.durationMs = this.durationMs === undefined ? ms : this.durationMs + EWMA_WEIGHT * (ms - this.durationMs);
  }

  /** What a handler's throw tells the server (see classify.ts); a `classify` option that throws
   * is reported and the default rules apply. */
  private failure(err: unknown): Ending {
    let kind;
    try {
      kind = classifyError(err, this.classify);
    } catch (oops) {
      this.report(oops);
      kind = classifyError(err);
    }
    return failure(err, kind);
  }

  /** The run's end is acknowledged (or refused): its heartbeats stop. */
  private retire(run: Run): void {
    run.finished();
    this.live.delete(run);
    this.poke();
  }

  /** Hands a run's job back to the queue (close() past its grace, a buffered job that cannot
   * start, or one claimed as close() began). */
  private release(run: Run): void {
    if (run.released) return;
    run.released = true;
    this.handling.delete(run);
    run.abort(new WorkerClosedError(this.fatalError ? { cause: this.fatalError } : undefined));
    void this.finisher.end(run.job.id, run.lease, { kind: 'release' }, () => !run.lost).then((answer) => {
      this.retire(run);
      this.announce(run, { kind: 'release' }, answer, undefined, undefined);
    });
  }

  private announce(run: Run, ending: Ending, answer: Settled, result: unknown, thrown: unknown): void {
    if (!answer.ok) {
      if (this.listenerCount('refused') > 0) this.emit('refused', run.job, answer.error);
      else if (!run.expectedRefusal && !this.fatalError) {
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

  /** @internal A handler ignores its aborted signal. */
  stuck(run: Run, reason: Error, ms: number): void {
    if (this.listenerCount('stuck') > 0) this.emit('stuck', run.job, reason, ms);
    else {
      console.warn(
        `[drove-client] worker ${this.queue}: job ${run.job.id}'s handler still runs ${ms} ms after its signal fired ` +
          `(${reason.message}); it holds a slot until it returns`,
      );
    }
  }

  /** @internal Submits children of `parent` (ctx.submitChildren) through this worker's line to
   * the server. */
  submitChildren(parent: string, jobs: ChildSpec[]): Promise<Job[]> {
    if (!Array.isArray(jobs)) return Promise.reject(new TypeError('submitChildren(jobs) needs an array of job specs'));
    let bodies;
    try {
      bodies = jobs.map((j) => submitBody(j?.queue, j.payload, { ...j, parent }));
    } catch (err) {
      return Promise.reject(err);
    }
    if (bodies.length === 0) return Promise.resolve([]);
    return submitBatches(this.link, this.http, bodies);
  }

  /** @internal Settings the runs read. */
  get settings(): { link: Link; leaseMs: number | undefined; progressIntervalMs: number; stuckAfterMs: number } {
    return { link: this.link, leaseMs: this.leaseMs, progressIntervalMs: this.progressIntervalMs, stuckAfterMs: this.stuckAfterMs };
  }
}

/**
 * A worker that hands its handler the jobs of one claim at once (`Drove.batchWorker`): each
 * claim takes up to `max` jobs, lingering up to `lingerMs` for them once one is ready; the
 * handler answers one outcome per job, and each job's end is reported on its own (one job
 * throttled is that job alone). Every job heartbeats while its batch runs. Same events,
 * `close()` and `done` as a Worker.
 */
export class BatchWorker<P = unknown, R = unknown> extends Worker<P, R> {
  /** Jobs per batch at most, and how long a claim lingers for them. */
  readonly max: number;
  readonly lingerMs: number;

  constructor(http: Transport, queue: string, handler: BatchHandler<P, R>, opts: BatchWorkerOptions) {
    const max = Math.floor(Number(opts?.max));
    const lingerMs = Math.floor(Number(opts?.lingerMs ?? 0));
    if (!(max >= 1 && max <= MAX_CLAIM)) throw new RangeError(`batchWorker option max must be 1 to ${MAX_CLAIM} (got ${opts?.max})`);
    if (!(lingerMs >= 0 && lingerMs <= 60_000)) throw new RangeError(`batchWorker option lingerMs must be 0 to 60000 (got ${opts?.lingerMs})`);
    super(http, queue, handler as unknown as Handler<P, R>, opts, { max, lingerMs });
    this.max = max;
    this.lingerMs = lingerMs;
  }
}

/** How a run ends, with what the worker's events report. */
/** How a run ended, in a word (its span's `drove.outcome`). */
function outcomeLabel(e: Ending): string {
  if (e.kind === 'complete') return 'succeeded';
  if (e.kind === 'fail') return e.error.kind;
  return 'released';
}

interface Outcome {
  ending: Ending;
  result: unknown;
  thrown: unknown;
}

/** Whether a held job counts against a limit of the queue (then the worker does not prefetch). */
function hasLimits(info: QueueInfo): boolean {
  const config = (info?.config ?? {}) as Record<string, unknown>;
  const limits = ['concurrency', 'group_concurrency', 'rate', 'group_rate', 'adaptive', 'pool'];
  return limits.some((k) => config[k] !== null && config[k] !== undefined) || (info?.limit_now ?? null) !== null || (info?.rate_now ?? null) !== null;
}

/** Wrap a handler's result in this to record a success that left some items undone. */
export class PartialResult<T = unknown> {
  constructor(readonly value: T) {}
}

/** `return partial(result)` from a handler: a success that left some items undone. */
export function partial<T>(value: T): PartialResult<T> {
  return new PartialResult(value);
}

/** What `awaitChildren(result)` returns: the run ends, the job waits for its children. */
export class AwaitChildren<T = unknown> {
  constructor(readonly value: T) {}
}

/**
 * `return awaitChildren(result)` from a handler (or as a batch handler's outcome): the run ends
 * without ending the job. The job waits (`state: 'waiting'`, `waiting_for: 'children'`) and runs
 * again, with no attempt used, once every child it has has ended: that run is its fan-in
 * (`ctx.job.fan_in` true, `ctx.job.children` the counts, `ctx.job.result` this `result`). A job
 * with no child left to wait for runs its fan-in at once. Not with `partial`.
 */
export function awaitChildren<T = undefined>(result?: T): AwaitChildren<T | undefined> {
  return new AwaitChildren(result);
}

/** The smallest lease the API grants, and the longest progress message it takes. */
const MIN_LEASE_MS = 1_000;
const MAX_MESSAGE_BYTES = 1_024;
const MAX_ERROR_BYTES = 16 * 1024;

type Waiters = Array<{ resolve: () => void; reject: (e: unknown) => void }>;

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
  /** The handler was called (a prefetched run waits in the buffer until a slot is free). */
  started = false;
  private readonly worker: Worker<any, any>;
  private readonly link: Link;
  private readonly askLeaseMs: number | undefined;
  private readonly progressIntervalMs: number;
  private readonly stuckAfterMs: number;
  /** Made when the handler first reads `signal` (most never do); `reason` is kept apart. */
  private controller: AbortController | undefined;
  private reason: Error | undefined;
  /** Why the lease is gone, for saveCheckpoint() calls after it. */
  private lostError: LeaseLostError | undefined;
  /** Made when a heartbeat first waits for its turn on the link (an outage); aborted when the
   * run loses its lease or ends, so that the wait ends with it. */
  private halt: AbortController | undefined;
  private readonly leaseMs: number;
  private readonly every: number;
  private handlerDone = false;
  private over = false;
  private inflight = false;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private stuckTimer: NodeJS.Timeout | undefined;
  private nextBeatAt: number;
  private lastSentAt = 0;
  /** Heartbeats that failed in a row, and when the next try may go (the run's own backoff). */
  private failures = 0;
  private retryAt = 0;
  private progressOut: { done: number; total: number | null; message: string | null } | undefined;
  /** The latest checkpoint not sent yet, with everyone waiting for it or an older one. */
  private checkpointOut: { value: unknown; waiters: Waiters } | undefined;
  /** Those waiting for the checkpoint the heartbeat in flight carries. */
  private checkpointSent: Waiters | undefined;
  /** ctx.submitChildren calls still out: the run's end waits for them. */
  private readonly submitting = new Set<Promise<unknown>>();
  private settle!: () => void;
  private end!: () => void;

  constructor(worker: Worker<any, any>, job: ClaimedJob, answeredAt: number) {
    this.worker = worker;
    const settings = worker.settings;
    this.link = settings.link;
    this.askLeaseMs = settings.leaseMs;
    this.progressIntervalMs = settings.progressIntervalMs;
    this.stuckAfterMs = settings.stuckAfterMs;
    this.job = job;
    this.lease = String(job.lease);
    // The lease's length, from the server's own two times (no clock skew), else what we asked.
    const granted = Date.parse(job.lease_expires_at) - Date.parse(job.started_at ?? '');
    this.leaseMs = Math.max(MIN_LEASE_MS, this.askLeaseMs ?? (Number.isFinite(granted) && granted > 0 ? granted : 10_000));
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
      submitChildren(jobs) {
        return run.submitChildren(jobs) as Promise<any>;
      },
    };
  }

  private submitChildren(jobs: ChildSpec[]): Promise<Job[]> {
    if (this.lost) return Promise.reject(this.lostError ?? new LeaseLostError(this.job.id));
    if (this.over || this.handlerDone) {
      return Promise.reject(new Error(`job ${this.job.id}: submitChildren after the handler returned`));
    }
    const p = this.worker.submitChildren(this.job.id, jobs);
    const tracked = p.then(
      () => undefined,
      () => undefined,
    );
    this.submitting.add(tracked);
    void tracked.then(() => this.submitting.delete(tracked));
    return p;
  }

  /** Resolves once every ctx.submitChildren call of this run has settled. */
  childrenStored(): Promise<void> {
    if (this.submitting.size === 0) return Promise.resolve();
    return Promise.all([...this.submitting]).then(() => undefined);
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

  /** The signal fired (a run not started yet will not be). */
  get aborted(): boolean {
    return this.reason !== undefined;
  }

  abort(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller?.abort(reason);
    if (!this.started) {
      // Still in the worker's buffer: it is handed back rather than started.
      this.worker.poke();
      return;
    }
    if (!this.handlerDone && this.stuckAfterMs > 0) {
      // A handler that ignores its signal keeps its slot: say so rather than leak it silently.
      const firedAt = Date.now();
      this.stuckTimer = setTimeout(() => this.worker.stuck(this, reason, Date.now() - firedAt), this.stuckAfterMs);
      this.stuckTimer.unref?.();
    }
  }

  handlerSettled(): void {
    this.handlerDone = true;
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.stuckTimer);
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
    this.halt?.abort(new Error('the run has ended'));
    this.failCheckpoints(new LeaseLostError(this.job.id, `job ${this.job.id}: the run has ended; the checkpoint was not stored`, null));
    this.end();
  }

  private progress(done: number, total?: number | null, message?: string | null): void {
    if (this.handlerDone || this.over || this.lost) return;
    this.progressOut = {
      done: Math.trunc(Number(done) || 0),
      total: total === undefined || total === null ? null : Math.trunc(Number(total) || 0),
      message: message === undefined || message === null ? null : truncate(String(message), MAX_MESSAGE_BYTES),
    };
    this.pump();
  }

  private saveCheckpoint(value: unknown): Promise<void> {
    if (this.lost) return Promise.reject(this.lostError ?? new LeaseLostError(this.job.id));
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
   * else sets a timer for when one will be. After a failed heartbeat nothing goes before the
   * run's backoff allows, not even a checkpoint. */
  private pump(): void {
    if (this.over || this.lost || this.inflight) return;
    clearTimeout(this.timer);
    const now = Date.now();
    let due = this.nextBeatAt;
    if (this.progressOut) due = Math.min(due, this.lastSentAt + this.progressIntervalMs);
    if (this.checkpointOut) due = now;
    if (due < this.retryAt) due = this.retryAt;
    if (due <= now) {
      void this.beat();
      return;
    }
    this.timer = setTimeout(() => this.pump(), due - now);
    this.timer.unref?.();
  }

  private async beat(): Promise<void> {
    this.inflight = true;
    if (this.link.offline) {
      // The server is away: wait for this worker's turn (shared by all its runs), then send what
      // is newest by then. The wait ends early when the lease is lost or the run ends.
      try {
        await this.link.turn(this.haltSignal());
      } catch {
        this.inflight = false;
        this.failCheckpointsIfGone();
        return;
      }
      if (this.over || this.lost) {
        this.inflight = false;
        this.failCheckpointsIfGone();
        return;
      }
    }
    const sentAt = Date.now();
    this.lastSentAt = sentAt;
    const body: Record<string, unknown> = { lease: this.lease };
    if (this.askLeaseMs !== undefined) body.lease_ms = this.askLeaseMs;
    const progress = this.progressOut;
    const checkpoint = this.checkpointOut;
    this.progressOut = undefined;
    this.checkpointOut = undefined;
    if (progress) body.progress = progress;
    if (checkpoint) {
      body.checkpoint = checkpoint.value;
      this.checkpointSent = checkpoint.waiters;
    }
    const path = `/v1/jobs/${encodeURIComponent(this.job.id)}/heartbeat`;
    let retryIn = this.every;
    try {
      const ack = (await this.link.send<{ lease_expires_at: string; cancel_requested: boolean }>('POST', path, body, { jobId: this.job.id })).body;
      this.failures = 0;
      this.retryAt = 0;
      if (!this.lost && !this.over) this.armDeadline(sentAt + this.leaseMs);
      this.settleSent((w) => w.resolve());
      if (ack.cancel_requested && !this.handlerDone) this.abort(new JobCancelledError(this.job.id));
    } catch (err) {
      if (err instanceof LeaseLostError || (err instanceof DroveError && err.status === 404)) {
        this.loseLease(err instanceof LeaseLostError ? err : new LeaseLostError(this.job.id, err.message, err.status));
      } else if (isAuthError(err)) {
        // The worker stops (the Link told it): nothing more to send.
        this.settleSent((w) => w.reject(err));
        retryIn = this.every;
      } else if (err instanceof DroveError && !err.transient) {
        // The server refused what this heartbeat carried (a checkpoint over the size limit):
        // that save fails; the lease still needs a plain heartbeat, at once if this one carried
        // something, else after a backoff (a plain one refused again must not spin).
        this.settleSent((w) => w.reject(err));
        this.worker.report(err);
        retryIn = checkpoint || progress ? 0 : backoffMs(this.failures++);
      } else {
        // No answer (the Link reported the outage): try again after a backoff, carrying what
        // this one carried unless newer came.
        // (Read through a helper: TypeScript forgets that the fields may have changed meanwhile.)
        const newer = this.pendingOut();
        const sent = this.checkpointSent;
        this.checkpointSent = undefined;
        if (checkpoint && sent) {
          if (newer.checkpoint) newer.checkpoint.waiters.unshift(...sent);
          else this.checkpointOut = { value: checkpoint.value, waiters: sent };
        }
        if (progress && !newer.progress) this.progressOut = progress;
        retryIn = backoffMs(this.failures++);
        this.retryAt = Date.now() + retryIn; // from the failure: a request may take long to fail
      }
    } finally {
      this.inflight = false;
      this.nextBeatAt = sentAt + retryIn;
    }
    // The lease may have been lost while this heartbeat was out: whatever it carried back
    // must not wait for a heartbeat that will never go.
    this.failCheckpointsIfGone();
    this.pump();
  }

  private pendingOut(): { checkpoint: Run['checkpointOut']; progress: Run['progressOut'] } {
    return { checkpoint: this.checkpointOut, progress: this.progressOut };
  }

  /** Settles the waiters of the checkpoint the heartbeat in flight carried (if the lease was
   * lost meanwhile they were rejected already). */
  private settleSent(settle: (w: Waiters[number]) => void): void {
    const sent = this.checkpointSent;
    this.checkpointSent = undefined;
    for (const w of sent ?? []) settle(w);
  }

  private haltSignal(): AbortSignal {
    if (!this.halt) {
      this.halt = new AbortController();
      if (this.lost || this.over) this.halt.abort(this.lostError ?? new Error('the run has ended'));
    }
    return this.halt.signal;
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
    this.lostError = err;
    this.progressOut = undefined;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    this.abort(err);
    this.halt?.abort(err);
    this.failCheckpoints(err);
  }

  private failCheckpointsIfGone(): void {
    if (this.lost) this.failCheckpoints(this.lostError ?? new LeaseLostError(this.job.id));
    else if (this.over) this.failCheckpoints(new LeaseLostError(this.job.id, `job ${this.job.id}: the run has ended; the checkpoint was not stored`, null));
  }

  /** Rejects every checkpoint not confirmed yet: those waiting to go and the one in flight. */
  private failCheckpoints(err: Error): void {
    const pending = this.checkpointOut;
    this.checkpointOut = undefined;
    const sent = this.checkpointSent;
    this.checkpointSent = undefined;
    for (const w of sent ?? []) w.reject(err);
    for (const w of pending?.waiters ?? []) w.reject(err);
  }
}

/** The wire's failure for a thrown error of class `kind` (see classify.ts). */
function failure(err: unknown, kind: ReturnType<typeof classifyError>): Ending {
  const e = err as { retryAfterMs?: unknown; ms?: unknown } | null;
  const message = truncate(describe(err), MAX_ERROR_BYTES);
  const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : undefined);
  const retry = kind === 'throttled' ? ms(e?.retryAfterMs) : kind === 'snooze' ? ms(e?.ms) : undefined;
  return { kind: 'fail', error: { message, kind }, ...(retry !== undefined ? { retry_after_ms: retry } : {}) };
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const plain = ['Error', 'Throttled', 'Transient', 'Permanent', 'Snooze'].includes(err.name);
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
