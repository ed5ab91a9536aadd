//! Issue 13: no input, connection or signal takes a node down. Real `drove serve` processes,
//! raw sockets where a client would misbehave, real `drove worker` children and grandchildren.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;

/// Reads from `s` until the peer closes (`Ok` with what was read) or `limit` passes (`Err`).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Ok(String::from_utf8_lossy(&out).into_owned()), // reset: closed too
        }
        if start.elapsed() > limit {
            return Err(format!("still open after {limit:?}; read {:?}", String::from_utf8_lossy(&out)));
        }
    }
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_garbled_connections_are_closed_and_answered_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &["--idle-timeout-ms", "500"]);
    // An idle socket, and one that never finishes its request's head (slowloris), are closed.
    let mut idle = connect(&server);
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").unwrap();
    read_until_closed(&mut idle, Duration::from_secs(20)).expect("an idle connection is closed");
    read_until_closed(&mut slow, Duration::from_secs(20)).expect("a slow head is cut off");
    // A body that stalls gets a 408 in the API's error format.
    let mut stall = connect(&server);
    stall
        .write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"queue\"")
        .unwrap();
    let answer = read_until_closed(&mut stall, Duration::from_secs(40)).expect("a stalled body is cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    // What hyper cannot parse is answered in JSON too, not with an empty body.
    let mut garbled = connect(&server);
    garbled.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut garbled, Duration::from_secs(20)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
    assert!(answer.contains(r#""code":"malformed_request""#), "{answer}");
    // Keep-alive clients are told how long an idle socket is kept.
    let resp = Http::new(&server.url).client.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(resp.headers().get("keep-alive").and_then(|v| v.to_str().ok()), Some("timeout=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(dir.path().join("d.db"))
        .args(["--bind", "127.0.0.1:0", "--max-connections", "8", "--idle-timeout-ms", "1000"])
        .env("DROVE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    let url = line.trim().strip_prefix("drove listening on ").unwrap().to_owned();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    // The ninth waits for a slot; the idle ones time out and it is served.
    let (status, _) = Http::new(&url).get("/healthz").await;
    assert_eq!(status, 200);
    eventually("the connection-limit log line", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("connection limit reached")
    })
    .await;
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}

fn serve_output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--db"]).arg(dir.path().join("d.db")).args(args).env_remove("DROVE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Each of these exits at once; were one to start listening, the timeout ends the test.
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "drove serve {args:?} kept running");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposing_a_server_without_a_token_needs_saying_so() {
    let out = serve_output(&["--bind", "0.0.0.0:0"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a token") && err.contains("--insecure-no-token"), "{err}");
    // An empty token would silently turn authentication off.
    let out = serve_output(&[], &[("DROVE_TOKEN", "")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the token is empty"));
    // Said explicitly, it starts (and warns).
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_any(&dir.path().join("d.db"), "0.0.0.0:0", &["--insecure-no-token"]);
    let (status, _) = Http::new(&format!("http://127.0.0.1:{}", server.port)).get("/healthz").await;
    assert_eq!(status, 200);
}

/// A job's tree as its command records it: the pids of a background child, a `setsid` child
/// (its own session and group), and a double-forked grandchild, one per line of `pids`.
fn tree_script(pids: &std::path::Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "sleep 300 & echo $! >> {p}; setsid sleep 301 & echo $! >> {p}; \
             sh -c 'sleep 302 & echo $! >> {p}' ; echo ready >> {p}; wait",
            p = pids.display()
        ),
    ]
}

fn recorded_pids(pids: &std::path::Path) -> Vec<i32> {
    read_lines(pids).iter().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descendant_of_a_job_outlives_a_sigkilled_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let pids = dir.path().join("pids");
    let script = tree_script(&pids);
    let mut worker =
        Worker::start(&server.url, "tree", 1, &[], &script.iter().map(String::as_str).collect::<Vec<_>>());
    http.post("/v1/jobs", json!({"queue": "tree"})).await;
    eventually("the job's tree to start", Duration::from_secs(30), || {
        read_lines(&pids).iter().any(|l| l == "ready")
    })
    .await;
    let tree = recorded_pids(&pids);
    assert_eq!(tree.len(), 3, "{tree:?}");
    assert!(tree.iter().all(|p| process_alive(*p)));
    worker.kill(); // SIGKILL
    eventually("every process of the job's tree to be gone", Duration::from_secs(30), || {
        tree.iter().all(|p| !process_alive(*p))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_its_whole_tree_and_a_finished_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("d.db"), &[]);
    let http = Http::new(&server.url);
    let pids = dir.path().join("pids");
    let script = tree_script(&pids);
    let _worker = Worker::start(
        &server.url,
        "tree",
        1,
        &["--kill-grace-ms", "500"],
        &script.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (_, job) = http.post("/v1/jobs", json!({"queue": "tree"})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    eventually("the job's tree to start", Duration::from_secs(30), || {
        read_lines(&pids).iter().any(|l| l == "ready")
    })
    .await;
    let tree = recorded_pids(&pids);
    http.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    let done = http.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "cancelled");
    eventually("the cancelled job's tree to be gone", Duration::from_secs(30), || {
        tree.iter().all(|p| !process_alive(*p))
    })
    .await;

    // A command that exits leaving background processes behind: the job is over, so are they.
    let left = dir.path().join("left");
    let _w2 = Worker::start(
        &server.url,
        "leaves",
        1,
        &[],
        &[
            "sh",
            "-c",
            &format!("setsid sleep 303 > /dev/null 2>&1 & echo $! > {}; echo '{{\"ok\":1}}'", left.display()),
        ],
    );
    let (_, job) = http.post("/v1/jobs", json!({"queue": "leaves"})).await;
    let done = http.wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let pid: i32 = std::fs::read_to_string(&left).unwrap().trim().parse().unwrap();
    eventually("the left-behind process to be gone", Duration::from_secs(30), || !process_alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_store_gone_still_exits() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::new(&url, "gone");
    let mut server = Server::start_pg(&url, &schema.name, &[]);
    let http = Http::new(&server.url);
    let (status, _) = http.post("/v1/jobs", json!({"queue": "q", "delay_ms": 100})).await;
    assert_eq!(status, 201);
    // The schema vanishes under the node: every service's store call fails from now on.
    let opts = drove_postgres::PostgresOptions::new(&url).with_schema(&schema.name);
    drove_postgres::drop_schema(&opts).await.unwrap();
    let (status, _) = http.get("/readyz").await;
    assert_eq!(status, 503);
    let pid = server.child.as_ref().unwrap().id() as i32;
    signal(pid, nix::sys::signal::Signal::SIGTERM);
    let mut child = server.child.take().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "drove serve ignored SIGTERM with its store gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_of_names_with_nul_bytes_are_not_found_or_invalid() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::new(&url, "nul");
    let server = Server::start_pg(&url, &schema.name, &[]);
    let http = Http::new(&server.url);
    for path in ["/v1/queues/a%00b", "/v1/pools/a%00b"] {
        let (status, v) = http.get(path).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
    for q in ["queue=a%00b", "key=a%00b", "group=a%00b"] {
        let (status, v) = http.get(&format!("/v1/jobs?{q}")).await;
        assert_eq!(status, 422, "{q}: {v}");
    }
    for q in ["queue=a%00b", "key=a%00b"] {
        let resp = http.client.get(format!("{}/jobs?{q}", server.url)).send().await.unwrap();
        assert!(resp.status().is_client_error(), "dashboard {q}: {}", resp.status());
    }
}
