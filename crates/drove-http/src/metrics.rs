//! `/metrics` in Prometheus text.
//!
//! Counters and histograms are recorded where the work happens (the engine: submits, claims,
//! ends of runs; the store: commit latency and batch size; this crate: requests by route and
//! status) through the `metrics` facade. Gauges of state shared by every node (jobs per queue
//! and state, the limit in force) are read from the store at scrape time, so any node reports
//! the same picture.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drove_core::JobState;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::error::ApiError;

/// The process's Prometheus recorder, installed on first use (the `metrics` facade has one
/// global recorder per process).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("drove_claim_batch_size".into()), &sizes)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("drove_store_batch_writes".into()), &sizes)
                })
                .expect("static bucket lists are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a host program's): then this handle
            // renders only what is recorded through it, which is still a valid page.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts requests by route (the matched pattern, never the raw path) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("drove_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("drove_http_request_seconds", "route" => route).record(start.elapsed().as_secs_f64());
    resp
}

/// GET /metrics
pub async fn render(State(st): State<AppState>) -> Result<Response, ApiError> {
    let handle = st.metrics.clone().unwrap_or_else(install);
    let queues = st.engine.store().list_queues(drove_engine::now()).await?;
    for q in &queues {
        for state in JobState::ALL {
            metrics::gauge!("drove_queue_jobs", "queue" => q.name.clone(), "state" => state.as_str())
                .set(q.counts.get(state) as f64);
        }
        match q.limit_now {
            Some(l) => metrics::gauge!("drove_queue_limit", "queue" => q.name.clone()).set(l as f64),
            None => metrics::gauge!("drove_queue_limit", "queue" => q.name.clone()).set(f64::NAN),
        }
        // The rate in force (learned beneath the configured one), starts per second.
        metrics::gauge!("drove_queue_rate", "queue" => q.name.clone()).set(q.rate_now.unwrap_or(f64::NAN));
        metrics::gauge!("drove_queue_paused", "queue" => q.name.clone())
            .set(f64::from(u8::from(q.config.is_paused())));
    }
    metrics::gauge!("drove_waiting_jobs_watched").set(st.engine.store().hub().watched_jobs() as f64);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}
