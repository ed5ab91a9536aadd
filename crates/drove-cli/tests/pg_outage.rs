//! A PostgreSQL outage in the middle of a run of 2,000 jobs: while the database is down the
//! server says so (/readyz 503, requests 503), nothing acknowledged is lost, work resumes by
//! itself, and only jobs in flight at the outage run twice.
//!
//! Its own test binary: it stops and starts the machine's PostgreSQL, so nothing else may run
//! beside it (cargo runs test binaries one after another).

#[path = "e2e/support.rs"]
#[allow(dead_code)] // shared with the e2e binary, which uses the rest
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Starts PostgreSQL again however the test ends.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        pg_ctl("start");
    }
}

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster in /etc/postgresql");
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", &version, "main", action])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    no_inherited_fds(&mut cmd);
    let status = cmd.status().expect("pg_ctlcluster");
    assert!(status.success() || action == "start", "pg_ctlcluster {action}: {status:?}");
}

/// The PostgreSQL server started here outlives the test: it must not inherit any descriptor of
/// ours (a lock held by whoever ran the tests, a pipe a CI runner waits to see closed).
#[allow(unsafe_code)]
fn no_inherited_fds(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; close(2) is async-signal-safe and nothing
    // is allocated.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 3..4096 {
                let _ = nix::unistd::close(fd);
            }
            Ok(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_mid_run_loses_nothing_and_work_resumes() {
    let Some(url) = pg_url() else { return };
    if Command::new("pg_ctlcluster").arg("--help").output().is_err() {
        assert!(
            std::env::var("DROVE_REQUIRE_POSTGRES").is_err(),
            "pg_ctlcluster is needed to stop PostgreSQL"
        );
        eprintln!("PostgreSQL outage test skipped: no pg_ctlcluster");
        return;
    }
    let schema = PgSchema::new(&url, "outage");
    let server = Server::start_pg(&url, &schema.name, &[]);
    let http = Http::new(&server.url);
    http.put("/v1/queues/r", json!({"lease_ms": 5000, "backoff": {"base_ms": 0, "max_ms": 0}})).await;
    let mut ids = Vec::new();
    for chunk in 0..2 {
        let jobs: Vec<Value> =
            (0..1000).map(|i| json!({"queue": "r", "payload": chunk * 1000 + i})).collect();
        let (status, out) = http.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
        assert_eq!(status, 200);
        ids.extend(out["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
    }

    // Sixteen HTTP workers that keep going through errors, counting each run.
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let (http, runs, stop) = (http.clone(), Arc::clone(&runs), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let body = json!({"worker": format!("w{i}"), "max": 1, "wait_ms": 500});
                    let Ok(resp) =
                        http.client.post(format!("{}/v1/queues/r/claim", http.base)).json(&body).send().await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(claimed) = resp.json::<Value>().await else { continue };
                    for job in claimed["jobs"].as_array().cloned().unwrap_or_default() {
                        let id = job["id"].as_str().unwrap().to_owned();
                        *runs.lock().unwrap().entry(id.clone()).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await; // the work
                        loop {
                            let done = http
                                .client
                                .post(format!("{}/v1/jobs/{id}/complete", http.base))
                                .json(&json!({"lease": job["lease"]}))
                                .send()
                                .await;
                            match done.map(|r| r.status().as_u16()) {
                                Ok(200 | 409) => break, // done, or the lease is gone: it runs again
                                _ => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let succeeded = |http: Http| async move {
        let (s, q) = http.get("/v1/queues/r").await;
        if s == 200 { q["counts"]["succeeded"].as_i64().unwrap_or(0) } else { -1 }
    };
    let start = Instant::now();
    while succeeded(http.clone()).await < 400 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress before the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let restart = Restart;
    pg_ctl("stop");
    let in_flight_at_outage = 16;
    // While it is down the server says so, and refuses what it cannot store.
    let (status, _) = http.get("/readyz").await;
    assert_eq!(status, 503, "/readyz while PostgreSQL is down");
    let (status, body) = http.post("/v1/jobs", json!({"queue": "r"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");
    assert_eq!(http.get("/healthz").await.0, 200, "the process itself is alive");
    drop(restart); // start it again

    let start = Instant::now();
    while http.get("/readyz").await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(60), "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while succeeded(http.clone()).await < 2000 {
        assert!(start.elapsed() < Duration::from_secs(120), "work did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Release);
    for w in workers {
        let _ = w.await;
    }
    for id in &ids {
        let (_, job) = http.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let twice = runs.lock().unwrap().values().filter(|n| **n > 1).count();
    assert!(
        twice <= 2 * in_flight_at_outage,
        "{twice} jobs ran twice; at most those in flight at the outage may"
    );
}
