// Submit bodies (camelCase options to the wire's snake_case fields) and batch submits, shared by
// Drove.submit/submitMany and a worker's ctx.submitChildren.
//
// Key decision: a batch goes in requests of up to 10,000 jobs (the server's limit) and about
// 8 MiB of JSON (well under its 32 MiB body limit); each request is all or nothing. A server that
// predates 10,000 (it takes 1,000) answers 422 on `jobs` before storing anything: the request is
// sent again in requests of 1,000, and so is every later batch to that server.

import { DroveError } from './errors.js';
import { RawBody, type Transport } from './http.js';
import type { Requester } from './link.js';
import { activeTraceparent } from './otel.js';
import type { Job, SubmitOptions } from './types.js';

/** Jobs per batch request (the server's limit), and the limit of servers that predate it. */
export const MAX_BATCH = 10_000;
const OLD_MAX_BATCH = 1_000;
/** JSON bytes per batch request at most (a batch of one larger job still goes alone). */
const MAX_BATCH_BYTES = 8 << 20;

/** Servers (by transport) that took at most 1,000 jobs per batch. */
const smallBatches = new WeakSet<object>();

/** The wire body of one submit. */
export function submitBody(queue: string, payload: unknown, o: SubmitOptions): Record<string, unknown> {
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
  if (o.staleForMs !== undefined) body.stale_for_ms = o.staleForMs;
  if (o.onConflict !== undefined) body.on_conflict = o.onConflict;
  if (o.parent !== undefined) body.parent = o.parent;
  if (o.dependsOn !== undefined) body.depends_on = o.dependsOn;
  if (o.onDependencyFailure !== undefined) body.on_dependency_failure = o.onDependencyFailure;
  // The caller's trace: given, else the active span's (with @opentelemetry/api).
  const trace = o.traceparent !== undefined ? { traceparent: o.traceparent, tracestate: o.tracestate } : activeTraceparent();
  if (trace) {
    body.traceparent = trace.traceparent;
    if (trace.tracestate !== undefined) body.tracestate = trace.tracestate;
  }
  return body;
}

/**
 * Submits `bodies` through `POST /v1/jobs/batch`, in requests of at most 10,000 jobs and about
 * 8 MiB, and answers the jobs in order. A request that fails rejects the call: the requests
 * before it were stored, that one and those after it were not (or, when it got no answer, may
 * have been). `server` names the server (its Transport), to remember one that takes 1,000.
 */
export async function submitBatches(http: Requester, server: Transport, bodies: Record<string, unknown>[]): Promise<Job[]> {
  const texts = bodies.map((b) => JSON.stringify(b));
  const out: Job[] = [];
  let i = 0;
  while (i < texts.length) {
    const max = smallBatches.has(server) ? OLD_MAX_BATCH : MAX_BATCH;
    let end = i;
    let bytes = 0;
    while (end < texts.length && end - i < max && (end === i || bytes + texts[end]!.length + 1 <= MAX_BATCH_BYTES)) {
      bytes += texts[end]!.length + 1;
      end += 1;
    }
    const body = new RawBody(`{"jobs":[${texts.slice(i, end).join(',')}]}`);
    try {
      out.push(...(await http.request<{ jobs: Job[] }>('POST', '/v1/jobs/batch', body)).body.jobs);
    } catch (err) {
      // An older server's limit (it stored nothing): from now on, 1,000 per request.
      if (end - i > OLD_MAX_BATCH && !smallBatches.has(server) && err instanceof DroveError && err.status === 422 && err.field === 'jobs') {
        smallBatches.add(server);
        continue;
      }
      throw err;
    }
    i = end;
  }
  return out;
}
