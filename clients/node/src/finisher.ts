// The ends of runs (complete, fail, release), sent many per request through
// `POST /v1/jobs/finish` (docs/API.md: each entry stands alone, like River's
// completer). While one request is out, the ends that arrive wait and go together in the next,
// so a busy worker sends one request per batch and an idle one sends at once. A server without
// the endpoint (404/405) gets the single-run endpoints instead. Requests go through
// the worker's Link, so while the server is away the finisher waits its turn with everyone else.
//
// A worker's claim may carry the ends instead (`finish` in the claim's body, one request per
// cycle): the claim loop takes what waits here with take(), and hands the server's answer back
// with settle() (or the entries themselves with giveBack() when the claim failed). While the
// worker says it holds (`hold`: a claim is about to go, or a claim that answers at once is out),
// new ends wait for it rather than going in a request of their own; kick() sends what waits once
// it stops holding.
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
  | { kind: 'complete'; result?: unknown; partial?: boolean; await_children?: boolean }
  | { kind: 'fail'; error: { message: string; kind: string }; retry_after_ms?: number }
  | { kind: 'release' };

/** The server's answer for one run: the job's new state, or why it refused. */
export type Settled = { ok: true; state: string } | { ok: false; error: DroveError };

export interface Entry {
  id: string;
  /** The entry on the wire, as JSON text (made once: a result may be large). */
  json: string;
  ending: Ending;
  lease: string;
  /** Still worth sending again after a failed request: false once the run's lease is gone. */
  alive: () => boolean;
  resolve: (s: Settled) => void;
  done: boolean;
  /** Sent once already (on a claim that failed): a retry applies the `alive` rule. */
  tried: boolean;
}

/** Ends a claim carries: the entries, and their JSON (an array's inside, without brackets). */
export interface Carried {
  readonly entries: readonly Entry[];
  readonly json: string;
}

/** One row of a finish answer (`POST /v1/jobs/finish`'s `jobs`, a claim's `finished`). */
export type FinishRow = { id: string; state?: string; error?: { code: string; message: string } };

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
  /** Entries a claim carries now. */
  private riding = 0;
  /** True while new ends should wait for a claim to carry them (see kick()). */
  hold: () => boolean = () => false;

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
    return this.waiting.length + this.sending + this.riding;
  }

  /** Entries waiting to be sent (a claim may take them). */
  get queued(): number {
    return this.waiting.length;
  }

  /** Takes the waiting entries (as many as one request holds) for a claim to carry. */
  take(): Carried | undefined {
    const entries = this.cut();
    if (entries.length === 0) return undefined;
    this.riding += entries.length;
    return { entries, json: entries.map((e) => e.json).join(',') };
  }

  /** The claim that carried `c` was answered: `rows` is its `finished`, in order. */
  settle(c: Carried, rows: FinishRow[]): void {
    this.riding -= c.entries.length;
    answer(c.entries, rows);
    this.checkIdle();
  }

  /** The claim that carried `c` failed (or the server ignored them): they are sent by the
   * finisher instead, first of all. The server may have ended some already (a request that got
   * no answer): those come back refused, as a finish request's retry would. */
  giveBack(c: Carried): void {
    this.riding -= c.entries.length;
    for (const e of c.entries) e.tried = true;
    this.waiting.unshift(...c.entries.filter((e) => !e.done));
    this.kick();
    this.checkIdle();
  }

  /** Sends what waits (the worker stopped holding). */
  kick(): void {
    this.schedule();
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
        tried: false,
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

  private checkIdle(): void {
    if (this.pending === 0) for (const f of this.idle.splice(0)) f();
  }

  private schedule(): void {
    if (this.scheduled || this.requests >= this.parallel || this.waiting.length === 0 || this.hold()) return;
    this.scheduled = true;
    // Ends that arrive in the same turn of the event loop (a claim's worth of quick handlers)
    // go in one request.
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /** The oldest waiting entries, as many as one request holds. */
  private cut(): Entry[] {
    const batch: Entry[] = [];
    let bytes = 0;
    while (batch.length < MAX_ENTRIES && this.waiting.length > 0) {
      const next = this.waiting[0]!;
      if (batch.length > 0 && bytes + next.json.length > MAX_BYTES) break;
      bytes += next.json.length + 1;
      batch.push(this.waiting.shift()!);
    }
    return batch;
  }

  private flush(): void {
    if (this.hold()) return; // a claim will carry them (it kicks when it does not)
    while (this.requests < this.parallel && this.waiting.length > 0) {
      const batch = this.cut();
      this.requests += 1;
      this.sending += batch.length;
      void this.send(batch).finally(() => {
        this.requests -= 1;
        this.sending -= batch.length;
        this.schedule();
        this.checkIdle();
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
        if ((tries === 0 && !e.tried) || e.alive()) return true;
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
    const reply = await this.http.request<{ jobs: FinishRow[] }>('POST', '/v1/jobs/finish', body);
    answer(batch, reply.body.jobs);
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

/** Settles each entry from its row of a finish answer (in the request's order). */
function answer(entries: readonly Entry[], rows: FinishRow[] | undefined): void {
  entries.forEach((e, i) => {
    const row = rows?.[i];
    if (row?.state) e.resolve({ ok: true, state: row.state });
    else e.resolve({ ok: false, error: entryError(e.id, row?.error) });
  });
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
