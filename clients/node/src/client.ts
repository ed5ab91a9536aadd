// The client: submitting and awaiting jobs, reading them, and queue settings. Workers live in
// worker.ts; both speak only the v1 contract of docs/API.md. once() shares one request among the
// concurrent callers of a key in this process, on top of the server's one job per key.

import { DroveError, JobFailedError, WaitTimeoutError } from './errors.js';
import { Transport, delay, snakeKeys, type TransportOptions } from './http.js';
import { Schedules } from './schedules.js';
import { submitBatches, submitBody } from './submit.js';
import type {
  ChildrenOptions,
  Job,
  JobPage,
  JobSpec,
  ListJobsOptions,
  OnceOptions,
  PoolInfo,
  PoolSettings,
  QueueInfo,
  QueueSettings,
  SubmitAndWaitOptions,
  SubmitOptions,
  WaitOptions,
} from './types.js';
import { BatchWorker, Worker, type BatchHandler, type BatchWorkerOptions, type Handler, type WorkerOptions } from './worker.js';

export interface DroveOptions extends TransportOptions {
  /**
   * The longest one long poll may be held (default and maximum 60 s, the server's limit).
   * Lower it behind a proxy or load balancer that cuts idle requests sooner; waits longer than
   * this are made of several polls.
   */
  longPollMs?: number;
}

/** The server holds one long poll for at most this long (docs/API.md: `?wait=` is at most 60 s). */
const LONG_POLL_MS = 60_000;
/** What `submitAndWait`, `once` and `get(id, { waitMs })` wait by default. */
const DEFAULT_WAIT_MS = 60_000;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export function isTerminal(job: Pick<Job, 'state'>): boolean {
  return TERMINAL.has(job.state);
}

/** A once() call in flight, shared by every caller of its queue and key in this process. */
interface SharedOnce {
  promise: Promise<unknown>;
  /** When the shared wait ends: the latest deadline of the callers that joined. */
  wait: { deadline: number };
  /** Aborts the shared call when every caller that joined has aborted (made when the first
   * caller has a signal). */
  controller: AbortController | undefined;
  /** A caller without a signal joined: the shared call runs to its end. */
  pinned: boolean;
  /** Callers with a signal, by signal: one abort listener per signal, not per caller (adding a
   * listener to an AbortSignal takes time in proportion to those it has, and an application
   * may well pass one shutdown signal to every call). */
  groups: Map<AbortSignal, OnceGroup> | undefined;
}

interface OnceGroup {
  callers: Array<{ resolve: (v: unknown) => void; reject: (e: unknown) => void }>;
  onAbort: () => void;
}

export class Drove {
  /** @internal The HTTP transport, shared with this client's workers. */
  readonly http: Transport;
  private readonly longPollMs: number;
  /** once() calls in flight, by queue and key. */
  private readonly onces = new Map<string, SharedOnce>();
  /** Recurring jobs: `set`, `patch`, `get`, `list`, `delete`, `pause`, `resume`, `runNow`. */
  readonly schedules: Schedules;

  constructor(opts: DroveOptions) {
    this.http = new Transport(opts);
    this.longPollMs = Math.min(LONG_POLL_MS, Math.max(1, Math.floor(opts.longPollMs ?? LONG_POLL_MS)));
    this.schedules = new Schedules(this.http);
  }

  /** The server this client talks to. */
  get url(): string {
    return this.http.base;
  }

  /**
   * Submits a job. Resolves once it is durably stored: a new job (`deduplicated: false`), or the
   * active job with the same key that this submit joined (`deduplicated: true`). With
   * `staleForMs`, a stale success of the key is answered at once: that job, with `stale: true`
   * and `refresh` (the id of the job refreshing it).
   */
  async submit<P = unknown>(queue: string, payload?: P, opts: SubmitOptions = {}): Promise<Job<P>> {
    return (await this.http.request<Job<P>>('POST', '/v1/jobs', submitBody(queue, payload, opts))).body;
  }

  /**
   * Submits many jobs through `POST /v1/jobs/batch`, answering them in order: up to 10,000 jobs
   * (and about 8 MiB) per request, 1,000 to a server that predates 10,000. Each request is all or
   * nothing; a longer list is sent as several requests, and a failed one rejects the call (those
   * before it were stored).
   */
  async submitMany(jobs: JobSpec[]): Promise<Job[]> {
    return submitBatches(this.http, this.http, jobs.map((j) => submitBody(j.queue, j.payload, j)));
  }

  /**
   * Submits a job and resolves with its result once it succeeded. A failed or cancelled job
   * rejects with JobFailedError (carrying the job and its error kind); a job still unfinished
   * after `waitMs` (default 60 s) rejects with WaitTimeoutError. Waits longer than one long
   * poll keep polling until `waitMs` is up.
   */
  async submitAndWait<R = unknown, P = unknown>(queue: string, payload?: P, opts: SubmitAndWaitOptions = {}): Promise<R> {
    const job = await this.submitWaiting(queue, payload, opts);
    if (job.state === 'succeeded') return job.result as R;
    throw new JobFailedError(job);
  }

  /**
   * One computation per key: every caller, in this process or any other, that asks for the same
   * `(queue, key)` while its job is active (or, with `reuseForMs`, succeeded that recently)
   * gets the result of that one job.
   *
   * In one process, concurrent calls for the same queue and key share one request (one submit
   * and wait): the first caller's payload and options are sent, as a join on the server would
   * keep the first submit's; every caller gets the same result object (or error). The shared
   * wait lasts until the latest caller's `waitMs` is up. A caller whose `signal` aborts leaves
   * alone; the request is aborted only once every caller has. A caller whose wait would end
   * before the shared one's makes its own request.
   *
   * With `staleForMs`, a success of the key older than `reuseForMs` (but within `staleForMs`
   * more) is stale: once() resolves with it at once, without waiting, and the server starts one
   * job refreshing the key, whose result later callers get.
   */
  once<R = unknown, P = unknown>(queue: string, key: string, payload?: P, opts: OnceOptions = {}): Promise<R> {
    const { reuseForMs, staleForMs, waitMs, signal, submit } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    // (Queue names cannot hold a NUL, so the pair cannot be confused with another.)
    const id = `${queue}\u0000${key}`;
    const deadline = Date.now() + Math.max(0, waitMs ?? DEFAULT_WAIT_MS);
    let shared = this.onces.get(id);
    if (shared && deadline < shared.wait.deadline) {
      return this.submitAndWait<R, P>(queue, payload, { ...submit, key, reuseForMs, staleForMs, waitMs, signal });
    }
    if (shared) {
      shared.wait.deadline = deadline;
    } else {
      const controller = signal ? new AbortController() : undefined;
      const wait = { deadline };
      const entry: SharedOnce = { promise: undefined as unknown as Promise<unknown>, wait, controller, pinned: false, groups: undefined };
      entry.promise = this.submitWaiting(queue, payload, { ...submit, key, reuseForMs, staleForMs, waitMs, signal: controller?.signal }, wait).then((job) => {
        if (job.state === 'succeeded') return job.result;
        throw new JobFailedError(job);
      });
      const forget = () => {
        if (this.onces.get(id) === entry) this.onces.delete(id);
      };
      entry.promise.then(forget, forget);
      this.onces.set(id, entry);
      shared = entry;
    }
    if (!signal) {
      shared.pinned = true;
      // A promise of the caller's own, so that a caller who drops it hears of its rejection.
      return shared.promise.then() as Promise<R>;
    }
    return this.joinOnce<R>(id, shared, signal);
  }

  /** A caller with a signal: it may leave before the shared call ends. */
  private joinOnce<R>(id: string, shared: SharedOnce, signal: AbortSignal): Promise<R> {
    if (!shared.groups) {
      const groups = (shared.groups = new Map());
      const settle = (outcome: { ok: boolean; value: unknown }) => {
        for (const [sig, group] of groups) {
          sig.removeEventListener('abort', group.onAbort);
          for (const c of group.callers) outcome.ok ? c.resolve(outcome.value) : c.reject(outcome.value);
        }
        groups.clear();
      };
      shared.promise.then(
        (value) => settle({ ok: true, value }),
        (value: unknown) => settle({ ok: false, value }),
      );
    }
    const groups = shared.groups;
    let group = groups.get(signal);
    if (!group) {
      const g: OnceGroup = {
        callers: [],
        onAbort: () => {
          groups.delete(signal);
          for (const c of g.callers) c.reject(signal.reason);
          if (!shared.pinned && groups.size === 0) {
            // Nobody waits any more: stop the request, and let later callers start afresh.
            if (this.onces.get(id) === shared) this.onces.delete(id);
            shared.controller?.abort(signal.reason);
          }
        },
      };
      signal.addEventListener('abort', g.onAbort, { once: true });
      groups.set(signal, g);
      group = g;
    }
    const callers = group.callers;
    return new Promise<R>((resolve, reject) => callers.push({ resolve: resolve as (v: unknown) => void, reject }));
  }

  /**
   * Reads a job. With `waitMs`, waits (long polls) until the job is terminal or the time is up,
   * then answers the job as it is.
   */
  async get<R = unknown>(id: string, opts: WaitOptions = {}): Promise<Job<unknown, R>> {
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    if (opts.waitMs === undefined) return (await this.http.request<Job<unknown, R>>('GET', path, undefined, opts)).body;
    const wait = { deadline: Date.now() + Math.max(0, opts.waitMs) };
    const first = await this.http.request<Job<unknown, R>>('GET', `${path}?wait=${this.pollMs(wait.deadline)}ms`, undefined, opts);
    return (await this.follow(first.body, wait, opts.signal)) as Job<unknown, R>;
  }

  /** Lists jobs, newest first; pass `next_cursor` back as `cursor` for the next page. */
  async list(opts: ListJobsOptions = {}, signal?: AbortSignal): Promise<JobPage> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) q.set(k, String(v));
    const qs = q.toString();
    return (await this.http.request<JobPage>('GET', `/v1/jobs${qs ? `?${qs}` : ''}`, undefined, { signal })).body;
  }

  /**
   * Every child of a job (`GET /v1/jobs?parent=ID`, page after page), newest first, as the server
   * sends them: `for await (const child of drove.children(id)) ...`. Pages are read as the loop
   * asks for them; a page request that fails rejects the loop there.
   */
  async *children<R = unknown>(parentId: string, opts: ChildrenOptions = {}): AsyncGenerator<Job<unknown, R>, void, undefined> {
    if (typeof parentId !== 'string' || parentId === '') throw new TypeError('children(parentId) needs a job id');
    let cursor: string | undefined;
    do {
      const page = await this.list({ parent: parentId, state: opts.state, limit: opts.pageSize ?? 1_000, cursor }, opts.signal);
      for (const job of page.jobs) yield job as Job<unknown, R>;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * Cancels a job: a scheduled or queued job at once; a running one is marked
   * `cancel_requested` and its worker's signal aborts on its next heartbeat.
   */
  async cancel(id: string): Promise<Job> {
    return (await this.http.request<Job>('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`)).body;
  }

  /** Queues a failed or cancelled job again, with attempt 0. */
  async retry(id: string): Promise<Job> {
    return (await this.http.request<Job>('POST', `/v1/jobs/${encodeURIComponent(id)}/retry`)).body;
  }

  /** Every queue with its settings, counts and limit in force. */
  async queues(): Promise<QueueInfo[]> {
    return (await this.http.request<{ queues: QueueInfo[] }>('GET', '/v1/queues')).body.queues;
  }

  /** One queue (a DroveError with status 404 for a name never used). */
  async queue(name: string): Promise<QueueInfo> {
    return (await this.http.request<QueueInfo>('GET', `/v1/queues/${encodeURIComponent(name)}`)).body;
  }

  /** Changes a queue's settings (camelCase; `null` clears one). Applies to every node at once. */
  async setQueue(name: string, settings: QueueSettings): Promise<QueueInfo> {
    return (await this.http.request<QueueInfo>('PUT', `/v1/queues/${encodeURIComponent(name)}`, snakeKeys(settings))).body;
  }

  async pool(name: string): Promise<PoolInfo> {
    return (await this.http.request<PoolInfo>('GET', `/v1/pools/${encodeURIComponent(name)}`)).body;
  }

  async setPool(name: string, settings: PoolSettings): Promise<PoolInfo> {
    return (await this.http.request<PoolInfo>('PUT', `/v1/pools/${encodeURIComponent(name)}`, snakeKeys(settings))).body;
  }

  /**
   * Starts a worker on `queue` and returns it at once. `handler` gets a JobContext per job and
   * returns the result, or throws Throttled, Transient, Permanent, Snooze or any other error
   * (transient when `isTransientError` or the `classify` option says so, else retryable).
   * Stop it with `await worker.close()`; `worker.done` resolves once it has stopped.
   */
  worker<P = unknown, R = unknown>(queue: string, handler: Handler<P, R>, opts: WorkerOptions = {}): Worker<P, R> {
    return new Worker<P, R>(this.http, queue, handler, opts);
  }

  /**
   * Starts a batch worker on `queue` and returns it at once: each claim takes up to `max` jobs
   * (once one is ready, waiting up to `lingerMs` for more), and `handler` gets them as one array
   * of JobContexts and answers one outcome per job, in order: a value (success), `partial(value)`,
   * or an Error (classified as a single worker's throw). A handler that throws fails every job of
   * the batch with that error. Each job's end is reported on its own. `concurrency` is the number
   * of batches run at once (default 1).
   */
  batchWorker<P = unknown, R = unknown>(queue: string, handler: BatchHandler<P, R>, opts: BatchWorkerOptions): BatchWorker<P, R> {
    return new BatchWorker<P, R>(this.http, queue, handler, opts);
  }

  // ---- waiting

  /** The `?wait=` of the next long poll: what is left until `deadline`, at most one poll. */
  private pollMs(deadline: number): number {
    return Math.min(this.longPollMs, Math.max(0, Math.ceil(deadline - Date.now())));
  }

  /** Submits and waits until the job ends or `wait.deadline` passes (which once() may move
   * later while this runs). */
  private async submitWaiting<P>(queue: string, payload: P | undefined, opts: SubmitAndWaitOptions, wait?: { deadline: number }): Promise<Job> {
    const waitMs = Math.max(0, opts.waitMs ?? DEFAULT_WAIT_MS);
    wait ??= { deadline: Date.now() + waitMs };
    const body = submitBody(queue, payload, opts);
    // A keyed submit that joins is safe to repeat: a repeat joins the same job (or reuses its
    // result), so a server restart or a dropped connection is retried within the wait.
    const repeatable = opts.key !== undefined && (opts.onConflict ?? 'join') === 'join';
    let pause = 50;
    for (;;) {
      try {
        const first = await this.http.request<Job>('POST', `/v1/jobs?wait=${this.pollMs(wait.deadline)}ms`, body, opts);
        return await this.follow(first.body, wait, opts.signal, waitMs);
      } catch (err) {
        if (!repeatable || !(err instanceof DroveError) || !err.transient || Date.now() + pause >= wait.deadline) throw err;
        await delay(pause, opts.signal);
        pause = Math.min(pause * 2, 2_000);
      }
    }
  }

  /**
   * Long-polls `GET /v1/jobs/ID?wait=` until the job is terminal or `wait.deadline` passes.
   * With `timeoutAfterMs`, an unfinished job at the deadline is a WaitTimeoutError; without,
   * the job is answered as it is. Transient failures (server restarting, 503) are retried.
   */
  private async follow(job: Job, wait: { deadline: number }, signal?: AbortSignal, timeoutAfterMs?: number): Promise<Job> {
    const path = `/v1/jobs/${encodeURIComponent(job.id)}`;
    let pause = 50;
    while (!isTerminal(job)) {
      if (Date.now() >= wait.deadline) {
        if (timeoutAfterMs !== undefined) throw new WaitTimeoutError(job, timeoutAfterMs);
        return job;
      }
      try {
        job = (await this.http.request<Job>('GET', `${path}?wait=${this.pollMs(wait.deadline)}ms`, undefined, { signal })).body;
        pause = 50;
      } catch (err) {
        if (!(err instanceof DroveError) || !err.transient) throw err;
        await delay(Math.min(pause, Math.max(0, wait.deadline - Date.now())), signal);
        pause = Math.min(pause * 2, 2_000);
      }
    }
    return job;
  }
}

