// The shapes of the v1 API (docs/API.md, and GET /v1/openapi.json).
//
// Key decision: what the server returns is handed over exactly as it came (snake_case field
// names, as in docs/API.md and in every curl example), so nothing is renamed, copied or lost in
// translation and a user's payloads and results are never touched. What the caller passes in
// (submit options, queue settings) is idiomatic camelCase and is converted on the way out.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * A job's state. `waiting` (servers that know it) waits for something other than time: the jobs
 * it depends on (`depends_on`), its children (it completed with `awaitChildren`), or the running
 * job of its key (a follow-up); `waiting_for` says which. It is active, not terminal.
 */
export type JobState = 'waiting' | 'scheduled' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** The error kinds a job can record. `snooze` never shows up here: it is not an error.
 * `dependency`: the job never ran because a job it depends on failed or was cancelled (the
 * message names it). */
export type ErrorKind = 'retryable' | 'transient' | 'permanent' | 'throttled' | 'timeout' | 'lost' | 'dependency';

/** What a `waiting` job waits for. */
export type WaitingFor = 'dependencies' | 'children' | 'key';

/** A parent's children, counted as they end. `succeeded` includes the `partial` ones; the
 * children still pending are `total - succeeded - failed - cancelled`. */
export interface Children {
  total: number;
  succeeded: number;
  partial: number;
  failed: number;
  cancelled: number;
}

/** What a job does when a job it depends on fails or is cancelled: `'fail'` (the default: it
 * ends the same way without running, error kind `dependency`) or `'run'` (it runs once every
 * dependency has ended, however it ended). */
export type OnDependencyFailure = 'fail' | 'run';

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
  /** The job whose child this is (present only when set). */
  parent?: string;
  /** The jobs this one waits for, as given at submit (present only when set). */
  depends_on?: string[];
  /** Present only when not the default: `'run'`. */
  on_dependency_failure?: 'run';
  /** What a `waiting` job waits for (present only while it waits). */
  waiting_for?: WaitingFor;
  /** The W3C trace context the job's runs descend from (docs/API.md "Traces"). */
  traceparent?: string;
  tracestate?: string;
  /** Its children, once it has any (present only then). */
  children?: Children;
  /** This run is the fan-in: the job completed with `awaitChildren` and every child has ended
   * since (present only then). Its `result` is the first run's meanwhile. */
  fan_in?: true;
  /** Submit answers only: true when the submit joined (or reused) an existing job. */
  deduplicated?: boolean;
  /** Submit answers only: this is a stale success of the key, answered at once
   * (`staleForMs`) while `refresh` computes a new one. */
  stale?: true;
  /** Submit answers only, with `stale`: the id of the one job refreshing the key. */
  refresh?: string;
}

/** A job handed out by a claim: the job plus its run's fencing token. */
export interface ClaimedJob<P = unknown> extends Job<P> {
  lease: string;
  lease_expires_at: string;
}

export interface QueueCounts {
  /** Jobs in state `waiting` (servers that know it). */
  waiting?: number;
  scheduled: number;
  queued: number;
  running: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** The succeeded jobs that left items undone (a subset of `succeeded`). */
  partial?: number;
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

/**
 * What a submit does when an active job holds its key: `'join'` (the default) answers that job;
 * `'replace'` gives a job that has not started the new payload (and run time, priority);
 * `'reject'` refuses (KeyConflictError); `'follow_up'` (servers that know it), while that job
 * runs, keeps one successor waiting behind it with the newest payload (every such submit answers
 * the successor; a job that has not started just takes the payload).
 */
export type OnConflict = 'join' | 'replace' | 'reject' | 'follow_up';

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
  /**
   * Needs a key. A success of the key older than `reuseForMs` but within this much more is
   * answered at once (`stale: true`, the job of that success), and one job refreshing the key
   * is started (`refresh` names it; every stale answer meanwhile names the same one).
   */
  staleForMs?: number;
  onConflict?: OnConflict;
  /** The id of the job whose child this is: the parent's `children` counts it as it ends, and
   * cancelling the parent cancels it. In a worker's handler, `ctx.submitChildren` sets it. */
  parent?: string;
  /** Ids of jobs (at most 100) that must succeed before this one starts; meanwhile it is
   * `waiting` (`waiting_for: 'dependencies'`). */
  dependsOn?: string[];
  /** See OnDependencyFailure (default `'fail'`). */
  onDependencyFailure?: OnDependencyFailure;
  /** The W3C trace context the job's runs descend from. Default: the active span's, when
   * `@opentelemetry/api` is installed and a span is active. */
  traceparent?: string;
  /** The W3C `tracestate` that goes with `traceparent`. */
  tracestate?: string;
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
  /** A success of the key older than `reuseForMs` but within this much more is answered at once
   * (the stale result: once() resolves with it without waiting), and one job refreshing the key
   * is started on the server for the callers after it. */
  staleForMs?: number;
  /** Any other submit option (group, priority, maxAttempts, timeoutMs, kind, dependsOn, ...). */
  submit?: Omit<SubmitOptions, 'key' | 'reuseForMs' | 'staleForMs' | 'onConflict'>;
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
  /** true: only partial successes; false: only full ones (both imply state succeeded). */
  partial?: boolean;
  /** Only the children of this job (see also `Drove.children`, which pages through them all). */
  parent?: string;
  /** true: only jobs that have children (operations). */
  operations?: boolean;
  /** 1 to 1,000 (default 100). */
  limit?: number;
  cursor?: string;
}

export interface ChildrenOptions {
  /** Only children in this state. */
  state?: JobState;
  /** Children per request (1 to 1,000; default 1,000). */
  pageSize?: number;
  /** Stops the iteration (the next page request rejects with the signal's reason). */
  signal?: AbortSignal;
}

export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}

/** Which missed ticks a schedule enqueues when several are due at once (the server was down):
 * `'none'` only one on time, `'last'` (default) the newest, `'all'` each (the newest 100). */
export type CatchUp = 'none' | 'last' | 'all';

/**
 * A schedule's settings (`PUT /v1/schedules/NAME`), in camelCase: each tick enqueues one job
 * with these submit fields (its `run_at` is the tick), exactly once across every node.
 */
export interface ScheduleSpec<P = unknown> {
  /** A cron pattern: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds
   * first; `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; or `@every N` with a unit
   * (`ms`, `s`, `m`, `h`, `d`), at least 1 s. */
  cron: string;
  /** An IANA time zone (`Europe/Berlin`) for cron patterns; default UTC. */
  timezone?: string;
  queue: string;
  /** The payload of each tick's job (default null); sent as it is. */
  payload?: P;
  kind?: string;
  /** A key for each tick's job: a tick whose key is still held joins the live job. */
  key?: string;
  group?: string;
  priority?: number;
  maxAttempts?: number;
  timeoutMs?: number;
  catchUp?: CatchUp;
  /** A paused schedule enqueues nothing; resuming skips the ticks missed meanwhile. */
  paused?: boolean;
}

/** A change to some of a schedule's settings (`PATCH`, a JSON merge patch): a field present
 * replaces that setting (the payload whole), `null` clears an optional one. */
export type SchedulePatch<P = unknown> = { [K in keyof ScheduleSpec<P>]?: ScheduleSpec<P>[K] | null };

/** A schedule as the server answers it (snake_case, as docs/API.md and curl show it). Unset
 * optional settings are absent. Times are RFC 3339 strings. */
export interface Schedule<P = unknown> {
  name: string;
  cron: string;
  timezone?: string;
  queue: string;
  payload: P;
  kind?: string;
  key?: string;
  group?: string;
  priority: number;
  max_attempts?: number;
  timeout_ms?: number;
  catch_up: CatchUp;
  paused: boolean;
  /** The next tick to enqueue (null: the pattern has no more). */
  next_at: string | null;
  /** The last tick a job was enqueued for. */
  last_tick_at: string | null;
  /** The last job it enqueued (a tick or `runNow`), and that job's state while it is kept. */
  last_job: string | null;
  last_job_state: JobState | null;
  created_at: string;
  updated_at: string;
}
