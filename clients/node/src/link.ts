// A worker's line to the server, shared by its claim loop, its runs' heartbeats and its
// finisher, so that the worker as a whole knows whether the server is there.
//
// Key decisions:
// - While the server is unreachable (no answer, 502/503/504, 429) the worker is "offline": every
//   request waits here and they go out one at a time, one per backoff interval (capped
//   exponential, with jitter), whatever the number of jobs the worker holds. Without this, each
//   held job retried on its own and a worker with N jobs sent N requests per interval at a
//   server that was down (and with a checkpoint pending, one per failure, thousands a second).
// - Any answer from the server (even a refusal) ends the outage and lets every waiting request
//   go at once, so work resumes as soon as the server is back.
// - A 401 or 403 will not get better by trying again: it is handed to `fatal` (the worker stops).
// - The gate costs nothing while the server answers: a request checks one field.

import { DroveError } from './errors.js';
import type { Answer, RequestOptions, Transport } from './http.js';

/** The first retry waits about this long; each further one twice as long, up to the cap. */
export const BACKOFF_BASE_MS = 100;
/** At most this long between two tries (so at most about one request a second while offline,
 * and a lease of a few seconds survives a short outage). */
export const BACKOFF_MAX_MS = 1_000;

/**
 * Capped exponential backoff with jitter: between half and all of `base * 2^n`, at most `max`.
 * (Half is kept so that retries stay prompt; the random half spreads many workers apart.)
 */
export function backoffMs(n: number, base = BACKOFF_BASE_MS, max = BACKOFF_MAX_MS): number {
  const full = Math.min(max, base * 2 ** Math.min(Math.max(0, n), 30));
  return full / 2 + Math.random() * (full / 2);
}

/** A refusal that stops a worker: the token is wrong or not allowed. */
export function isAuthError(err: unknown): err is DroveError {
  return err instanceof DroveError && (err.status === 401 || err.status === 403);
}

export interface LinkEvents {
  /** The server stopped answering (`err` is the first failure). */
  offline(err: DroveError): void;
  /** The server answered again after `ms` offline. */
  online(ms: number): void;
  /** The server refused the worker's credentials (401/403). */
  fatal(err: DroveError): void;
}

/** The request shape the finisher and the runs use (a Transport, or a Link in front of one). */
export interface Requester {
  request<T>(method: string, path: string, body?: unknown, opts?: RequestOptions): Promise<Answer<T>>;
}

export class Link implements Requester {
  /** Set while the server is unreachable: since when, and the backoff step reached. */
  private outage: { since: number; step: number; nextAt: number } | undefined;
  /** Requests waiting for their turn while offline, oldest first. */
  private waiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly http: Transport,
    private readonly events: LinkEvents,
  ) {}

  /** The server is unreachable as far as this worker knows. */
  get offline(): boolean {
    return this.outage !== undefined;
  }

  /** Sends a request, first waiting for a turn while the server is unreachable. */
  async request<T>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<Answer<T>> {
    if (this.outage) await this.turn(opts.signal);
    return this.send<T>(method, path, body, opts);
  }

  /** Sends a request now (the caller already waited for its turn), noting what the answer says
   * about the server. */
  async send<T>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<Answer<T>> {
    let answer: Answer<T>;
    try {
      answer = await this.http.request<T>(method, path, body, opts);
    } catch (err) {
      this.heard(err);
      throw err;
    }
    if (this.outage) this.up();
    return answer;
  }

  /**
   * Resolves when a request may go out: at once while the server answers; while it does not,
   * when this caller's turn comes (one caller per backoff interval). Rejects with the signal's
   * reason when it aborts first.
   */
  turn(signal?: AbortSignal): Promise<void> {
    if (!this.outage) return Promise.resolve();
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const waiter = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.schedule();
    });
  }

  /** What a failed request says about the server. */
  private heard(err: unknown): void {
    if (!(err instanceof DroveError)) return; // aborted by the caller: says nothing
    if (err.transient) {
      if (!this.outage) {
        const now = Date.now();
        this.outage = { since: now, step: 0, nextAt: now + backoffMs(0) };
        this.events.offline(err);
        this.schedule();
      }
      return;
    }
    // The server answered: it is there, whatever it said.
    if (this.outage) this.up();
    if (isAuthError(err)) this.events.fatal(err);
  }

  private up(): void {
    const since = this.outage!.since;
    this.outage = undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const go of this.waiters.splice(0)) go();
    this.events.online(Date.now() - since);
  }

  /** Lets the oldest waiter go at the next backoff time. The timer is not unref'd: a worker
   * waiting for its server keeps the process alive, as its pending claim does otherwise. */
  private schedule(): void {
    if (!this.outage || this.timer !== undefined || this.waiters.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const outage = this.outage;
      if (!outage) return;
      const go = this.waiters.shift();
      if (go) {
        outage.step += 1;
        outage.nextAt = Date.now() + backoffMs(outage.step);
        go();
      }
      this.schedule();
    }, Math.max(0, this.outage.nextAt - Date.now()));
  }
}
