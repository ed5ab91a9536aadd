//! Several `drove serve` nodes on one PostgreSQL schema: every guarantee holds fleet-wide.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_keys_and_waiters_answer_wherever_they_wait() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::new(&url, "p1");
    let nodes: Vec<Server> = (0..3).map(|_| Server::start_pg(&url, &schema.name, &[])).collect();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("executions");
    let cmd = ["sh", "-c", r#"p=$(cat); echo run >> "$EXEC_LOG"; sleep 0.3; echo "$p""#];
    // One worker, on one node only.
    let _w =
        Worker::start_env(&nodes[0].url, "compute", 16, &[], &cmd, &[("EXEC_LOG", log.to_str().unwrap())]);
    let clients: Vec<Http> = nodes.iter().map(|n| Http::new(&n.url)).collect();
    submit_ten_keys_and_wait(&clients, 300).await;
    assert_eq!(read_lines(&log).len(), 10, "exactly one execution per key across three nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_concurrency_one_holds_with_claimers_on_three_nodes() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::new(&url, "groups");
    let nodes: Vec<Server> = (0..3).map(|_| Server::start_pg(&url, &schema.name, &[])).collect();
    let clients: Vec<Http> = nodes.iter().map(|n| Http::new(&n.url)).collect();
    clients[0].put("/v1/queues/rooms", json!({"group_concurrency": 1})).await;
    let jobs: Vec<Value> =
        (0..120).map(|i| json!({"queue": "rooms", "group": format!("room:{}", i % 12)})).collect();
    let (status, _) = clients[1].post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(status, 200);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let violations = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (http, running, violations) =
                (clients[i % 3].clone(), Arc::clone(&running), Arc::clone(&violations));
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    let (_, claimed) = http
                        .post(
                            "/v1/queues/rooms/claim",
                            json!({"worker": format!("w{i}"), "max": 3, "wait_ms": 300}),
                        )
                        .await;
                    let got = claimed["jobs"].as_array().cloned().unwrap_or_default();
                    if got.is_empty() {
                        let (_, q) = http.get("/v1/queues/rooms").await;
                        if q["counts"]["queued"] == 0 && q["counts"]["running"] == 0 {
                            return done;
                        }
                        continue;
                    }
                    for j in &got {
                        let g = j["group"].as_str().unwrap().to_owned();
                        if !running.lock().unwrap().insert(g.clone()) {
                            violations.lock().unwrap().push(g);
                        }
                    }
                    tokio::task::yield_now().await;
                    for j in got {
                        running.lock().unwrap().remove(j["group"].as_str().unwrap());
                        let (s, _) = http
                            .post(
                                &format!("/v1/jobs/{}/complete", j["id"].as_str().unwrap()),
                                json!({"lease": j["lease"]}),
                            )
                            .await;
                        assert_eq!(s, 200);
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(LONG, t).await.expect("claimers finish").unwrap();
    }
    assert_eq!(total, 120);
    assert!(
        violations.lock().unwrap().is_empty(),
        "two running jobs in one group: {:?}",
        violations.lock().unwrap()
    );
}
