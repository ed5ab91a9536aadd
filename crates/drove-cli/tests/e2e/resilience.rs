//! Issue 14: `drove worker` rides out a server outage longer than the lease, stops on a refused
//! token, and reports transient failures; lost runs come back at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;

const LONG: Duration = Duration::from_secs(90);

/// Pages of an export; after each, a durable checkpoint it waits for (DROVE_ACK_FD).
const PAGED_ACKED: &str = r#"
import json, os, sys, time
sys.stdin.read()
cp = os.environ.get("DROVE_CHECKPOINT") or ""
start = json.loads(cp)["page"] + 1 if cp else 1
ack = int(os.environ["DROVE_ACK_FD"])
for page in range(start, 61):
    time.sleep(0.1)  # one page of work
    with open(os.environ["PAGES_LOG"], "a") as f:
        f.write(f"{page} {os.environ['DROVE_ATTEMPT']}\n")
    print("@checkpoint " + json.dumps({"page": page}), flush=True)
    word = os.read(ack, 16).decode().strip()
    if word != "ok":
        sys.exit(3)  # the run is over for this process
print(json.dumps({"pages": 60}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drove_worker_rides_out_a_server_outage_longer_than_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let mut server = Server::start(&db, &[]);
    let port = server.port;
    let proxy = Proxy::start(port).await;
    let http = Http::new(&server.url);
    let script = dir.path().join("paged.py");
    std::fs::write(&script, PAGED_ACKED).unwrap();
    let log = dir.path().join("pages");
    let env = [("PAGES_LOG", log.to_str().unwrap())];
    let _w = Worker::start_env(
        &proxy.url(),
        "export",
        1,
        &["--lease-ms", "3000"],
        &["python3", script.to_str().unwrap()],
        &env,
    );
    let (_, job) = http.post("/v1/jobs", json!({"queue": "export"})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    eventually("a few pages", LONG, || read_lines(&log).len() >= 5).await;
    // The server dies under the running job and comes back on the same port 5.5 s later,
    // longer than the lease.
    server.kill();
    let before = proxy.count();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(5_500)).await; // the outage itself, not a wait for an event
    let during = proxy.count() - before;
    let outage = down.elapsed();
    let server = Server::start_on(&db, port, &[]);
    let http = Http::new(&server.url);
    let done = http.wait_terminal(&id, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"pages": 60}));
    // A few requests a second at most while the server was away, whatever the worker held.
    assert!(during <= 25, "{during} requests in {outage:?} of outage");
    // Every page written, and at most one written twice (the one whose checkpoint the outage
    // swallowed).
    let mut seen = std::collections::HashMap::<i64, usize>::new();
    for l in read_lines(&log) {
        *seen.entry(l.split(' ').next().unwrap().parse().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 60);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2), "pages redone: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_drove_worker_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &["--token", "right"]);
    let mut child = Command::new(BIN)
        .args(["worker", "--server", &server.url, "--queue", "q", "--", "true"])
        .env("DROVE_TOKEN", "wrong")
        .env("DROVE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LONG, "drove worker kept retrying a refused token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_exit_is_retried_fast_without_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    // The queue's own backoff is an hour: only the transient path can retry within the test.
    http.put("/v1/queues/db", json!({"backoff": {"base_ms": 3600000, "max_ms": 3600000}})).await;
    let marks = dir.path().join("marks");
    let script = format!(
        "n=$(wc -l < {m} 2>/dev/null || echo 0); echo x >> {m}; \
         if [ \"$n\" -lt 3 ]; then echo '@transient'; echo 'Deadlock found (1213)' >&2; exit 1; fi; echo '{{\"ok\":true}}'",
        m = marks.display()
    );
    let _w = Worker::start(&server.url, "db", 1, &[], &["sh", "-c", &script]);
    let (_, job) = http.post("/v1/jobs", json!({"queue": "db"})).await;
    let done = http.wait_terminal(job["id"].as_str().unwrap(), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1, "transient failures used no attempt");
    assert_eq!(done["transient_retries"], 3);
    let kinds: Vec<_> = done["errors"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("transient"); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_died_runs_again_at_its_lease_expiry_without_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    // An hour of backoff: were it applied to a lost run, the second run would not come.
    http.put("/v1/queues/slow", json!({"backoff": {"base_ms": 3600000, "max_ms": 3600000}})).await;
    let runs = dir.path().join("runs");
    let script = format!("echo run >> {}; sleep 300", runs.display());
    let mut first = Worker::start(&server.url, "slow", 1, &["--lease-ms", "2000"], &["sh", "-c", &script]);
    let (_, job) = http.post("/v1/jobs", json!({"queue": "slow"})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    eventually("the first run", LONG, || read_lines(&runs).len() == 1).await;
    first.kill();
    // The second worker long-polls; the job comes back at lease expiry.
    let _second = Worker::start(&server.url, "slow", 1, &["--lease-ms", "2000"], &["sh", "-c", &script]);
    eventually("the second run", LONG, || read_lines(&runs).len() == 2).await;
    let (_, j) = http.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(j["attempt"], 2, "the lost run used its attempt");
    assert_eq!(j["errors"][0]["kind"], "lost");
}

/// A checkpoint larger than the server takes: the child hears `refused`, then a small one `ok`.
const REFUSED_CHECKPOINT: &str = r#"
import json, os, sys
sys.stdin.read()
ack = int(os.environ["DROVE_ACK_FD"])
words = []
for cp in ["x" * 4096, "small"]:
    print("@checkpoint " + json.dumps({"cp": cp}), flush=True)
    words.append(os.read(ack, 16).decode().strip())
print(json.dumps({"acks": words}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drove_worker_tells_the_child_a_refused_checkpoint_was_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &["--max-payload", "1024"]);
    let http = Http::new(&server.url);
    let script = dir.path().join("cp.py");
    std::fs::write(&script, REFUSED_CHECKPOINT).unwrap();
    let _w = Worker::start(&server.url, "cp", 1, &[], &["python3", script.to_str().unwrap()]);
    let (_, job) = http.post("/v1/jobs", json!({"queue": "cp"})).await;
    let done = http.wait_terminal(job["id"].as_str().unwrap(), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"acks": ["refused", "ok"]}));
    assert_eq!(done["checkpoint"], json!({"cp": "small"}), "{done}");
}
