// The shapes of the v1 API (docs/API.md, and GET /v1/openapi.json).
//
// Key decision: what the server returns is handed over exactly as it came (snake_case field
// names, as in docs/API.md and in every curl example), so nothing is renamed, copied or lost in
// translation and a user's payloads and results are never touched. What the caller passes in
// (submit options, queue settings) is idiomatic camelCase and is converted on the way out.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type JobState = 'scheduled' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** The error kinds a job can record. `snooze` never shows up here: it is not an error. */
export type ErrorKind = 'retryable' | 'transient' | 'permanent' | 'throttled' | 'timeout' | 'lost';

/** What a worker may report when a run fails (`POST /v1/jobs/ID/fail`). `transient` is newer
 * than docs/API.md's first version: an older server refuses it (422), and the worker then reports
 * `retryable` instead. */
export type FailKind = 'retryable' | 'transient' | 'permanent' | 'throttled' | 'snooze';

export interface JobError {
  kind: ErrorKind;
  message: string;
  at: string;
}

/** One run that ended in an error, in a job's history (a Drove addition to docs/API.md). */
export interface AttemptError extends JobError {
  attempt: number;
}

export interface Progress {
  done: number;
  total: number | null;
  message: string | null;
}

/** A job, as docs/API.md's "Jobs" describes it. Times are RFC 3339 strings. */
export interface Job<P = unknown, R = unknown> {
  id: string;
  queue: string;
  kind: string | null;
  payload: P;
  key: string | null;
  group: string | null;
  priority: number;
  state: JobState;
  attempt: number;
  max_attempts: number;
  run_at: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  progress: Progress | null;
  checkpoint: unknown;
  result: R | null;
  error: JobError | null;
  /** Every run that ended in an error, oldest first (the newest 25 are kept). */
  errors?: AttemptError[];
  /** Runs that failed with kind `transient` and were retried on the transient budget, without
   * using an attempt (servers that know the kind). */
  transient_retries?: number;
  cancel_requested: boolean;
  partial: boolean;
  timeout_ms?: number | null;
  worker?: string | null;
  lease_expires_at?: string | null;
  /** Submit answers only: true when the submit joined (or reused) an existing job. */
  deduplicated?: boolean;
}

/** A job handed out by a claim: the job plus its run's fencing token. */
export interface ClaimedJob<P = unknown> extends Job<P> {
  lease: string;
  lease_expires_at: string;
}

export interface QueueCounts {
  scheduled: number;
  queued: number;
  running: number;
  succeeded: number;
  failed: number;
  cancelled: number;
}

/** A queue as `GET /v1/queues/NAME` answers it (its `config` uses the wire's snake_case). */
export interface QueueInfo {
  name: string;
  config: Record<string, unknown>;
  counts: QueueCounts;
  limit_now: number | null;
  held_until?: string | null;
  /** Starts per second in force under a rate (learned or configured); null without a rate. */
  rate_now?: number | null;
}

export interface PoolInfo {
  name: string;
  config: Record<string, unknown>;
  limit_now: number | null;
  /** With `adaptive`: running jobs allowed before offline queues wait (a Drove extension). */
  offline_limit_now?: number | null;
  queues: string[];
}

export type OnConflict = 'join' | 'replace' | 'reject';

/** Options of a submit (docs/API.md `POST /v1/jobs`), in camelCase. */
export interface SubmitOptions {
  kind?: string;
  /** One active job per (queue, key): a second submit joins the first. */
  key?: string;
  /** Group limits (group_concurrency, group_rate) apply per group. */
  group?: string;
  /** Larger runs first. */
  priority?: number;
  /** Run no earlier than this many milliseconds from now. */
  delayMs?: number;
  /** Run no earlier than this time (not with delayMs). */
  runAt?: Date | string;
  maxAttempts?: number;
  timeoutMs?: number;
  /** Reuse a success of the same key that is younger than this (a result cache). */
  reuseForMs?: number;
  onConflict?: OnConflict;
}

/** One entry of `submitMany`. */
export interface JobSpec<P = unknown> extends SubmitOptions {
  queue: string;
  payload?: P;
}

export interface WaitOptions {
  /** How long to wait for the job to end, in total (default 60 s). Longer than one long poll
   * (60 s) is fine: the client keeps polling until the time is up. */
  waitMs?: number;
  /** Aborts the wait (the job itself is not touched). */
  signal?: AbortSignal;
}

export type SubmitAndWaitOptions = SubmitOptions & WaitOptions;

export interface OnceOptions extends WaitOptions {
  reuseForMs?: number;
  /** Any other submit option (group, priority, maxAttempts, timeoutMs, kind). */
  submit?: Omit<SubmitOptions, 'key' | 'reuseForMs' | 'onConflict'>;
}

export interface RateLimit {
  limit: number;
  periodMs: number;
  burst?: number;
  /** What a start is: `'job'` (default: each job claimed) or `'claim'` (a claim counts as one
   * start however many jobs it takes: "50 calls/s of up to 20 items", for batch workers). */
  per?: 'job' | 'claim';
  /** Learn the rate from throttled outcomes (default true where the server learns rates). */
  learn?: boolean;
}

/**
 * Queue settings for `setQueue` (docs/API.md `PUT /v1/queues/{name}`), in camelCase; `null` clears a
 * setting, an absent field leaves it as it is. Keys are sent snake_cased, so settings the server
 * adds later can be passed too.
 */
export interface QueueSettings {
  concurrency?: number | null;
  groupConcurrency?: number | null;
  /** A rate, or `'auto'`: learned from throttled outcomes, with no ceiling. */
  rate?: RateLimit | 'auto' | null;
  groupRate?: RateLimit | null;
  adaptive?: { min: number; max: number } | null;
  pool?: string | null;
  lane?: 'online' | 'offline' | null;
  paused?: boolean | null;
  maxAttempts?: number | null;
  backoff?: { baseMs: number; maxMs: number } | null;
  timeoutMs?: number | null;
  leaseMs?: number | null;
  reuseForMs?: number | null;
  [setting: string]: unknown;
}

export interface PoolSettings {
  concurrency?: number | null;
  adaptive?: { min: number; max: number } | null;
  offlineMinShare?: number | null;
  [setting: string]: unknown;
}

export interface ListJobsOptions {
  queue?: string;
  state?: JobState;
  key?: string;
  group?: string;
  limit?: number;
  cursor?: string;
}

export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}
