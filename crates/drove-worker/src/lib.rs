//! `drove worker`: claims jobs of one queue over HTTP and runs a command per job with the
//! child-process protocol of docs/API.md ("The drove worker child protocol").
//!
//! Key decisions: the worker claims as many jobs as it has free slots in one request; each
//! child runs in its own process group, gets SIGTERM then SIGKILL when its job is cancelled,
//! times out or loses its lease, and is killed by the kernel if the worker itself dies
//! (`PR_SET_PDEATHSIG`), so children never outlive their worker. On SIGTERM the worker stops
//! claiming, lets children finish within a grace period, then stops the rest and releases
//! their jobs so they run again at once. This crate talks to the server only through the v1
//! API, like a worker written in any other language would.

mod child;
pub mod client;
pub mod supervise;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{Client, ClientError, install_crypto_provider};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub server: String,
    pub token: Option<String>,
    pub queue: String,
    pub concurrency: usize,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Lease asked for on claims (`None`: the queue's).
    pub lease_ms: Option<i64>,
    /// On shutdown, how long running children may take to finish before they are stopped.
    pub grace: Duration,
    /// Between SIGTERM and SIGKILL when a child must stop.
    pub kill_grace: Duration,
    /// Shown on running jobs.
    pub name: String,
    /// The `drove` binary, to run each command under `drove __supervise` so that no
    /// descendant of it outlives its job or the worker (see [`supervise`]). `None`: the
    /// command is run directly (its process group and direct child are still covered).
    pub supervisor: Option<std::path::PathBuf>,
    /// A PEM file of certificates to trust for an `https://` server, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no command to run")]
    NoCommand,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server refused this worker: {0} (check --token / DROVE_TOKEN)")]
    Refused(String),
}

/// A claimed job, as much of it as the worker needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClaimedJob {
    pub id: String,
    pub attempt: i64,
    pub payload: Box<serde_json::value::RawValue>,
    #[serde(default)]
    pub checkpoint: Option<Box<serde_json::value::RawValue>>,
    pub lease: String,
    pub lease_expires_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub tracestate: Option<String>,
}

impl ClaimedJob {
    /// The trace context the job carries, if the server gave a valid one.
    pub fn trace(&self) -> Option<drove_core::TraceContext> {
        let tp = self.traceparent.as_deref()?;
        drove_core::TraceContext::parse("traceparent", tp, "tracestate", self.tracestate.as_deref()).ok()
    }
}

#[derive(Deserialize)]
struct ClaimAnswer {
    jobs: Vec<ClaimedJob>,
}

/// Stops shared by the worker's tasks.
pub(crate) struct Stops {
    /// Grace over: running children are stopped and their jobs released.
    pub hard: CancellationToken,
    /// The server refused the worker's credentials (401/403): everything stops, and the worker
    /// exits with an error rather than retrying for ever.
    pub refused: CancellationToken,
}

/// Runs until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    if cfg.command.is_empty() {
        return Err(WorkerError::NoCommand);
    }
    let client = Client::with_ca(&cfg.server, cfg.token.clone(), cfg.ca_file.as_deref())?;
    let cfg = Arc::new(cfg);
    let stops = Arc::new(Stops { hard: CancellationToken::new(), refused: CancellationToken::new() });
    let mut refusal: Option<String> = None;
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let tasks = TaskTracker::new();
    let claim_path = format!("/v1/queues/{}/claim", cfg.queue);
    let mut pause = Duration::from_millis(100);
    tracing::info!(queue = %cfg.queue, concurrency = cfg.concurrency, server = %cfg.server, "worker started");
    loop {
        let first = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
            _ = stops.refused.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(p);
        }
        // While the server is away, no long poll: the gate lets one short request out at a time.
        let wait_ms = if client.offline() { 0 } else { 20_000 };
        let body =
            json!({ "worker": cfg.name, "max": permits.len(), "wait_ms": wait_ms, "lease_ms": cfg.lease_ms });
        let answer = tokio::select! {
            a = client.call::<ClaimAnswer>(reqwest::Method::POST, &claim_path, Some(&body), Duration::from_secs(30)) => a,
            _ = shutdown.cancelled() => break,
            _ = stops.refused.cancelled() => break,
        };
        match answer {
            Ok((_, claimed)) => {
                pause = Duration::from_millis(100);
                for job in claimed.jobs {
                    let permit = permits.pop().expect("never more jobs than slots asked for");
                    let (client, cfg, stops) = (client.clone(), Arc::clone(&cfg), Arc::clone(&stops));
                    tasks.spawn(async move {
                        child::run_job(&client, &cfg, &stops, job).await;
                        drop(permit);
                    });
                }
            }
            Err(e) if e.is_refusal() => {
                tracing::error!(error = %e, "the server refused this worker; stopping");
                refusal = Some(e.to_string());
                stops.refused.cancel();
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    tasks.close();
    if !tasks.is_empty() {
        tracing::info!(running = tasks.len(), grace = ?cfg.grace, "stopping: letting running jobs finish");
    }
    if tokio::time::timeout(cfg.grace, tasks.wait()).await.is_err() {
        tracing::info!(running = tasks.len(), "grace over: stopping children and releasing their jobs");
        stops.hard.cancel();
        tasks.wait().await;
    }
    if stops.refused.is_cancelled() {
        // Children are stopped by their runs; their jobs run again elsewhere once their leases end.
        tasks.wait().await;
        let why = refusal.unwrap_or_else(|| "a heartbeat or a run's end was refused (401/403)".to_owned());
        return Err(WorkerError::Refused(why));
    }
    tracing::info!("worker stopped");
    Ok(())
}
