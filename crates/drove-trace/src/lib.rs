//! Drove's spans, and the W3C trace context a job carries between them.
//!
//! Every span Drove makes for a trace uses the target [`TARGET`]. The binary's log output turns
//! that target off, and only the OpenTelemetry layer (installed when an OTLP endpoint is given)
//! turns it on, so with tracing off these spans are never built: a disabled callsite costs one
//! cached check.
//!
//! How a job's spans connect (docs/API.md "Traces"):
//! - `drove.submit` (server) is a child of the caller's `traceparent`; the job keeps the submit
//!   span's context, or the caller's when the server does not export spans.
//! - `drove.run` (worker) of attempt 1 is a child of the job's context; a later attempt starts a
//!   trace of its own with a link to it, so retries never grow one endless trace.
//! - `drove.finish` (server) is a child of the run that sent it, `drove.claim` links the jobs
//!   it hands out, and the maintenance services make one `drove.<service>` span per pass that
//!   did work ([`service_pass`]: made after the fact, so idle passes make no trace at all).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use drove_core::TraceContext;
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use tracing::Span;

/// The target of every span meant for traces.
pub const TARGET: &str = "drove::trace";

/// How many jobs a claim span links at most.
pub const MAX_CLAIM_LINKS: usize = 32;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that spans are exported: the binary calls it once it has installed its OpenTelemetry
/// layer and set the global tracer provider (which [`service_pass`] uses).
pub fn set_exporting() {
    EXPORTING.store(true, Ordering::Release);
}

/// The span of a maintenance pass that did something (`drove.promoter`, `drove.scheduler`,
/// `drove.reaper`, `drove.pruner`, with `drove.jobs`), from `started` to now; nothing for an
/// idle pass, or when spans are not exported.
pub fn service_pass(service: &'static str, started: SystemTime, jobs: usize) {
    if jobs == 0 || !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    let tracer = opentelemetry::global::tracer("drove");
    let mut span = tracer
        .span_builder(format!("drove.{service}"))
        .with_kind(SpanKind::Internal)
        .with_start_time(started)
        .with_attributes([
            KeyValue::new("drove.service", service),
            KeyValue::new("drove.jobs", i64::try_from(jobs).unwrap_or(i64::MAX)),
        ])
        .start(&tracer);
    span.end();
}

/// The OpenTelemetry form of a job's trace context (a remote parent).
pub fn span_context(tc: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(tc.trace_id()).ok()?;
    let span_id = SpanId::from_hex(tc.span_id()).ok()?;
    let flags = if tc.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let state = tc.tracestate.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    let cx = SpanContext::new(trace_id, span_id, flags, true, state);
    cx.is_valid().then_some(cx)
}

/// The W3C form of a span context.
pub fn trace_context(cx: &SpanContext) -> Option<TraceContext> {
    if !cx.is_valid() {
        return None;
    }
    let state = cx.trace_state().header();
    Some(TraceContext {
        traceparent: format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()),
        tracestate: (!state.is_empty()).then_some(state),
    })
}

/// Makes `span` a child of `parent` (nothing when either is absent or tracing is off).
pub fn set_parent(span: &Span, parent: Option<&TraceContext>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = parent.and_then(span_context) {
        // Refused only when the span is disabled or already started; neither loses anything.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
    }
}

/// Links `span` to `to` (a follows-from, not a parent).
pub fn link(span: &Span, to: Option<&TraceContext>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = to.and_then(span_context) {
        span.add_link(cx);
    }
}

/// The trace context of `span` as the exporter sees it: `None` when tracing is off.
pub fn context_of(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    trace_context(span.context().span().span_context())
}

/// The span of one run of a job, on the worker that runs it: attempt 1 is a child of the job's
/// context, a later attempt a new trace linked to it.
pub fn run_span(
    queue: &str,
    job: &str,
    attempt: i64,
    key: Option<&str>,
    group: Option<&str>,
    trace: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "drove.run",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        drove.queue = queue,
        drove.job.id = job,
        drove.attempt = attempt,
        drove.key = key,
        drove.group = group,
        drove.outcome = tracing::field::Empty,
    );
    if attempt <= 1 {
        set_parent(&span, trace);
    } else {
        link(&span, trace);
    }
    span
}

/// Records how a run ended on its span (`succeeded`, `retryable`, `released`, `lost`, ...); a
/// run that failed is marked an error (a throttle, snooze or release is not one).
pub fn record_outcome(span: &Span, outcome: &str) {
    span.record("drove.outcome", outcome);
    if matches!(outcome, "retryable" | "permanent" | "transient" | "lost" | "timeout" | "cancelled") {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_context_survives_the_round_trip_through_opentelemetry() {
        let tc = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into()),
        };
        let cx = span_context(&tc).unwrap();
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(trace_context(&cx), Some(tc));
        let unsampled = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
            tracestate: None,
        };
        assert_eq!(trace_context(&span_context(&unsampled).unwrap()), Some(unsampled));
    }

    #[test]
    fn without_a_tracing_layer_spans_carry_nothing() {
        let tc = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        let span = run_span("q", "1", 1, None, None, Some(&tc));
        assert_eq!(context_of(&span), None);
    }
}
