//! Real processes for end-to-end tests: `drove serve` on port 0, `drove worker` with a
//! command, and an HTTP client. Every process is SIGKILLed when its handle drops.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_drove");

pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub port: u16,
}

impl Server {
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        Server::start_on(db, 0, extra)
    }

    pub fn start_on(db: &Path, port: u16, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["--db".into(), db.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(port, &args)
    }

    /// A node on PostgreSQL (several may share one schema).
    pub fn start_pg(url: &str, schema: &str, extra: &[&str]) -> Server {
        let mut args: Vec<String> =
            vec!["--database-url".into(), url.into(), "--schema".into(), schema.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(0, &args)
    }

    /// A node listening on `bind` (any address).
    pub fn start_any(db: &Path, bind: &str, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["--db".into(), db.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn_bound(bind, &args)
    }

    fn spawn(port: u16, args: &[String]) -> Server {
        Server::spawn_bound(&format!("127.0.0.1:{port}"), args)
    }

    fn spawn_bound(bind: &str, args: &[String]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--bind", bind])
            .args(args)
            .env("DROVE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start drove serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("drove listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Server { child: Some(child), url, port }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
        c.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub struct Worker {
    pub child: Option<Child>,
}

impl Worker {
    pub fn start(url: &str, queue: &str, concurrency: usize, extra: &[&str], command: &[&str]) -> Worker {
        Worker::start_env(url, queue, concurrency, extra, command, &[])
    }

    pub fn start_env(
        url: &str,
        queue: &str,
        concurrency: usize,
        extra: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--server", url, "--queue", queue, "--concurrency", &concurrency.to_string()])
            .args(extra)
            .arg("--")
            .args(command)
            .env("DROVE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Worker { child: Some(cmd.spawn().expect("start drove worker")) }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
        c.wait().unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that returns (status, JSON body).
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            client: {
                drove_worker::install_crypto_provider();
                reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap()
            },
            base: base.to_owned(),
            token: None,
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req =
            self.client.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(90));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(&body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(&body)).await
    }

    /// Long-polls until the job is terminal (up to `limit`).
    pub async fn wait_terminal(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}?wait=20s")).await;
            if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return job;
            }
            assert!(start.elapsed() < limit, "job {id} not finished after {limit:?}: {job}");
        }
    }
}

/// Waits for a condition that no notification announces (a file a child writes, a process
/// exiting), checking every 20 ms up to `limit`.
/// P1 over HTTP: `n` submitters, spread over `clients` in turn, each submit one of ten keys of
/// queue `compute` with `?wait` (`reuse_for_ms` 60 s); every one must get its key's result from
/// the one job of that key.
pub async fn submit_ten_keys_and_wait(clients: &[Http], n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let http = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let item = (i % 10) as i64;
                let body =
                    json!({"queue": "compute", "key": format!("item:{item}"), "payload": {"item": item}, "reuse_for_ms": 60000});
                let (status, job) = http.post("/v1/jobs?wait=60s", body).await;
                (item, status, job)
            })
        })
        .collect();
    let mut ids: HashMap<i64, String> = HashMap::new();
    for t in tasks {
        let (item, status, job) = t.await.unwrap();
        assert!(status == 200 || status == 201, "{status} {job}");
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["result"], json!({"item": item}), "each submitter gets its key's result");
        let id = job["id"].as_str().unwrap().to_owned();
        assert_eq!(ids.entry(item).or_insert_with(|| id.clone()), &id, "one job per key");
    }
}

pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

pub fn process_alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(')').nth(1).is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The PostgreSQL test database, or `None` after saying why the test is skipped (a panic
/// instead when `DROVE_REQUIRE_POSTGRES=1`, as in CI).
pub fn pg_url() -> Option<String> {
    let reason = match std::env::var("DROVE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let host_port = url.rsplit('@').next().unwrap_or("").split('/').next().unwrap_or("").to_owned();
            let addr = if host_port.contains(':') { host_port } else { format!("{host_port}:5432") };
            match std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap_or_else(|_| "127.0.0.1:5432".parse().unwrap()),
                Duration::from_secs(2),
            ) {
                Ok(_) => return Some(url),
                Err(e) => format!("cannot reach {addr}: {e}"),
            }
        }
        _ => "DROVE_TEST_DATABASE_URL is not set".to_owned(),
    };
    if std::env::var("DROVE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("DROVE_REQUIRE_POSTGRES=1 but the PostgreSQL tests cannot run: {reason}");
    }
    eprintln!("PostgreSQL test skipped: {reason}");
    None
}

/// A schema of its own for a test, dropped when the guard drops.
pub struct PgSchema {
    pub url: String,
    pub name: String,
}

impl PgSchema {
    pub fn new(url: &str, tag: &str) -> PgSchema {
        let name = format!("e2e_{tag}_{}_{}", std::process::id(), fastrand::u32(..));
        PgSchema { url: url.to_owned(), name }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let opts = drove_postgres::PostgresOptions::new(&self.url).with_schema(&self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(drove_postgres::drop_schema(&opts))
        })
        .join();
    }
}

/// A TCP proxy on loopback in front of `upstream` (a port), counting the connections it accepts:
/// while the server behind it is down, each request a client tries is one connection.
pub struct Proxy {
    pub port: u16,
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Proxy { port, accepted, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn count(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
