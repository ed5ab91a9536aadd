//! End to end: a real `drove serve` on port 0, real `drove worker` processes running real
//! child commands, real HTTP. The P1 and P5 scenarios of docs/PROBLEMS.md over HTTP, crashes of
//! workers and of the server, cancellation reaching a child, graceful shutdowns, and a fuzz
//! pass over the request surface.

mod flow;
mod hardening;
mod lineage;
mod multinode;
mod resilience;
mod support;
mod tls;
mod traces;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const LONG: Duration = Duration::from_secs(60);

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_five_hundred_http_submitters_of_ten_keys_run_ten_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let log = dir.path().join("executions");
    let cmd = sh(r#"p=$(cat); echo run >> "$EXEC_LOG"; sleep 0.3; echo "$p""#);
    let _w = Worker::start_env(
        &server.url,
        "compute",
        16,
        &[],
        &strs(&cmd),
        &[("EXEC_LOG", log.to_str().unwrap())],
    );
    submit_ten_keys_and_wait(&[Http::new(&server.url)], 500).await;
    assert_eq!(read_lines(&log).len(), 10, "exactly one execution per key");
}

const PAGED: &str = r#"
import json, os, sys, time
with open(os.environ["PID_LOG"], "a") as f:
    f.write(f"{os.getpid()}\n")
sys.stdin.read()
cp = os.environ.get("DROVE_CHECKPOINT") or ""
start = json.loads(cp)["page"] + 1 if cp else 1
attempt = os.environ["DROVE_ATTEMPT"]
for page in range(start, 21):
    time.sleep(0.1)  # one slow page of work
    with open(os.environ["PAGES_LOG"], "a") as f:
        f.write(f"{page} {attempt}\n")
    print(f"@progress {page} 20 page {page}", flush=True)
    print("@checkpoint " + json.dumps({"page": page}), flush=True)
print(json.dumps({"pages": 20}))
"#;

fn pages(log: &std::path::Path) -> Vec<(i64, i64)> {
    read_lines(log)
        .iter()
        .map(|l| {
            let mut it = l.split(' ').map(|x| x.parse().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_paged_job_survives_two_worker_kills_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    http.put("/v1/queues/export", json!({"lease_ms": 1000, "backoff": {"base_ms": 0, "max_ms": 0}})).await;
    let script = dir.path().join("paged.py");
    std::fs::write(&script, PAGED).unwrap();
    let (log, pids) = (dir.path().join("pages"), dir.path().join("pids"));
    let env = [("PAGES_LOG", log.to_str().unwrap()), ("PID_LOG", pids.to_str().unwrap())];
    let cmd = ["python3", script.to_str().unwrap()];
    let (_, job) = http.post("/v1/jobs", json!({"queue": "export", "payload": {"table": "orders"}})).await;
    let id = job["id"].as_str().unwrap().to_owned();

    let mut checkpoints = Vec::new();
    for (round, stop_after) in [(1, 5usize), (2, 4)] {
        let mut w = Worker::start_env(&server.url, "export", 1, &[], &cmd, &env);
        let before = pages(&log).len();
        eventually("pages to be done", LONG, || pages(&log).len() >= before + stop_after).await;
        w.kill(); // SIGKILL, mid-job
        // The child dies with its worker.
        let child: i32 = read_lines(&pids).last().unwrap().parse().unwrap();
        eventually("the child to die with its worker", LONG, || !process_alive(child)).await;
        let (_, j) = http.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(j["state"], "running", "round {round}: {j}");
        checkpoints.push(j["checkpoint"]["page"].as_i64().expect("a durable checkpoint"));
    }
    let _w = Worker::start_env(&server.url, "export", 1, &[], &cmd, &env);
    let done = http.wait_terminal(&id, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 3, "two lost leases, each used an attempt");
    assert_eq!(done["progress"]["done"], 20);
    assert_eq!(done["result"], json!({"pages": 20}));
    let log = pages(&log);
    let first_of = |attempt: i64| log.iter().find(|(_, a)| *a == attempt).map(|(p, _)| *p).unwrap();
    let last_of = |attempt: i64| log.iter().filter(|(_, a)| *a == attempt).map(|(p, _)| *p).max().unwrap();
    assert_eq!(first_of(1), 1);
    // `checkpoints` holds what was durable when the test looked, right after the kill. A
    // heartbeat the worker had already sent may still land after that (its lease is still
    // valid), so the next run resumes at that checkpoint or a later one the killed run
    // reached, never earlier and never past the last page it did.
    for (attempt, seen) in [(2, checkpoints[0]), (3, checkpoints[1])] {
        let resumed_after = first_of(attempt) - 1;
        assert!(
            seen <= resumed_after && resumed_after <= last_of(attempt - 1),
            "run {attempt} resumed after page {resumed_after}; durable checkpoint was {seen}, \
             run {} reached page {}",
            attempt - 1,
            last_of(attempt - 1)
        );
        // A page at or before the checkpoint it resumed from is never done again by a later run.
        for p in 1..=resumed_after {
            let later = log.iter().filter(|(page, a)| *page == p && *a >= attempt).count();
            assert_eq!(
                later, 0,
                "page {p} redone by run {attempt} or later after checkpoint {resumed_after}"
            );
        }
    }
    let all: std::collections::BTreeSet<i64> = log.iter().map(|(p, _)| *p).collect();
    assert_eq!(all, (1..=20).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_job_completes_across_a_server_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let mut server = Server::start(&db, &[]);
    let http = Http::new(&server.url);
    http.put("/v1/queues/k", json!({"lease_ms": 1000, "backoff": {"base_ms": 0, "max_ms": 0}})).await;
    let cmd = sh(r#"cat > /dev/null; sleep 0.02; echo '"ok"'"#);
    let _w = Worker::start(&server.url, "k", 8, &[], &strs(&cmd));
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let jobs: Vec<Value> = (0..100).map(|i| json!({"queue": "k", "payload": chunk * 100 + i})).collect();
        let (status, out) = http.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
        assert_eq!(status, 200);
        ids.extend(out["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
    }
    // Kill the server mid-run, once some jobs are done and many are not.
    let mut done = 0;
    while done < 20 {
        let (_, q) = http.get("/v1/queues/k").await;
        done = q["counts"]["succeeded"].as_i64().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let port = server.port;
    let server = Server::start_on(&db, port, &[]);
    let http = Http::new(&server.url);
    for id in &ids {
        let job = http.wait_terminal(id, LONG).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    http.put("/v1/queues/c", json!({"lease_ms": 1500})).await;
    let (term, pids) = (dir.path().join("term"), dir.path().join("pids"));
    let cmd = sh(
        r#"trap 'echo TERM >> "$TERM_LOG"; exit 143' TERM; echo $$ >> "$PID_LOG"; while :; do sleep 0.05; done"#,
    );
    let _w = Worker::start_env(
        &server.url,
        "c",
        1,
        &[],
        &strs(&cmd),
        &[("TERM_LOG", term.to_str().unwrap()), ("PID_LOG", pids.to_str().unwrap())],
    );
    let (_, job) = http.post("/v1/jobs", json!({"queue": "c"})).await;
    let id = job["id"].as_str().unwrap();
    eventually("the child to start", LONG, || !read_lines(&pids).is_empty()).await;
    let (status, marked) = http.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(marked["cancel_requested"], true);
    let done = http.wait_terminal(id, LONG).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(read_lines(&term), vec!["TERM"], "the child got SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_throttles_delays_groups_and_reuse_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    // Retries with backoff: fails twice, then succeeds on attempt 3.
    http.put("/v1/queues/flaky", json!({"backoff": {"base_ms": 50, "max_ms": 100}})).await;
    let flaky = sh(
        r#"cat >/dev/null; if [ "$DROVE_ATTEMPT" -lt 3 ]; then echo "flaky $DROVE_ATTEMPT" >&2; exit 1; fi; echo '"third time"'"#,
    );
    let _w1 = Worker::start(&server.url, "flaky", 2, &[], &strs(&flaky));
    let (_, j) = http.post("/v1/jobs?wait=60s", json!({"queue": "flaky"})).await;
    let j = http.wait_terminal(j["id"].as_str().unwrap(), LONG).await;
    assert_eq!((j["state"].as_str(), j["attempt"].as_i64()), (Some("succeeded"), Some(3)), "{j}");
    assert_eq!(j["result"], "third time");
    assert_eq!(j["error"]["kind"], "retryable");
    assert!(j["error"]["message"].as_str().unwrap().contains("flaky 2"), "{j}");

    // Throttled (exit 75 with @retry-after): run again without using an attempt.
    let marker = dir.path().join("throttled-once");
    let throttle = sh(
        r#"cat >/dev/null; if [ ! -e "$MARK" ]; then touch "$MARK"; echo "@retry-after 100"; exit 75; fi; echo '"served"'"#,
    );
    let _w2 = Worker::start_env(
        &server.url,
        "provider",
        1,
        &[],
        &strs(&throttle),
        &[("MARK", marker.to_str().unwrap())],
    );
    let (_, j) = http.post("/v1/jobs", json!({"queue": "provider"})).await;
    let j = http.wait_terminal(j["id"].as_str().unwrap(), LONG).await;
    assert_eq!((j["state"].as_str(), j["attempt"].as_i64()), (Some("succeeded"), Some(1)), "{j}");
    assert_eq!(j["error"]["kind"], "throttled");

    // Delayed: not started before run_at.
    let quick = sh(r#"cat; echo"#);
    let _w3 = Worker::start(&server.url, "later", 2, &[], &strs(&quick));
    let (_, j) = http.post("/v1/jobs", json!({"queue": "later", "payload": 1, "delay_ms": 400})).await;
    assert_eq!(j["state"], "scheduled");
    let j = http.wait_terminal(j["id"].as_str().unwrap(), LONG).await;
    let ms = |k: &str| drove_core::Millis::parse_rfc3339(j[k].as_str().unwrap()).unwrap();
    assert!(ms("started_at") >= ms("run_at"), "{j}");
    assert!(ms("run_at").since(ms("created_at")) >= 400);

    // Groups: group_concurrency 1 runs each group's jobs one at a time.
    http.put("/v1/queues/rooms", json!({"group_concurrency": 1})).await;
    let logs = dir.path().join("rooms");
    std::fs::create_dir(&logs).unwrap();
    let room = sh(r#"g=$(cat); echo S >> "$LOGS/$g"; sleep 0.05; echo E >> "$LOGS/$g"; echo '"joined"'"#);
    let _w4 =
        Worker::start_env(&server.url, "rooms", 4, &[], &strs(&room), &[("LOGS", logs.to_str().unwrap())]);
    let jobs: Vec<Value> = (0..8)
        .map(|i| json!({"queue": "rooms", "group": format!("room:{}", i % 2), "payload": i % 2}))
        .collect();
    let (_, out) = http.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    for j in out["jobs"].as_array().unwrap() {
        http.wait_terminal(j["id"].as_str().unwrap(), LONG).await;
    }
    for g in ["0", "1"] {
        let seq = read_lines(&logs.join(g)).join("");
        assert_eq!(seq, "SESESESE", "group {g} ran two jobs at once");
    }

    // Reuse: a recent success is returned, not recomputed.
    let runs = dir.path().join("reuse-runs");
    let cached = sh(r#"cat >/dev/null; echo x >> "$RUNS"; echo '{"answer": 42}'"#);
    let _w5 =
        Worker::start_env(&server.url, "cache", 1, &[], &strs(&cached), &[("RUNS", runs.to_str().unwrap())]);
    let body = json!({"queue": "cache", "key": "answer", "reuse_for_ms": 60000});
    let (s1, a) = http.post("/v1/jobs?wait=60s", body.clone()).await;
    let (s2, b) = http.post("/v1/jobs?wait=60s", body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(b["deduplicated"], true);
    assert_eq!((a["id"].clone(), b["result"].clone()), (b["id"].clone(), json!({"answer": 42})));
    assert_eq!(read_lines(&runs).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_by_server_and_used_by_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &["--token", "t0ken"]);
    let mut http = Http::new(&server.url);
    let (status, body) = http.post("/v1/jobs", json!({"queue": "a"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(http.get("/healthz").await.0, 200);
    http.token = Some("t0ken".into());
    let cmd = sh(r#"cat; echo"#);
    let _w = Worker::start_env(&server.url, "a", 1, &[], &strs(&cmd), &[("DROVE_TOKEN", "t0ken")]);
    let (status, j) = http.post("/v1/jobs?wait=60s", json!({"queue": "a", "payload": "secret work"})).await;
    assert_eq!(status, 201, "{j}");
    assert_eq!(j["result"], "secret work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_pending_waits_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let h = http.clone();
    let pending = tokio::spawn(async move { h.post("/v1/jobs?wait=60s", json!({"queue": "nobody"})).await });
    let mut stored = false;
    while !stored {
        let (s, q) = http.get("/v1/queues/nobody").await;
        stored = s == 200 && q["counts"]["queued"] == 1;
    }
    let status = server.terminate();
    let (code, job) = pending.await.unwrap();
    assert_eq!(code, 202, "{job}");
    assert_eq!(job["state"], "queued");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigterm_releases_jobs_still_running_after_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let pids = dir.path().join("pids");
    let slow = sh(r#"echo $$ >> "$PID_LOG"; cat >/dev/null; sleep 30"#);
    let mut w = Worker::start_env(
        &server.url,
        "q",
        1,
        &["--grace-ms", "200", "--kill-grace-ms", "200"],
        &strs(&slow),
        &[("PID_LOG", pids.to_str().unwrap())],
    );
    let (_, job) = http.post("/v1/jobs", json!({"queue": "q", "payload": 1})).await;
    let id = job["id"].as_str().unwrap();
    eventually("the child to start", LONG, || !read_lines(&pids).is_empty()).await;
    let status = w.terminate();
    assert!(status.success(), "{status:?}");
    let child: i32 = read_lines(&pids)[0].parse().unwrap();
    assert!(!process_alive(child), "the child was stopped");
    let (_, j) = http.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(j["state"], "queued", "released, not left to expire: {j}");
    let quick = sh(r#"cat; echo"#);
    let _w2 = Worker::start(&server.url, "q", 1, &[], &strs(&quick));
    let j = http.wait_terminal(id, LONG).await;
    assert_eq!((j["state"].as_str(), j["attempt"].as_i64()), (Some("succeeded"), Some(1)), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_never_get_a_5xx_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &["--max-payload", "4096"]);
    let http = Http::new(&server.url);
    let (_, job) = http.post("/v1/jobs", json!({"queue": "f", "key": "k"})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut rng = fastrand::Rng::with_seed(0xD20E);
    let paths = [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/finish",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/heartbeat",
        "/v1/jobs/{id}/complete",
        "/v1/jobs/{id}/fail",
        "/v1/jobs/{id}/release",
        "/v1/queues",
        "/v1/queues/{name}",
        "/v1/queues/{name}/claim",
        "/v1/pools/{name}",
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
        "/{junk}",
        "/v1/{junk}/{junk}",
    ];
    let seeds = [
        json!({"queue": "f", "payload": {"a": [1, 2, {"b": null}]}, "key": "k", "group": "g", "priority": 3, "delay_ms": 5}),
        json!({"jobs": [{"queue": "f"}, {"queue": "g", "run_at": "2030-01-01T00:00:00Z"}]}),
        json!({"worker": "w", "max": 3, "wait_ms": 0, "lease_ms": 1000}),
        json!({"lease": "1", "progress": {"done": 1, "total": 2}, "checkpoint": {"p": 1}}),
        json!({"lease": "1", "error": {"message": "m", "kind": "throttled"}, "retry_after_ms": 10}),
        json!({"concurrency": 2, "rate": {"limit": 5, "period_ms": 1000, "burst": 2}, "paused": false}),
    ];
    let junk = [
        "",
        "%",
        "%ff",
        "..",
        "0",
        "-1",
        "99999999999999999999999",
        "a b",
        "é",
        "null",
        "%00",
        "x".repeat(300).leak(),
    ];
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ];
    let mut count_by_status: HashMap<u16, usize> = HashMap::new();
    for _ in 0..1500 {
        let mut path = paths[rng.usize(..paths.len())].to_owned();
        let seg = |rng: &mut fastrand::Rng| -> String {
            match rng.u8(..4) {
                0 => id.clone(),
                1 => junk[rng.usize(..junk.len())].to_owned(),
                2 => format!("q{}", rng.u8(..3)),
                _ => rng.i64(..).to_string(),
            }
        };
        for ph in ["{id}", "{name}", "{junk}", "{junk}"] {
            if path.contains(ph) {
                path = path.replacen(ph, &seg(&mut rng), 1);
            }
        }
        if rng.bool() {
            let q = [
                "wait=1ms",
                "wait=abc",
                "wait=99m",
                "limit=0",
                "limit=5",
                "cursor=zz",
                "cursor=c1ff",
                "state=queued",
                "state=nope",
                "queue=f&key=k",
                "&&==",
                "wait=0",
            ];
            path = format!("{path}?{}", q[rng.usize(..q.len())]);
        }
        let body: Vec<u8> = match rng.u8(..5) {
            0 => Vec::new(),
            1 => (0..rng.usize(..200)).map(|_| rng.u8(..)).collect(),
            2 => {
                let mut v = seeds[rng.usize(..seeds.len())].clone();
                mutate(&mut v, &mut rng);
                serde_json::to_vec(&v).unwrap()
            }
            3 => {
                let mut t = serde_json::to_vec(&seeds[rng.usize(..seeds.len())]).unwrap();
                let cut = rng.usize(..=t.len());
                t.truncate(cut);
                t
            }
            _ => format!("{{\"payload\": \"{}\", \"queue\": \"f\"}}", "x".repeat(rng.usize(..10_000)))
                .into_bytes(),
        };
        let method = methods[rng.usize(..methods.len())].clone();
        let resp = http
            .client
            .request(method.clone(), format!("{}{path}", server.url))
            .body(body.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let resp = resp.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(status < 500, "{method} {path} body {:?} -> {status} {text}", String::from_utf8_lossy(&body));
        if status >= 400 {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: error not JSON: {text}"));
            assert!(v["error"]["code"].is_string(), "{text}");
        }
        *count_by_status.entry(status).or_default() += 1;
    }
    assert_eq!(http.get("/healthz").await.0, 200, "the server still answers");
    assert!(count_by_status.len() >= 5, "the fuzz reached several outcomes: {count_by_status:?}");
}

/// Replaces or perturbs a random part of a JSON value.
fn mutate(v: &mut Value, rng: &mut fastrand::Rng) {
    let replacement = || -> Value {
        match fastrand::u8(..8) {
            0 => Value::Null,
            1 => json!(-1),
            2 => json!(i64::MAX),
            3 => json!(1.5),
            4 => json!("\u{0}\u{1}<script>"),
            5 => json!([]),
            6 => json!({"nested": {"deep": [1, {"x": "y"}]}}),
            _ => json!(true),
        }
    };
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = &keys[rng.usize(..keys.len())];
            if rng.bool() {
                map.insert(k.clone(), replacement());
            } else {
                mutate(map.get_mut(k).unwrap(), rng);
            }
            if rng.u8(..5) == 0 {
                map.insert("unexpected".into(), replacement());
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.usize(..items.len());
            mutate(&mut items[i], rng);
        }
        other => *other = replacement(),
    }
}
