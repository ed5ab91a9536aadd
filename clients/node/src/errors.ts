// Errors: what the server said (DroveError and its refinements), what a job ended with
// (JobFailedError), what a handler throws to steer its job (Throttled, Transient, Permanent,
// Snooze), and
// why a handler's signal was aborted (JobCancelledError, LeaseLostError, JobTimeoutError,
// WorkerClosedError).

import type { Job } from './types.js';

/**
 * A request the server refused (`status` and `code` from its `{"error": {code, message}}`), or
 * one that never got an answer (`status` null, `code` "unreachable"; `cause` says why).
 */
export class DroveError extends Error {
  override name = 'DroveError';
  readonly status: number | null;
  readonly code: string;
  readonly field: string | undefined;

  constructor(status: number | null, code: string, message: string, field?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  /** Worth trying again: the server was unreachable, unavailable (503) or overloaded (429). */
  get transient(): boolean {
    return this.status === null || this.status === 503 || this.status === 429 || this.status === 502 || this.status === 504;
  }
}

/**
 * The run's lease is not the job's current lease any more (it expired, the job timed out, or
 * another worker runs it now): the server changed nothing. Also the `reason` of a handler's
 * signal when its lease is lost.
 */
export class LeaseLostError extends DroveError {
  override name = 'LeaseLostError';
  readonly jobId: string;

  constructor(jobId: string, message = `job ${jobId}: the lease was lost; the server changed nothing`, status: number | null = 409) {
    super(status, 'lease_lost', message);
    this.jobId = jobId;
  }
}

/** A submit with `onConflict: "reject"` met an active job with the same key (409). */
export class KeyConflictError extends DroveError {
  override name = 'KeyConflictError';
}

/**
 * The awaited job failed or was cancelled. `kind` is the job's error kind (`retryable`,
 * `transient`, `permanent`, `throttled`, `timeout`, `lost`, or `dependency`: a job it depends on
 * failed, so it never ran), or `cancelled` for a cancelled job.
 */
export class JobFailedError extends Error {
  override name = 'JobFailedError';
  readonly job: Job;
  readonly kind: string;

  constructor(job: Job) {
    const kind = job.state === 'cancelled' ? 'cancelled' : (job.error?.kind ?? 'unknown');
    const why = job.error?.message ? `: ${job.error.message}` : '';
    super(`job ${job.id} (${job.queue}) ${job.state === 'cancelled' ? 'was cancelled' : `failed (${kind})`}${why}`);
    this.job = job;
    this.kind = kind;
  }
}

/** The job was still not finished when `waitMs` ran out; `job` is its last known state. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError';
  readonly job: Job;

  constructor(job: Job, waitedMs: number) {
    super(`job ${job.id} (${job.queue}) is still ${job.state} after waiting ${waitedMs} ms`);
    this.job = job;
  }
}

// ---- thrown by handlers to steer their job

/**
 * The downstream pushed back (HTTP 429, a quota): run again after `retryAfterMs`, using no
 * attempt; the queue's adaptive limit and rate hold hear about it.
 */
export class Throttled extends Error {
  override name = 'Throttled';
  readonly retryAfterMs: number | undefined;

  constructor(retryAfterMs?: number, message = 'throttled') {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }

  /**
   * From a downstream's answer (a fetch `Response`, or anything with `status` and
   * `headers.get`): `Retry-After` in seconds or as an HTTP date becomes `retryAfterMs`; without
   * a usable one, the server's default applies (1 s).
   */
  static fromResponse(res: ResponseLike, message?: string): Throttled {
    const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
    const where = res.url ? ` from ${res.url}` : '';
    return new Throttled(retryAfterMs, message ?? `throttled: HTTP ${res.status}${where}`);
  }
}

/** What `Throttled.fromResponse` reads of a response. */
export interface ResponseLike {
  status: number;
  url?: string;
  headers: { get(name: string): string | null | undefined };
}

/**
 * A `Retry-After` header as milliseconds from `now`: delay-seconds (`120`) or an HTTP date
 * (`Wed, 21 Oct 2015 07:28:00 GMT`; a date in the past is 0). Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1_000);
  // Only a date with letters in it: Date.parse also takes bare numbers and odd shapes.
  if (!/[a-z]/i.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * Worth retrying soon: a deadlock, a lock wait timeout, a dropped connection, a 503. The server
 * retries the job quickly (tens of milliseconds to about a second, with jitter) on a budget of
 * its own, so these do not use up `max_attempts`. The worker also recognises the usual suspects
 * by itself (see `isTransientError`).
 */
export class Transient extends Error {
  override name = 'Transient';

  constructor(message = 'transient', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Fail now, whatever attempts remain: retrying cannot help. */
export class Permanent extends Error {
  override name = 'Permanent';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Not an error: run this job again after `ms`, using no attempt. */
export class Snooze extends Error {
  override name = 'Snooze';
  readonly ms: number;

  constructor(ms: number, message = 'snoozed') {
    super(message);
    this.ms = ms;
  }
}

// ---- reasons a handler's signal is aborted

/** Someone cancelled the job; the heartbeat said so. */
export class JobCancelledError extends Error {
  override name = 'JobCancelledError';
  readonly jobId: string;

  constructor(jobId: string) {
    super(`job ${jobId} was cancelled`);
    this.jobId = jobId;
  }
}

/** The job ran longer than its `timeout_ms`; the server fails it with kind `timeout`. */
export class JobTimeoutError extends Error {
  override name = 'JobTimeoutError';
  readonly jobId: string;

  constructor(jobId: string, timeoutMs: number) {
    super(`job ${jobId} ran longer than its timeout of ${timeoutMs} ms`);
    this.jobId = jobId;
  }
}

/** The worker closed and its grace period ran out: the job is handed back (released). */
export class WorkerClosedError extends Error {
  override name = 'WorkerClosedError';

  /** With a `cause`, the worker stopped because of it (the server refused its token). */
  constructor(options?: { cause?: unknown }) {
    const why = options?.cause instanceof Error ? ` (${options.cause.message})` : '';
    super(`the worker is closing${why}: the job is handed back to the queue`, options);
  }
}
