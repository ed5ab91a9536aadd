//! P3 of docs/PROBLEMS.md with real processes: a provider that rejects more than R calls per
//! second (GCRA, burst 10, like scenario B's in docs/FLOW.md §5.1) or more than C at once, and
//! 2,000 jobs through `drove worker` children calling it with curl. The queue states the
//! provider's limits; no call may be rejected and the calls must reach at least 0.9 R.
//!
//! Its own test binary, so no other test's processes run beside it: the children's start
//! times are part of what is measured.

#[path = "e2e/support.rs"]
#[allow(dead_code)] // shared with the e2e binary, which uses the rest
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::*;

/// A provider that rejects (429) a call beyond its rate (GCRA at `rate` per second with a burst
/// of 10, like scenario B's provider in docs/FLOW.md §5.1) or beyond `concurrency` at once; each
/// accepted call takes 20 ms.
#[derive(Default)]
struct Provider {
    rate: usize,
    concurrency: usize,
    in_flight: AtomicUsize,
    tat_us: Mutex<Option<i64>>,
    all_accepted: Mutex<Vec<Instant>>,
    rejected_rate: AtomicUsize,
    rejected_concurrency: AtomicUsize,
}

async fn call(State(p): State<Arc<Provider>>) -> StatusCode {
    let now_in = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let verdict = {
        let mut tat = p.tat_us.lock().unwrap();
        let rate = drove_core::RateLimit {
            limit: p.rate as i64,
            period_ms: 1000,
            burst: Some(10),
            learn: None,
            auto: false,
            per: None,
        };
        let now_us = drove_engine::now().0 * 1000;
        let grant = drove_core::gcra::take(&rate, *tat, now_us, 1);
        if now_in > p.concurrency {
            p.rejected_concurrency.fetch_add(1, Ordering::SeqCst);
            StatusCode::TOO_MANY_REQUESTS
        } else if grant.granted == 0 {
            p.rejected_rate.fetch_add(1, Ordering::SeqCst);
            StatusCode::TOO_MANY_REQUESTS
        } else {
            *tat = Some(grant.tat_us);
            p.all_accepted.lock().unwrap().push(Instant::now());
            StatusCode::OK
        }
    };
    if verdict == StatusCode::OK {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.in_flight.fetch_sub(1, Ordering::SeqCst);
    verdict
}

async fn start_provider(rate: usize, concurrency: usize) -> (Arc<Provider>, String) {
    let provider = Arc::new(Provider { rate, concurrency, ..Default::default() });
    let app = axum::Router::new().route("/call", axum::routing::get(call)).with_state(Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (provider, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_a_rate_and_concurrency_limited_provider_sees_no_rejected_call() {
    // 16 at once: each job holds a slot for its whole child process (sh + curl + report,
    // ~100 ms on this machine), so fewer slots would cap throughput below the rate.
    // R = 50/s: a 20 ms slot leaves a claim's round trip and commit room even on a busy
    // machine (at 100/s they ate a large share of a 10 ms slot when other tests ran beside).
    let (rate, concurrency) = (50usize, 16usize);
    let (provider, provider_url) = start_provider(rate, concurrency).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    // The queue states the provider's published limits: the rate a little under R (a job's call
    // comes a few milliseconds after its start), with a small burst so that a claim arriving a
    // commit late does not lose its slot (GCRA with burst 1 restarts from "now").
    let rate_limit = json!({"limit": 48, "period_ms": 1000, "burst": 3});
    let (s, q) = http.put("/v1/queues/dns", json!({"rate": rate_limit, "concurrency": concurrency})).await;
    assert_eq!(s, 200, "{q}");
    let script = r#"cat >/dev/null; code=$(curl -s -o /dev/null -w '%{http_code}' "$PROVIDER/call"); [ "$code" = 200 ] && { echo '"ok"'; exit 0; }; [ "$code" = 429 ] && exit 75; exit 1"#;
    // More worker slots than the provider allows: the queue's limits, not the worker, hold.
    let _w =
        Worker::start_env(&server.url, "dns", 16, &[], &["sh", "-c", script], &[("PROVIDER", &provider_url)]);
    let mut ids = Vec::new();
    for chunk in 0..2 {
        let jobs: Vec<Value> =
            (0..1000).map(|i| json!({"queue": "dns", "payload": chunk * 1000 + i})).collect();
        let (_, out) = http.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
        ids.extend(out["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
    }
    for id in &ids {
        let job = http.wait_terminal(id, Duration::from_secs(180)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let rejected =
        (provider.rejected_rate.load(Ordering::SeqCst), provider.rejected_concurrency.load(Ordering::SeqCst));
    assert_eq!(rejected, (0, 0), "the provider rejected calls (over its rate, over its concurrency)");
    let accepted = provider.all_accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 2000);
    let span = accepted.last().unwrap().duration_since(accepted[0]).as_secs_f64();
    let achieved = (accepted.len() - 1) as f64 / span;
    assert!(achieved >= 0.9 * rate as f64, "{achieved:.1} calls/s, below 0.9 R");
}
