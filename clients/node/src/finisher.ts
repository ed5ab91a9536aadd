// The ends of runs (complete, fail, release), sent many per request through
// `POST /v1/jobs/finish` (an addition to API.md: each entry stands alone, like River's
// completer). While one request is out, the ends that arrive wait and go together in the next,
// so a busy worker sends one request per batch and an idle one sends at once. A server without
// the endpoint (404/405) gets the single-run endpoints of API.md instead. Requests go through
// the worker's Link, so while the server is away the finisher waits its turn with everyone else.
//
// Two refusals are worked around rather than passed on, since either would otherwise lose every
// end in the request: a 422 about one entry (`jobs[N]...`) refuses that entry alone and the
// rest are sent again; and a server older than fail kind `transient` (422 on `error.kind`) gets
// `retryable` instead, from then on.

import { DroveError, LeaseLostError } from './errors.js';
import { RawBody, delay } from './http.js';
import { backoffMs, type Requester } from './link.js';

/** What one run ended with, in the wire's shape (without id and lease). */
export type Ending =
  | { kind: 'complete'; result?: unknown; partial?: boolean }
  | { kind: 'fail'; error: { message: string; kind: string }; retry_after_ms?: number }
  | { kind: 'release' };

/** The server's answer for one run: the job's new state, or why it refused. */
export type Settled = { ok: true; state: string } | { ok: false; error: DroveError };

interface Entry {
  id: string;
  /** The entry on the wire, as JSON text (made once: a result may be large). */
  json: string;
  ending: Ending;
  lease: string;
  /** Still worth sending again after a failed request: false once the run's lease is gone. */
  alive: () => boolean;
  resolve: (s: Settled) => void;
  done: boolean;
}

/** Entries per request (the endpoint's limit), and bytes per request (well under its 32 MiB). */
const MAX_ENTRIES = 1_000;
const MAX_BYTES = 8 << 20;

export class Finisher {
  private waiting: Entry[] = [];
  /** Requests in flight, and the entries they carry. */
  private requests = 0;
  private sending = 0;
  private scheduled = false;
  private batchEndpoint: boolean;
  /** False once the server refused fail kind `transient` (an older server). */
  private transientKind = true;
  private idle: Array<() => void> = [];

  constructor(
    private readonly http: Requester,
    /** Requests in flight at once (more overlap, smaller batches). */
    private readonly parallel: number,
    batch: boolean,
  ) {
    this.batchEndpoint = batch;
  }

  /** Entries not yet answered. */
  get pending(): number {
    return this.waiting.length + this.sending;
  }

  /** Sends the end of a run; resolves with the server's answer (never rejects). */
  end(id: string, lease: string, ending: Ending, alive: () => boolean): Promise<Settled> {
    return new Promise((resolve) => {
      if (!this.transientKind) downgrade(ending);
      let json: string;
      try {
        json = wire(id, lease, ending);
      } catch (err) {
        // A result JSON cannot hold (a BigInt, a cycle): refused here as the server would.
        const why = err instanceof Error ? err.message : String(err);
        return resolve({ ok: false, error: new DroveError(null, 'invalid_value', `job ${id}: the result is not JSON (${why})`, 'result') });
      }
      const entry: Entry = {
        id,
        lease,
        ending,
        alive,
        json,
        done: false,
        resolve: (s) => {
          entry.done = true;
          resolve(s);
        },
      };
      this.waiting.push(entry);
      this.schedule();
    });
  }

  /** Resolves once nothing is waiting or in flight. */
  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || this.requests >= this.parallel || this.waiting.length === 0) return;
    this.scheduled = true;
    // Ends that arrive in the same turn of the event loop (a claim's worth of quick handlers)
    // go in one request.
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.requests < this.parallel && this.waiting.length > 0) {
      const batch: Entry[] = [];
      let bytes = 0;
      while (batch.length < MAX_ENTRIES && this.waiting.length > 0) {
        const next = this.waiting[0]!;
        if (batch.length > 0 && bytes + next.json.length > MAX_BYTES) break;
        bytes += next.json.length + 1;
        batch.push(this.waiting.shift()!);
      }
      this.requests += 1;
      this.sending += batch.length;
      void this.send(batch).finally(() => {
        this.requests -= 1;
        this.sending -= batch.length;
        this.schedule();
        if (this.pending === 0) for (const f of this.idle.splice(0)) f();
      });
    }
  }

  private async send(batch: Entry[]): Promise<void> {
    let failures = 0;
    for (let tries = 0; batch.length > 0; tries++) {
      // Every end is sent once, whatever the worker believes about its lease: the server
      // decides (and fences). Retries after a failed request stop once the run's lease is gone.
      batch = batch.filter((e) => {
        if (e.done) return false;
        if (tries === 0 || e.alive()) return true;
        e.resolve({ ok: false, error: new LeaseLostError(e.id) });
        return false;
      });
      if (batch.length === 0) return;
      try {
        if (this.batchEndpoint) await this.sendBatch(batch);
        else await Promise.all(batch.map((e) => this.sendOne(e)));
        return;
      } catch (err) {
        if (err instanceof DroveError && (err.status === 404 || err.status === 405) && this.batchEndpoint) {
          this.batchEndpoint = false; // an older server: use the single-run endpoints
          continue;
        }
        const refused = this.batchEndpoint ? refusedEntry(err, batch) : undefined;
        if (refused !== undefined) {
          if (this.refusedTransient(err as DroveError, refused)) {
            tries = -1; // the server took none of the batch: it is still its first sending
            continue;
          }
          // One entry was malformed: it alone is refused; the others are sent again.
          refused.resolve({ ok: false, error: entryError(refused.id, { code: (err as DroveError).code, message: (err as DroveError).message }) });
          tries = -1; // the rest have not been sent yet
          continue;
        }
        if (!(err instanceof DroveError) || !err.transient) {
          for (const e of batch) e.resolve({ ok: false, error: asDroveError(err) });
          return;
        }
        // The server is away (the Link reported it, and paces every request of the worker);
        // this batch also backs off on its own, should the server answer others meanwhile.
        await delay(backoffMs(failures++));
      }
    }
  }

  /** When `err` is the server refusing fail kind `transient` for `entry`, switches to
   * `retryable` for good (this entry, and every end still to be sent) and says so. */
  private refusedTransient(err: DroveError, entry: Entry): boolean {
    if (!/error\.kind$/.test(err.field ?? '') || entry.ending.kind !== 'fail' || entry.ending.error.kind !== 'transient') return false;
    if (this.transientKind) {
      this.transientKind = false;
      console.warn('[drove-client] the server does not know fail kind "transient" (it predates it): transient failures are reported as retryable');
    }
    for (const e of this.waiting) this.rewrite(e);
    this.rewrite(entry);
    return true;
  }

  private rewrite(e: Entry): void {
    if (downgrade(e.ending)) e.json = wire(e.id, e.lease, e.ending);
  }

  private async sendBatch(batch: Entry[]): Promise<void> {
    const body = new RawBody(`{"jobs":[${batch.map((e) => e.json).join(',')}]}`);
    const answer = await this.http.request<{ jobs: Array<{ id: string; state?: string; error?: { code: string; message: string } }> }>(
      'POST',
      '/v1/jobs/finish',
      body,
    );
    const rows = answer.body.jobs;
    batch.forEach((e, i) => {
      const row = rows[i];
      if (row?.state) e.resolve({ ok: true, state: row.state });
      else e.resolve({ ok: false, error: entryError(e.id, row?.error) });
    });
  }

  private async sendOne(e: Entry): Promise<void> {
    const path = `/v1/jobs/${encodeURIComponent(e.id)}/${e.ending.kind}`;
    for (;;) {
      const { kind: _kind, ...rest } = e.ending;
      try {
        const answer = await this.http.request<{ state: string }>('POST', path, { lease: e.lease, ...rest }, { jobId: e.id });
        e.resolve({ ok: true, state: answer.body.state });
        return;
      } catch (err) {
        if (err instanceof DroveError && err.transient) throw err; // the batch is tried again
        if (err instanceof DroveError && err.status === 422 && this.refusedTransient(err, e)) continue;
        e.resolve({ ok: false, error: asDroveError(err) });
        return;
      }
    }
  }
}

/** An entry on the wire: `{id, lease, ...}` without the ending's kind (`release: true` for a
 * release). Throws when the result is not JSON. */
function wire(id: string, lease: string, ending: Ending): string {
  const { kind: _kind, ...rest } = ending;
  const out: Record<string, unknown> = { id, lease, ...rest };
  if (ending.kind === 'release') out.release = true;
  return JSON.stringify(out);
}

/** Fail kind `transient` as `retryable`, for a server that predates it; true if changed. The
 * ending is changed in place, so the worker's `failed` event names the kind that was stored. */
function downgrade(ending: Ending): boolean {
  if (ending.kind !== 'fail' || ending.error.kind !== 'transient') return false;
  ending.error.kind = 'retryable';
  return true;
}

/** The entry a whole-request 422 is about (its field reads `jobs[N]...`), if any. */
function refusedEntry(err: unknown, batch: Entry[]): Entry | undefined {
  if (!(err instanceof DroveError) || err.status !== 422) return undefined;
  const m = /^jobs\[(\d+)\]/.exec(err.field ?? '');
  return m ? batch[Number(m[1])] : undefined;
}

function entryError(id: string, error?: { code: string; message: string }): DroveError {
  if (!error) return new DroveError(null, 'bad_answer', `job ${id}: the server's answer has no entry for it`);
  if (error.code === 'lease_lost') return new LeaseLostError(id, `job ${id}: ${error.message}`);
  const status = { not_found: 404, payload_too_large: 413, invalid_value: 422, wrong_state: 409 }[error.code] ?? null;
  return new DroveError(status, error.code, `job ${id}: ${error.message}`);
}

function asDroveError(err: unknown): DroveError {
  if (err instanceof DroveError) return err;
  return new DroveError(null, 'client_error', err instanceof Error ? err.message : String(err), undefined, { cause: err });
}
