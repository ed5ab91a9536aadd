//! What a workload runs against: the engine in this process (`inproc`), or a `drove serve`
//! child process reached over HTTP (`http`). Workers are in-process Rust handlers, or HTTP
//! workers claiming in batches (in this process, or in a child process that can be killed).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drove_engine::{Engine, EngineConfig, JobContext, Runtime, RuntimeHandle, WorkerOptions};
use drove_sqlite::{Durability, SqliteOptions, SqliteStore};
use drove_store::{NewJob, Store};
use drove_worker::Client;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Settings;

/// Records what handlers did, shared by every worker of a run.
#[derive(Default)]
pub struct Probe {
    pub executions: AtomicU64,
    /// Enqueue -> handler start, µs, when the payload carries its submit time.
    pub latencies_us: Mutex<Vec<u64>>,
    /// Completed handler runs per job id.
    pub finishes: Mutex<HashMap<String, u32>>,
    pub track_finishes: bool,
    /// In a worker child process: one `S id` / `F id` line per start / finish.
    pub log: Option<Mutex<std::fs::File>>,
}

impl Probe {
    pub fn tracking() -> Probe {
        Probe { track_finishes: true, ..Default::default() }
    }

    fn started(&self, id: &str, payload: &Value) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = payload.get("t").and_then(Value::as_u64) {
            let now = now_us();
            self.latencies_us.lock().unwrap().push(now.saturating_sub(t));
        }
        if let Some(log) = &self.log {
            let _ = writeln!(log.lock().unwrap(), "S {id}");
        }
    }

    fn finished(&self, id: &str) {
        if self.track_finishes {
            *self.finishes.lock().unwrap().entry(id.to_owned()).or_default() += 1;
        }
        if let Some(log) = &self.log {
            let _ = writeln!(log.lock().unwrap(), "F {id}");
        }
    }
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a handler does with a job.
#[derive(Clone, Copy, Debug)]
pub struct Work {
    pub sleep_ms: u64,
}

pub enum Target {
    Inproc { engine: Engine, store: Arc<dyn Store> },
    Http { server: Child, client: Client, url: String },
}

pub struct Fixture {
    pub target: Target,
    pub dir: tempfile::TempDir,
    /// PostgreSQL: the run's own schema, dropped at the end.
    pub pg: Option<drove_postgres::PostgresOptions>,
}

/// A fresh schema name per run, so runs never see each other's jobs.
fn bench_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("drove_bench_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Fixture {
    pub async fn open(settings: &Settings) -> anyhow::Result<Fixture> {
        let dir = tempfile::Builder::new().prefix("drove-bench-").tempdir_in(&settings.dir)?;
        let db = dir.path().join("bench.db");
        let pg = match settings.store.as_str() {
            "sqlite" => None,
            "postgres" => {
                let url = settings.database_url.clone().context("--store postgres needs --database-url")?;
                Some(drove_postgres::PostgresOptions::new(url).with_schema(bench_schema()))
            }
            other => bail!("unknown store {other} (sqlite or postgres)"),
        };
        let target = match settings.mode.as_str() {
            "inproc" => {
                let store = open_store(settings, &db, pg.as_ref()).await?;
                let engine = Engine::start(Arc::clone(&store), EngineConfig::default());
                Target::Inproc { engine, store }
            }
            "http" => {
                let (server, url) = spawn_server(settings, &db, pg.as_ref())?;
                let client = Client::new(&url, None)?;
                Target::Http { server, client, url }
            }
            other => bail!("unknown mode {other} (inproc or http)"),
        };
        let fx = Fixture { target, dir, pg };
        fx.add_schedules(settings.schedules).await?;
        Ok(fx)
    }

    /// `n` daily schedules (none due during a run), written 64 at a time.
    async fn add_schedules(&self, n: usize) -> anyhow::Result<()> {
        let mut next = 0;
        while next < n {
            let batch: Vec<usize> = (next..n.min(next + 64)).collect();
            next += batch.len();
            let puts = batch.into_iter().map(|i| {
                let spec =
                    json!({"cron": format!("{} {} * * *", i % 60, (i / 60) % 24), "queue": "scheduled"});
                async move {
                    match &self.target {
                        Target::Inproc { engine, .. } => {
                            engine.put_schedule(&format!("s{i}"), serde_json::from_value(spec)?).await?;
                        }
                        Target::Http { client, .. } => {
                            let _: (u16, Value) = client
                                .call(
                                    Method::PUT,
                                    &format!("/v1/schedules/s{i}"),
                                    Some(&spec),
                                    Duration::from_secs(30),
                                )
                                .await?;
                        }
                    }
                    anyhow::Ok(())
                }
            });
            for r in futures_util::future::join_all(puts).await {
                r?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn close(self) {
        let pg = self.pg;
        match self.target {
            Target::Inproc { engine, store } => {
                engine.shutdown().await;
                store.close().await;
            }
            Target::Http { mut server, .. } => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(server.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = server.wait();
            }
        }
        if let Some(opts) = pg
            && let Err(e) = drove_postgres::drop_schema(&opts).await
        {
            eprintln!("warning: could not drop benchmark schema {}: {e}", opts.schema);
        }
    }

    /// Submits one job (waiting for its acknowledgement); returns its id.
    pub async fn submit(&self, job: &Value) -> anyhow::Result<String> {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let sub = engine.submit(vec![new_job(job)?]).await?;
                Ok(sub[0].job.id.to_string())
            }
            Target::Http { client, .. } => {
                let (_, v): (u16, Value) =
                    client.call(Method::POST, "/v1/jobs", Some(job), Duration::from_secs(60)).await?;
                Ok(v["id"].as_str().unwrap_or_default().to_owned())
            }
        }
    }

    /// Submits one job and waits for its end; returns the finished job.
    pub async fn submit_and_wait(&self, job: &Value) -> anyhow::Result<Value> {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let sub = engine.submit(vec![new_job(job)?]).await?;
                let done =
                    engine.wait_job(sub[0].job.id, Duration::from_secs(60)).await?.context("vanished")?;
                Ok(serde_json::to_value(&*done)?)
            }
            Target::Http { client, .. } => {
                let (_, v): (u16, Value) = client
                    .call(Method::POST, "/v1/jobs?wait=60s", Some(job), Duration::from_secs(90))
                    .await?;
                Ok(v)
            }
        }
    }

    pub async fn submit_batch(&self, jobs: &[Value]) -> anyhow::Result<Vec<String>> {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let batch = jobs.iter().map(new_job).collect::<anyhow::Result<Vec<_>>>()?;
                Ok(engine.submit(batch).await?.into_iter().map(|s| s.job.id.to_string()).collect())
            }
            Target::Http { client, .. } => {
                let body = json!({ "jobs": jobs });
                let (_, v): (u16, Value) = client
                    .call(Method::POST, "/v1/jobs/batch", Some(&body), Duration::from_secs(120))
                    .await?;
                Ok(v["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|j| j["id"].as_str().unwrap_or_default().to_owned())
                    .collect())
            }
        }
    }

    /// Claims one job of `queue` (waiting up to a minute): its id and lease.
    pub async fn claim_one(&self, queue: &str) -> anyhow::Result<(String, String)> {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let req = drove_store::ClaimRequest {
                    queue: queue.into(),
                    worker: "bench".into(),
                    max: 1,
                    lease_ms: None,
                };
                let out = engine.claim(req, Duration::from_secs(60)).await?;
                let c = out.jobs.first().context("nothing to claim within a minute")?;
                Ok((c.job.id.to_string(), c.lease.to_string()))
            }
            Target::Http { client, .. } => {
                let body = json!({"worker": "bench", "wait_ms": 60000});
                let (_, v): (u16, Value) = client
                    .call(
                        Method::POST,
                        &format!("/v1/queues/{queue}/claim"),
                        Some(&body),
                        Duration::from_secs(90),
                    )
                    .await?;
                let j = &v["jobs"][0];
                Ok((
                    j["id"].as_str().context("nothing to claim")?.to_owned(),
                    j["lease"].as_str().unwrap_or("").to_owned(),
                ))
            }
        }
    }

    /// Ends a run: completed, or (`await_children`) waiting for the job's children.
    pub async fn complete(&self, id: &str, lease: &str, await_children: bool) -> anyhow::Result<()> {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let outcome = if await_children {
                    drove_store::Outcome::AwaitChildren { result: None }
                } else {
                    drove_store::Outcome::Complete { result: None, partial: false }
                };
                let f = drove_store::Finish {
                    id: id.parse().map_err(|()| anyhow::anyhow!("bad id"))?,
                    lease: drove_core::LeaseToken::parse_lenient(lease),
                    outcome,
                };
                engine.finish(vec![f]).await?.pop().context("no answer")??;
                Ok(())
            }
            Target::Http { client, .. } => {
                let body = json!({"lease": lease, "await_children": await_children});
                let _: (u16, Value) = client
                    .call(
                        Method::POST,
                        &format!("/v1/jobs/{id}/complete"),
                        Some(&body),
                        Duration::from_secs(30),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    /// A job as JSON.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        match &self.target {
            Target::Inproc { store, .. } => {
                let job = store
                    .get_job(id.parse().map_err(|()| anyhow::anyhow!("bad id"))?)
                    .await?
                    .context("no such job")?;
                Ok(serde_json::to_value(&job)?)
            }
            Target::Http { client, .. } => {
                let (_, v): (u16, Value) = client
                    .call(Method::GET, &format!("/v1/jobs/{id}"), None::<&Value>, Duration::from_secs(30))
                    .await?;
                Ok(v)
            }
        }
    }

    /// Jobs of `queue` that succeeded.
    pub async fn succeeded(&self, queue: &str) -> anyhow::Result<i64> {
        match &self.target {
            Target::Inproc { store, .. } => {
                Ok(store.get_queue(queue, drove_engine::now()).await?.map_or(0, |q| q.counts.succeeded))
            }
            Target::Http { client, .. } => {
                let (_, v): (u16, Value) = client
                    .call(
                        Method::GET,
                        &format!("/v1/queues/{queue}"),
                        None::<&Value>,
                        Duration::from_secs(30),
                    )
                    .await?;
                Ok(v["counts"]["succeeded"].as_i64().unwrap_or(0))
            }
        }
    }

    /// Waits until `n` jobs of `queue` succeeded (durably), checking every 5 ms.
    pub async fn wait_succeeded(&self, queue: &str, n: i64, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.succeeded(queue).await? >= n {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!("only {} of {n} jobs done after {limit:?}", self.succeeded(queue).await?);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts workers on `queue` in this process.
    pub fn workers(&self, queue: &str, concurrency: usize, work: Work, probe: Arc<Probe>) -> Workers {
        match &self.target {
            Target::Inproc { engine, .. } => {
                let rt = Runtime::new(engine.clone())
                    .handle(
                        queue,
                        WorkerOptions { concurrency, ..Default::default() },
                        move |ctx: JobContext| {
                            let probe = Arc::clone(&probe);
                            async move {
                                let id = ctx.job().id.to_string();
                                let payload: Value =
                                    serde_json::from_str(ctx.job().payload.get()).unwrap_or(Value::Null);
                                probe.started(&id, &payload);
                                if work.sleep_ms > 0 {
                                    tokio::time::sleep(Duration::from_millis(work.sleep_ms)).await;
                                }
                                probe.finished(&id);
                                Ok(Value::Null)
                            }
                        },
                    )
                    .start();
                Workers::Inproc(rt)
            }
            Target::Http { client, .. } => {
                let stop = CancellationToken::new();
                let task = tokio::spawn(http_worker(
                    client.clone(),
                    queue.to_owned(),
                    concurrency,
                    work,
                    probe,
                    stop.clone(),
                ));
                Workers::Http { stop, task }
            }
        }
    }

    pub fn url(&self) -> Option<&str> {
        match &self.target {
            Target::Http { url, .. } => Some(url),
            Target::Inproc { .. } => None,
        }
    }

    fn store_pid(&self) -> u32 {
        match &self.target {
            Target::Inproc { .. } => std::process::id(),
            Target::Http { server, .. } => server.id(),
        }
    }

    /// CPU time (user + system) the process holding the store has used so far, in µs: the
    /// `drove serve` child over HTTP (the server alone), this whole process in process.
    pub fn store_cpu_us(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.store_pid())).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // Linux reports these in USER_HZ, 100 per second on every mainstream architecture.
        Some(ticks * 1e6 / 100.0)
    }

    /// Resident memory of the process holding the store, KiB.
    pub fn store_rss_kib(&self) -> Option<u64> {
        let pid = self.store_pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

pub enum Workers {
    Inproc(RuntimeHandle),
    Http { stop: CancellationToken, task: tokio::task::JoinHandle<()> },
}

impl Workers {
    pub async fn stop(self) {
        match self {
            Workers::Inproc(rt) => rt.shutdown(Duration::from_secs(10)).await,
            Workers::Http { stop, task } => {
                stop.cancel();
                let _ = task.await;
            }
        }
    }

    /// Dies without handing anything back (the in-process stand-in for SIGKILL).
    pub async fn kill(self) {
        match self {
            Workers::Inproc(rt) => rt.kill().await,
            Workers::Http { task, .. } => task.abort(),
        }
    }
}

fn new_job(v: &Value) -> anyhow::Result<NewJob> {
    let queue = v["queue"].as_str().context("queue")?;
    let payload = serde_json::value::to_raw_value(&v["payload"])?;
    let mut job = NewJob::new(queue, payload);
    if let Some(k) = v["key"].as_str() {
        job.key = Some(k.to_owned());
    }
    if let Some(p) = v["parent"].as_str() {
        job.parent = Some(p.parse().map_err(|()| anyhow::anyhow!("parent: not a job id"))?);
    }
    if let Some(deps) = v["depends_on"].as_array() {
        job.depends_on = deps
            .iter()
            .map(|d| d.as_str().and_then(|d| d.parse().ok()).context("depends_on: not a job id"))
            .collect::<anyhow::Result<_>>()?;
    }
    Ok(job)
}

pub async fn open_store(
    settings: &Settings,
    db: &Path,
    pg: Option<&drove_postgres::PostgresOptions>,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(opts) = pg {
        return Ok(Arc::new(drove_postgres::PostgresStore::open(opts.clone()).await?));
    }
    let mut opts = SqliteOptions::new(db);
    if settings.relaxed {
        opts.durability = Durability::Relaxed;
    }
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(opts)).await??;
    Ok(Arc::new(store))
}

fn spawn_server(
    settings: &Settings,
    db: &PathBuf,
    pg: Option<&drove_postgres::PostgresOptions>,
) -> anyhow::Result<(Child, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "--bind", "127.0.0.1:0"]).env("DROVE_LOG", "warn");
    match pg {
        Some(opts) => {
            cmd.args(["--database-url", &opts.url, "--schema", &opts.schema]);
        }
        None => {
            cmd.arg("--db").arg(db);
        }
    }
    if settings.relaxed {
        cmd.arg("--relaxed-durability");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line.trim().strip_prefix("drove listening on ").context("the server did not start")?.to_owned();
    Ok((child, url))
}

#[derive(Deserialize)]
struct Claimed {
    jobs: Vec<ClaimedJob>,
}

#[derive(Deserialize)]
struct ClaimedJob {
    id: String,
    lease: String,
    payload: Value,
}

/// A remote worker as any HTTP client could write it: claims in batches through the public
/// API (for its free slots plus a bounded buffer, so one claim and one commit serve many short
/// jobs), runs the handler, and ends runs in batches through `POST /v1/jobs/finish`.
pub async fn http_worker(
    client: Client,
    queue: String,
    concurrency: usize,
    work: Work,
    probe: Arc<Probe>,
    stop: CancellationToken,
) {
    /// Claimed jobs held ahead of free slots (a short job's lease is far longer than the
    /// time it waits here).
    const PREFETCH: usize = 512;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let finisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(1000);
            while done_rx.recv_many(&mut batch, 1000).await > 0 {
                let body = json!({ "jobs": batch });
                let _ = client
                    .call_retrying::<Value>(
                        Method::POST,
                        "/v1/jobs/finish",
                        Some(&body),
                        Duration::from_secs(30),
                        Duration::from_secs(60),
                    )
                    .await;
                batch.clear();
            }
        })
    };
    let slots = Arc::new(Semaphore::new(concurrency));
    let path = format!("/v1/queues/{queue}/claim");
    let mut buffer: std::collections::VecDeque<ClaimedJob> = std::collections::VecDeque::new();
    let start = |job: ClaimedJob, permit: tokio::sync::OwnedSemaphorePermit| {
        let (probe, done_tx) = (Arc::clone(&probe), done_tx.clone());
        tokio::spawn(async move {
            probe.started(&job.id, &job.payload);
            if work.sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(work.sleep_ms)).await;
            }
            probe.finished(&job.id);
            let _ = done_tx.send(json!({ "id": job.id, "lease": job.lease }));
            drop(permit);
        });
    };
    let prefetch = if work.sleep_ms == 0 { PREFETCH } else { 0 };
    loop {
        while !buffer.is_empty() {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { break };
            start(buffer.pop_front().expect("not empty"), permit);
        }
        let free = slots.available_permits();
        if buffer.len() <= prefetch / 2 && (free > 0 || prefetch > 0) {
            let idle = buffer.is_empty() && free == concurrency;
            let want = (free + prefetch - buffer.len()).clamp(1, 1000);
            let body = json!({ "worker": "bench", "max": want, "wait_ms": if idle { 1000 } else { 0 } });
            let asked = Instant::now();
            let claimed = tokio::select! {
                r = client.call::<Claimed>(Method::POST, &path, Some(&body), Duration::from_secs(30)) => r,
                _ = stop.cancelled() => break,
            };
            if !idle && claimed.is_ok() {
                // Not asked to wait: the round trip is the claim's latency.
                super::claims::record_ms(asked.elapsed().as_secs_f64() * 1e3);
            }
            match claimed {
                Ok((_, c)) if !c.jobs.is_empty() => {
                    buffer.extend(c.jobs);
                    continue;
                }
                Ok(_) if idle => continue,
                Ok(_) => {}
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        // Wait for a slot to free up.
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("open"),
            _ = stop.cancelled() => break,
        };
        match buffer.pop_front() {
            Some(job) => start(job, permit),
            None => drop(permit),
        }
    }
    // Jobs claimed but never started go back at once.
    for job in buffer.drain(..) {
        let _ = done_tx.send(json!({ "id": job.id, "lease": job.lease, "release": true }));
    }
    // Let running handlers end and their completions go out.
    let _ = slots.acquire_many(concurrency as u32).await;
    drop(done_tx);
    let _ = finisher.await;
}
