// The client: submitting and awaiting jobs, reading them, and queue settings. Workers live in
// worker.ts; both speak only the v1 contract of API.md.

import { DroveError, JobFailedError, WaitTimeoutError } from './errors.js';
import { Transport, delay, snakeKeys, type TransportOptions } from './http.js';
import type {
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
import { Worker, type Handler, type WorkerOptions } from './worker.js';

export interface DroveOptions extends TransportOptions {
  /**
   * The longest one long poll may be held (default and maximum 60 s, the server's limit).
   * Lower it behind a proxy or load balancer that cuts idle requests sooner; waits longer than
   * this are made of several polls.
   */
  longPollMs?: number;
}

/** The server holds one long poll for at most this long (API.md: `?wait=` is at most 60 s). */
const LONG_POLL_MS = 60_000;
/** What `submitAndWait`, `once` and `get(id, { waitMs })` wait by default. */
const DEFAULT_WAIT_MS = 60_000;
/** The batch endpoint takes 1 to 1,000 jobs. */
const MAX_BATCH = 1_000;

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export function isTerminal(job: Pick<Job, 'state'>): boolean {
  return TERMINAL.has(job.state);
}

export class Drove {
  /** @internal The HTTP transport, shared with this client's workers. */
  readonly http: Transport;
  private readonly longPollMs: number;

  constructor(opts: DroveOptions) {
    this.http = new Transport(opts);
    this.longPollMs = Math.min(LONG_POLL_MS, Math.max(1, Math.floor(opts.longPollMs ?? LONG_POLL_MS)));
  }

  /** The server this client talks to. */
  get url(): string {
    return this.http.base;
  }

  /**
   * Submits a job. Resolves once it is durably stored: a new job (`deduplicated: false`), or the
   * active job with the same key that this submit joined (`deduplicated: true`).
   */
  async submit<P = unknown>(queue: string, payload?: P, opts: SubmitOptions = {}): Promise<Job<P>> {
    return (await this.http.request<Job<P>>('POST', '/v1/jobs', submitBody(queue, payload, opts))).body;
  }

  /**
   * Submits many jobs, 1,000 per request (`POST /v1/jobs/batch`), answering them in order.
   * Each request is all or nothing; a list longer than 1,000 is sent as several requests.
   */
  async submitMany(jobs: JobSpec[]): Promise<Job[]> {
    const out: Job[] = [];
    for (let i = 0; i < jobs.length; i += MAX_BATCH) {
      const chunk = jobs.slice(i, i + MAX_BATCH).map((j) => submitBody(j.queue, j.payload, j));
      out.push(...(await this.http.request<{ jobs: Job[] }>('POST', '/v1/jobs/batch', { jobs: chunk })).body.jobs);
    }
    return out;
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
   */
  once<R = unknown, P = unknown>(queue: string, key: string, payload?: P, opts: OnceOptions = {}): Promise<R> {
    const { reuseForMs, waitMs, signal, submit } = opts;
    return this.submitAndWait<R, P>(queue, payload, { ...submit, key, reuseForMs, waitMs, signal });
  }

  /**
   * Reads a job. With `waitMs`, waits (long polls) until the job is terminal or the time is up,
   * then answers the job as it is.
   */
  async get<R = unknown>(id: string, opts: WaitOptions = {}): Promise<Job<unknown, R>> {
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    if (opts.waitMs === undefined) return (await this.http.request<Job<unknown, R>>('GET', path, undefined, opts)).body;
    const deadline = Date.now() + Math.max(0, opts.waitMs);
    const first = await this.http.request<Job<unknown, R>>('GET', `${path}?wait=${this.pollMs(deadline)}ms`, undefined, opts);
    return (await this.follow(first.body, deadline, opts.signal)) as Job<unknown, R>;
  }

  /** Lists jobs, newest first; pass `next_cursor` back as `cursor` for the next page. */
  async list(opts: ListJobsOptions = {}): Promise<JobPage> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) q.set(k, String(v));
    const qs = q.toString();
    return (await this.http.request<JobPage>('GET', `/v1/jobs${qs ? `?${qs}` : ''}`)).body;
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
   * returns the result, or throws Throttled, Permanent, Snooze or any other error (retryable).
   * Stop it with `await worker.close()`.
   */
  worker<P = unknown, R = unknown>(queue: string, handler: Handler<P, R>, opts: WorkerOptions = {}): Worker<P, R> {
    return new Worker<P, R>(this.http, queue, handler, opts);
  }

  // ---- waiting

  /** The `?wait=` of the next long poll: what is left until `deadline`, at most one poll. */
  private pollMs(deadline: number): number {
    return Math.min(this.longPollMs, Math.max(0, Math.ceil(deadline - Date.now())));
  }

  private async submitWaiting<P>(queue: string, payload: P | undefined, opts: SubmitAndWaitOptions): Promise<Job> {
    const waitMs = Math.max(0, opts.waitMs ?? DEFAULT_WAIT_MS);
    const deadline = Date.now() + waitMs;
    const body = submitBody(queue, payload, opts);
    // A keyed submit that joins is safe to repeat: a repeat joins the same job (or reuses its
    // result), so a server restart or a dropped connection is retried within the wait.
    const repeatable = opts.key !== undefined && (opts.onConflict ?? 'join') === 'join';
    let pause = 50;
    for (;;) {
      try {
        const first = await this.http.request<Job>('POST', `/v1/jobs?wait=${this.pollMs(deadline)}ms`, body, opts);
        return await this.follow(first.body, deadline, opts.signal, waitMs);
      } catch (err) {
        if (!repeatable || !(err instanceof DroveError) || !err.transient || Date.now() + pause >= deadline) throw err;
        await delay(pause, opts.signal);
        pause = Math.min(pause * 2, 2_000);
      }
    }
  }

  /**
   * Long-polls `GET /v1/jobs/ID?wait=` until the job is terminal or `deadline` passes. With
   * `timeoutAfterMs`, an unfinished job at the deadline is a WaitTimeoutError; without, the
   * job is answered as it is. Transient failures (server restarting, 503) are retried.
   */
  private async follow(job: Job, deadline: number, signal?: AbortSignal, timeoutAfterMs?: number): Promise<Job> {
    const path = `/v1/jobs/${encodeURIComponent(job.id)}`;
    let pause = 50;
    while (!isTerminal(job)) {
      if (Date.now() >= deadline) {
        if (timeoutAfterMs !== undefined) throw new WaitTimeoutError(job, timeoutAfterMs);
        return job;
      }
      try {
        job = (await this.http.request<Job>('GET', `${path}?wait=${this.pollMs(deadline)}ms`, undefined, { signal })).body;
        pause = 50;
      } catch (err) {
        if (!(err instanceof DroveError) || !err.transient) throw err;
        await delay(Math.min(pause, Math.max(0, deadline - Date.now())), signal);
        pause = Math.min(pause * 2, 2_000);
      }
    }
    return job;
  }
}


function submitBody(queue: string, payload: unknown, o: SubmitOptions): Record<string, unknown> {
  if (typeof queue !== 'string' || queue === '') throw new TypeError('submit needs a queue name');
  const body: Record<string, unknown> = { queue };
  if (payload !== undefined) body.payload = payload;
  if (o.kind !== undefined) body.kind = o.kind;
  if (o.key !== undefined) body.key = o.key;
  if (o.group !== undefined) body.group = o.group;
  if (o.priority !== undefined) body.priority = o.priority;
  if (o.delayMs !== undefined) body.delay_ms = o.delayMs;
  if (o.runAt !== undefined) body.run_at = o.runAt instanceof Date ? o.runAt.toISOString() : o.runAt;
  if (o.maxAttempts !== undefined) body.max_attempts = o.maxAttempts;
  if (o.timeoutMs !== undefined) body.timeout_ms = o.timeoutMs;
  if (o.reuseForMs !== undefined) body.reuse_for_ms = o.reuseForMs;
  if (o.onConflict !== undefined) body.on_conflict = o.onConflict;
  return body;
}
