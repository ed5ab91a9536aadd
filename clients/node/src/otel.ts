// OpenTelemetry, when the application has it: submits carry the active span's context, and a
// handler runs inside a `drove.run` span whose parent is the job's context (docs/API.md
// "Traces").
//
// Key decision: `@opentelemetry/api` is an optional peer dependency, loaded once at start and
// never required. Without it (or without an SDK registered) every function here is a no-op but
// for passing the job's context along. The API keeps its state on a global, so this copy and the
// application's cooperate even when npm installs two.

import type { Job } from './types.js';

/** The part of `@opentelemetry/api` used here. */
interface SpanContext {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
  traceState?: unknown;
}
interface Span {
  spanContext(): SpanContext;
  setAttribute(key: string, value: string | number | boolean): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  recordException(e: unknown): unknown;
  end(): void;
}
interface Api {
  context: { active(): unknown; with<T>(ctx: unknown, fn: () => T): T };
  trace: {
    getTracer(name: string, version?: string): {
      startSpan(name: string, options: Record<string, unknown>, context?: unknown): Span;
    };
    getSpanContext(ctx: unknown): SpanContext | undefined;
    setSpan(ctx: unknown, span: Span): unknown;
    setSpanContext(ctx: unknown, sc: SpanContext): unknown;
    isSpanContextValid(sc: SpanContext): boolean;
  };
  createTraceState?(raw?: string): unknown;
  ROOT_CONTEXT: unknown;
  SpanKind: { CONSUMER: number };
  SpanStatusCode: { ERROR: number };
}

const MODULE = '@opentelemetry/api';
const api: Api | null = await import(MODULE).then((m: { default?: Api } & Api) => m.default ?? m, () => null);

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Whether `@opentelemetry/api` was found. */
export const otelAvailable = api !== null;

/** The W3C form of the active span's context, for a submit (none without an active span). */
export function activeTraceparent(): { traceparent: string; tracestate?: string } | undefined {
  if (!api) return undefined;
  const sc = api.trace.getSpanContext(api.context.active());
  if (!sc || !api.trace.isSpanContextValid(sc)) return undefined;
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
  const state = (sc.traceState as { serialize?(): string } | undefined)?.serialize?.();
  return { traceparent: `00-${sc.traceId}-${sc.spanId}-${flags}`, ...(state ? { tracestate: state } : {}) };
}

/** The job's context as a remote span context, when it has a valid one. */
function jobContext(job: Job): SpanContext | undefined {
  const m = job.traceparent ? TRACEPARENT.exec(job.traceparent) : null;
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: parseInt(m[3]!, 16),
    isRemote: true,
    ...(job.tracestate && api?.createTraceState ? { traceState: api.createTraceState(job.tracestate) } : {}),
  };
}

/** A run's span, and the context its handler runs in. */
export interface RunTrace {
  /** Calls `fn` inside the run's span. */
  within<T>(fn: () => T): T;
  /** Ends the span with how the run ended. */
  end(outcome: string, error?: unknown): void;
}

/** Starts the `drove.run` span of `job`: a child of the job's context on its first attempt, a
 * new trace linked to it on a later one. Undefined without `@opentelemetry/api`. */
export function startRun(queue: string, job: Job): RunTrace | undefined {
  if (!api) return undefined;
  const a = api;
  const sc = jobContext(job);
  const first = job.attempt <= 1;
  const attributes: Record<string, string | number> = { 'drove.queue': queue, 'drove.job.id': job.id, 'drove.attempt': job.attempt };
  if (job.key) attributes['drove.key'] = job.key;
  if (job.group) attributes['drove.group'] = job.group;
  const parent = sc && first ? a.trace.setSpanContext(a.ROOT_CONTEXT, sc) : a.ROOT_CONTEXT;
  const span = a.trace.getTracer('drove-client').startSpan(
    'drove.run',
    { kind: a.SpanKind.CONSUMER, attributes, ...(sc && !first ? { links: [{ context: sc }] } : {}) },
    parent,
  );
  const ctx = a.trace.setSpan(parent, span);
  return {
    within: (fn) => a.context.with(ctx, fn),
    end(outcome, error) {
      span.setAttribute('drove.outcome', outcome);
      if (error !== undefined) {
        span.recordException(error);
        span.setStatus({ code: a.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      }
      span.end();
    },
  };
}
