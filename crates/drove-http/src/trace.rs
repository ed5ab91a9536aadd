//! The W3C trace context of requests, and the server's spans for traces (see drove-trace).

use axum::http::HeaderMap;
use drove_core::TraceContext;
use drove_trace::{Span, TARGET};

/// The request's `traceparent` (and `tracestate`) headers. A malformed header is ignored, as
/// the W3C asks of a receiver: the request then starts a trace of its own.
pub(crate) fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
    let tp = headers.get("traceparent")?.to_str().ok()?.trim();
    let ts = headers.get("tracestate").and_then(|v| v.to_str().ok());
    match TraceContext::parse("traceparent", tp, "tracestate", ts) {
        Ok(t) => Some(t),
        // A bad tracestate alone does not cost the traceparent.
        Err(_) => TraceContext::parse("traceparent", tp, "tracestate", None).ok(),
    }
}

/// `drove.submit`: a child of the caller's context.
pub(crate) fn submit_span(queue: &str, jobs: usize, parent: Option<&TraceContext>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "drove.submit",
        otel.kind = "producer",
        drove.queue = queue,
        drove.jobs = jobs,
        drove.job.id = tracing::field::Empty,
        drove.deduplicated = tracing::field::Empty,
    );
    drove_trace::set_parent(&span, parent);
    span
}

/// `drove.claim`, the hand-off of jobs a claim took (none for a claim that took nothing): linked
/// to the jobs (their runs are their children).
pub(crate) fn claimed(queue: &str, worker: &str, jobs: &[drove_store::Claimed]) {
    if jobs.is_empty() {
        return;
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "drove.claim",
        otel.kind = "server",
        drove.queue = queue,
        drove.worker = worker,
        drove.jobs = jobs.len(),
    );
    for c in jobs.iter().take(drove_trace::MAX_CLAIM_LINKS) {
        drove_trace::link(&span, c.job.trace.as_ref());
    }
}

/// `drove.finish` of a batch of ends (`POST /v1/jobs/finish`, a claim's `finish`).
pub(crate) fn finish_batch_span(jobs: usize) -> Span {
    tracing::info_span!(target: TARGET, parent: None, "drove.finish", otel.kind = "server", drove.jobs = jobs)
}

/// `drove.finish`: the end of a run, a child of the run's span when the worker sent its context.
pub(crate) fn finish_span(job: &str, outcome: &str, parent: Option<&TraceContext>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "drove.finish",
        otel.kind = "server",
        drove.job.id = job,
        drove.outcome = outcome,
        drove.state = tracing::field::Empty,
    );
    drove_trace::set_parent(&span, parent);
    span
}
