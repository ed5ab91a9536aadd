//! Issue 17 the way users run it: a real `drove serve`, worker processes that get SIGKILLed,
//! schedules ticking on the server's own clock, dependencies and follow-ups over HTTP.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::support::*;

const LONG: Duration = Duration::from_secs(120);

/// The hidden HTTP worker of `drove bench` in its own process (no child command per job, so
/// ten thousand jobs cost no ten thousand forks): completes each job with its payload.
fn bench_worker(url: &str, queue: &str, log: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["bench-worker", "--server", url, "--queue", queue, "--concurrency", "32", "--log"])
        .arg(log)
        .env("DROVE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start drove bench-worker")
}

async fn claim_one(http: &Http, queue: &str) -> Value {
    let (s, v) =
        http.post(&format!("/v1/queues/{queue}/claim"), json!({"worker": "test", "wait_ms": 20000})).await;
    assert_eq!(s, 200, "{v}");
    v["jobs"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_children_with_killed_workers_fan_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    // Short leases, so the runs of a killed worker come back soon.
    let (s, _) = http.put("/v1/queues/pages", json!({"lease_ms": 2000})).await;
    assert_eq!(s, 200);
    let (_, parent) = http.post("/v1/jobs", json!({"queue": "report", "payload": {"pages": 10000}})).await;
    let id = parent["id"].as_str().unwrap().to_owned();
    // The parent's first run fans out: 10,000 children in two batch calls, then waits for them.
    let run = claim_one(&http, "report").await;
    assert_eq!(run["id"], id.as_str());
    for half in 0..2 {
        let jobs: Vec<Value> =
            (0..5000).map(|i| json!({"queue": "pages", "parent": id, "payload": half * 5000 + i})).collect();
        let (s, v) = http.post("/v1/jobs/batch", json!({"jobs": jobs})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = http
        .post(&format!("/v1/jobs/{id}/complete"), json!({"lease": run["lease"], "await_children": true}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "waiting");
    assert_eq!(v["waiting_for"], "children");
    // Two workers; one is SIGKILLed mid-way and replaced, twice.
    let log = dir.path().join("runs");
    let mut a = bench_worker(&server.url, "pages", &log);
    let mut b = bench_worker(&server.url, "pages", &log);
    for round in 1..=2 {
        let before = read_lines(&log).len();
        eventually("children running", LONG, || read_lines(&log).len() > before + 1500).await;
        let victim = if round == 1 { &mut a } else { &mut b };
        let _ = victim.kill();
        let _ = victim.wait();
        *victim = bench_worker(&server.url, "pages", &log);
    }
    // The parent's fan-in: queued once the last child ended; it sees every child's result.
    let fan_in = claim_one(&http, "report").await;
    assert_eq!(fan_in["id"], id.as_str(), "{fan_in}");
    assert_eq!(fan_in["fan_in"], true);
    assert_eq!(fan_in["attempt"], 1, "the fan-in used no attempt");
    assert_eq!(
        fan_in["children"],
        json!({"total": 10000, "succeeded": 10000, "partial": 0, "failed": 0, "cancelled": 0})
    );
    let mut seen = vec![false; 10_000];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?parent={id}&limit=1000&cursor={c}"),
            None => format!("/v1/jobs?parent={id}&limit=1000"),
        };
        let (s, page) = http.get(&path).await;
        assert_eq!(s, 200, "{page}");
        for j in page["jobs"].as_array().unwrap() {
            assert_eq!(j["state"], "succeeded");
            assert_eq!(j["parent"], id.as_str());
            let n = j["payload"].as_u64().unwrap() as usize;
            assert!(!seen[n], "child {n} listed twice");
            seen[n] = true;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(seen.iter().all(|s| *s), "every child's result is readable by its parent");
    let (s, done) = http
        .post(&format!("/v1/jobs/{id}/complete"), json!({"lease": fan_in["lease"], "result": "report"}))
        .await;
    assert_eq!((s, done["state"].as_str()), (200, Some("succeeded")));
    // The fan-in ran once: nothing of the parent's queue is left to claim.
    let (_, none) = http.post("/v1/queues/report/claim", json!({"wait_ms": 0})).await;
    assert_eq!(none["jobs"], json!([]));
    // The operation, from its counts: every child succeeded.
    let (_, q) = http.get("/v1/queues/pages").await;
    assert_eq!(q["counts"]["succeeded"], 10000);
    for mut w in [a, b] {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_ticks_on_the_server_and_its_jobs_run_on_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let log = dir.path().join("ticks");
    let _w = Worker::start_env(
        &server.url,
        "beats",
        2,
        &[],
        &["sh", "-c", r#"cat >> "$TICKS"; echo >> "$TICKS"; echo '"ok"'"#],
        &[("TICKS", log.to_str().unwrap())],
    );
    let (s, v) = http
        .put(
            "/v1/schedules/beat",
            json!({"cron": "@every 1s", "queue": "beats", "payload": {"from": "schedule"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    eventually("three ticks run by the worker", LONG, || {
        read_lines(&log).iter().filter(|l| l.contains("schedule")).count() >= 3
    })
    .await;
    let (_, sched) = http.get("/v1/schedules/beat").await;
    let last = sched["last_job"].as_str().expect("a last job").to_owned();
    // Every tick's job started at its tick: run_at is a whole second.
    let (_, job) = http.get(&format!("/v1/jobs/{last}")).await;
    assert!(job["run_at"].as_str().unwrap().ends_with(".000Z"), "{job}");
    // Paused: nothing more; the CLI reads the same schedule.
    let (s, v) =
        http.send(reqwest::Method::PATCH, "/v1/schedules/beat", Some(&json!({"paused": true}))).await;
    assert_eq!((s, v["paused"].as_bool()), (200, Some(true)), "{v}");
    let out = Command::new(BIN).args(["schedule", "list", "--server", &server.url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("beat") && text.contains("true"), "{text}");
    let out = Command::new(BIN).args(["schedule", "run", "beat", "--server", &server.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ran: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ran["queue"], "beats");
    let (s, _) = http.send(reqwest::Method::DELETE, "/v1/schedules/beat", None).await;
    assert_eq!(s, 204);
    let (s, v) = http.put("/v1/schedules/bad", json!({"cron": "61 * * * *", "queue": "beats"})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("cron")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_dependencies_and_follow_ups_run_in_order_across_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let log = dir.path().join("order");
    let env = [("ORDER", log.to_str().unwrap())];
    let cmd = ["sh", "-c", r#"p=$(cat); echo "$p" >> "$ORDER"; sleep 0.05; echo "$p""#];
    let mut w = Worker::start_env(&server.url, "steps", 1, &[], &cmd, &env);
    // A chain of 20: each step depends on the one before.
    let mut prev: Option<String> = None;
    let mut last = String::new();
    for i in 0..20 {
        let mut body = json!({"queue": "steps", "payload": i});
        if let Some(p) = &prev {
            body["depends_on"] = json!([p]);
        }
        let (s, v) = http.post("/v1/jobs", body).await;
        assert_eq!(s, 201, "{v}");
        last = v["id"].as_str().unwrap().to_owned();
        prev = Some(last.clone());
    }
    eventually("half the chain", LONG, || read_lines(&log).len() >= 10).await;
    w.kill();
    let mut w = Worker::start_env(&server.url, "steps", 4, &[], &cmd, &env);
    let done = http.wait_terminal(&last, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let mut order: Vec<i64> = read_lines(&log).iter().map(|l| l.parse().unwrap()).collect();
    order.dedup(); // a step the kill interrupted ran again
    assert_eq!(order, (0..20).collect::<Vec<_>>(), "each step after the one it depends on");
    w.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_follow_ups_during_one_run_make_one_more_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let log = dir.path().join("runs");
    let started = dir.path().join("started");
    let cmd = [
        "sh",
        "-c",
        r#"p=$(cat); echo "start $p" >> "$RUNS"; touch "$STARTED"; sleep 1; echo "end $p" >> "$RUNS"; echo "$p""#,
    ];
    let _w = Worker::start_env(
        &server.url,
        "sync",
        4,
        &[],
        &cmd,
        &[("RUNS", log.to_str().unwrap()), ("STARTED", started.to_str().unwrap())],
    );
    let body =
        |n: i64| json!({"queue": "sync", "key": "account:7", "payload": n, "on_conflict": "follow_up"});
    let (_, first) = http.post("/v1/jobs", body(0)).await;
    eventually("the first run started", LONG, || started.exists()).await;
    let tasks: Vec<_> = (1..=200)
        .map(|n| {
            let http = http.clone();
            tokio::spawn(async move { http.post("/v1/jobs", body(n)).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert!(s == 200 || s == 201, "{s} {v}");
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every follow-up answered the one successor");
    let next = ids.into_iter().next().unwrap();
    assert_ne!(next, first["id"].as_str().unwrap());
    let done = http.wait_terminal(&next, LONG).await;
    assert_eq!(done["state"], "succeeded");
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 4, "two runs: {lines:?}");
    assert_eq!(lines[0], "start 0");
    assert_eq!(lines[1], "end 0", "the follow-up started after the first run ended: {lines:?}");
    assert!(lines[2].starts_with("start ") && lines[2] != "start 0");
    assert_eq!(
        done["result"].to_string(),
        lines[2].trim_start_matches("start "),
        "the newest payload it was given"
    );
}
