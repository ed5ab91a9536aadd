//! One rate limit shared by three nodes (the P3 scenario with real processes has a test binary
//! of its own: tests/p3_provider.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rate_limit_holds_across_three_nodes() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::new(&url, "rate");
    let nodes: Vec<Server> = (0..3).map(|_| Server::start_pg(&url, &schema.name, &[])).collect();
    let clients: Vec<Http> = nodes.iter().map(|n| Http::new(&n.url)).collect();
    let (limit, burst) = (20usize, 5usize);
    clients[0]
        .put("/v1/queues/api", json!({"rate": {"limit": limit, "period_ms": 1000, "burst": burst}}))
        .await;
    let jobs: Vec<Value> = (0..150).map(|i| json!({"queue": "api", "payload": i})).collect();
    clients[1].post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    let starts: Arc<Mutex<Vec<i64>>> = Arc::default();
    let tasks: Vec<_> = (0..9)
        .map(|i| {
            let (http, starts) = (clients[i % 3].clone(), Arc::clone(&starts));
            tokio::spawn(async move {
                loop {
                    let (_, claimed) = http
                        .post(
                            "/v1/queues/api/claim",
                            json!({"worker": format!("w{i}"), "max": 10, "wait_ms": 500}),
                        )
                        .await;
                    let got = claimed["jobs"].as_array().cloned().unwrap_or_default();
                    for j in &got {
                        let at =
                            drove_core::Millis::parse_rfc3339(j["started_at"].as_str().unwrap()).unwrap();
                        starts.lock().unwrap().push(at.0);
                        http.post(
                            &format!("/v1/jobs/{}/complete", j["id"].as_str().unwrap()),
                            json!({"lease": j["lease"]}),
                        )
                        .await;
                    }
                    if got.is_empty() && starts.lock().unwrap().len() >= 150 {
                        return;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.expect("claimers finish").unwrap();
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort_unstable();
    assert_eq!(starts.len(), 150);
    let mut worst = 0;
    for (i, s) in starts.iter().enumerate() {
        worst = worst.max(starts[i..].iter().take_while(|t| **t < s + 1000).count());
    }
    assert!(
        worst <= limit + burst,
        "{worst} starts in one second across the nodes (limit {limit} + burst {burst})"
    );
}
