// Traces from Node (docs/API.md "Traces"): with @opentelemetry/api and an SDK registered, a
// submit made inside a span carries its context to a real `drove serve`; the worker runs the
// handler inside a `drove.run` span, a child of that context on attempt 1 and a new trace linked
// to it on the retry.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

import { startServer, within, type Server } from './harness.js';

const LONG = 60_000;
const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test('a job submitted in a span runs its handler in that trace, and its retry in a linked one', async () => {
  const { drove } = server;
  await drove.setQueue('traced', { backoff: { baseMs: 0, maxMs: 0 } });
  const tracer = trace.getTracer('test');
  const request = tracer.startSpan('GET /report');
  const caller = request.spanContext();
  const job = await context.with(trace.setSpan(context.active(), request), () => drove.submit('traced', { n: 1 }, { key: 'r-1' }));
  request.end();
  // The server exports nothing here, so the job keeps the caller's context as sent.
  assert.equal(job.traceparent, `00-${caller.traceId}-${caller.spanId}-01`);

  // What each attempt's handler saw as its active span.
  const seen = new Map<number, { traceId: string; spanId: string }>();
  const worker = drove.worker('traced', (ctx) => {
    const sc = trace.getActiveSpan()?.spanContext();
    assert.ok(sc, 'the handler runs inside a span');
    seen.set(ctx.attempt, { traceId: sc.traceId, spanId: sc.spanId });
    if (ctx.attempt === 1) throw new Error('first try fails');
    return { ok: true };
  });
  try {
    // A run's span ends before its end is reported, so a finished job has both spans.
    const done = await within(drove.get(job.id, { waitMs: LONG }), LONG + 5_000, 'the job to succeed');
    assert.equal(done.state, 'succeeded');
    assert.equal(done.attempt, 2);
  } finally {
    await worker.close();
  }
  const runs = exporter.getFinishedSpans().filter((s) => s.name === 'drove.run');
  const run = (attempt: number) => {
    const found = runs.filter((s) => s.attributes['drove.attempt'] === attempt);
    assert.equal(found.length, 1, `one run span of attempt ${attempt}`);
    return found[0]!;
  };
  const first = run(1);
  assert.equal(first.spanContext().traceId, caller.traceId, 'attempt 1 is in the caller\'s trace');
  assert.equal(first.parentSpanContext?.spanId, caller.spanId, 'attempt 1 is a child of the submitting span');
  assert.equal(first.attributes['drove.outcome'], 'retryable');
  assert.equal(first.attributes['drove.key'], 'r-1');
  assert.equal(first.status.code, 2, 'a failed run is an error');
  assert.deepEqual(seen.get(1), { traceId: first.spanContext().traceId, spanId: first.spanContext().spanId }, 'the handler ran inside its run span');

  const second = run(2);
  assert.notEqual(second.spanContext().traceId, caller.traceId, 'a retry starts a trace of its own');
  assert.equal(second.parentSpanContext, undefined);
  assert.deepEqual(second.links.map((l) => [l.context.traceId, l.context.spanId]), [[caller.traceId, caller.spanId]], 'linked to the job\'s context');
  assert.equal(second.attributes['drove.outcome'], 'succeeded');
  assert.deepEqual(seen.get(2), { traceId: second.spanContext().traceId, spanId: second.spanContext().spanId });
});
