//! The in-process runtime: Rust handlers run jobs of their queues inside the node.
//!
//! Per queue, a producer claims as many jobs as it has free slots (one store call for all of
//! them), each job runs in its own task with heartbeats every third of its lease, and a
//! completer folds the ends of runs into one store call per batch. Shutdown is soft, then
//! hard: stop claiming, let running jobs finish within a grace period, then hand the leases of
//! those still running back (release) so another worker starts them at once.

mod completer;
mod context;
mod execute;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drove_store::ClaimRequest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use context::{Fail, JobContext};

use crate::Engine;

/// What a handler returns: the result (any JSON) or how the run failed.
pub type HandlerResult = Result<serde_json::Value, Fail>;

/// A job handler: an async function of the job's context.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, ctx: JobContext) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, ctx: JobContext) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> {
        Box::pin(self(ctx))
    }
}

/// How a runtime works one queue.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs of this queue run at once in this runtime.
    pub concurrency: usize,
    /// Lease length asked for on claims (`None`: the queue's setting, 10 s by default).
    pub lease_ms: Option<i64>,
    /// Most jobs asked for in one claim.
    pub claim_batch: usize,
    /// After a cancel request, how long a handler may take to stop before it is dropped.
    pub cancel_grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 10,
            lease_ms: None,
            claim_batch: 512,
            cancel_grace: Duration::from_secs(5),
        }
    }
}

impl WorkerOptions {
    pub fn concurrency(n: usize) -> WorkerOptions {
        WorkerOptions { concurrency: n.max(1), ..Default::default() }
    }
}

struct QueueWorker {
    queue: String,
    handler: Arc<dyn Handler>,
    opts: WorkerOptions,
}

/// Handlers registered per queue, ready to start.
pub struct Runtime {
    engine: Engine,
    worker_name: String,
    queues: HashMap<String, QueueWorker>,
}

/// Shared by every task of a running runtime.
pub(crate) struct Shared {
    pub engine: Engine,
    pub worker_name: String,
    /// Soft stop: producers stop claiming.
    pub stop: CancellationToken,
    /// Hard stop: running jobs are released.
    pub hard: CancellationToken,
    /// Death: every task ends at once and nothing more reaches the store (tests of recovery).
    pub kill: CancellationToken,
    pub jobs: TaskTracker,
    pub completer: completer::CompleterHandle,
}

impl Runtime {
    pub fn new(engine: Engine) -> Runtime {
        let worker_name = format!("{}-{}-{:04x}", host_name(), std::process::id(), fastrand::u16(..));
        Runtime { engine, worker_name, queues: HashMap::new() }
    }

    /// Names this runtime's claims (shown on running jobs).
    pub fn worker_name(mut self, name: impl Into<String>) -> Runtime {
        self.worker_name = name.into();
        self
    }

    /// Runs `handler` for jobs of `queue`.
    pub fn handle(mut self, queue: impl Into<String>, opts: WorkerOptions, handler: impl Handler) -> Runtime {
        let queue = queue.into();
        self.queues.insert(queue.clone(), QueueWorker { queue, handler: Arc::new(handler), opts });
        self
    }

    /// Starts claiming and running jobs.
    pub fn start(self) -> RuntimeHandle {
        let kill = CancellationToken::new();
        let shared = Arc::new(Shared {
            completer: completer::spawn(Arc::clone(self.engine.store()), kill.clone()),
            engine: self.engine,
            worker_name: self.worker_name,
            stop: CancellationToken::new(),
            hard: CancellationToken::new(),
            kill,
            jobs: TaskTracker::new(),
        });
        let producers = TaskTracker::new();
        for (_, q) in self.queues {
            producers.spawn(produce(Arc::clone(&shared), q));
        }
        producers.close();
        RuntimeHandle { shared, producers }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "drove".into())
}

/// A running runtime.
pub struct RuntimeHandle {
    shared: Arc<Shared>,
    producers: TaskTracker,
}

impl RuntimeHandle {
    /// Soft then hard stop: no new claims; running jobs get `grace` to finish; those still
    /// running are then released (queued again at once, no attempt used). Returns once every
    /// end of run is stored.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.stop.cancel();
        self.producers.wait().await;
        self.shared.jobs.close();
        if tokio::time::timeout(grace, self.shared.jobs.wait()).await.is_err() {
            tracing::info!(running = self.shared.jobs.len(), "grace period over; releasing running jobs");
            self.shared.hard.cancel();
            self.shared.jobs.wait().await;
        }
        self.shared.completer.close().await;
    }

    /// Stops everything at once as if the process died: nothing more reaches the store, the
    /// leases of running jobs simply run out.
    pub async fn kill(self) {
        self.shared.kill.cancel();
        self.shared.stop.cancel();
        self.producers.wait().await;
        self.shared.jobs.close();
        self.shared.jobs.wait().await;
        self.shared.completer.close().await;
    }

    /// Jobs running right now.
    pub fn running(&self) -> usize {
        self.shared.jobs.len()
    }
}

/// Claims jobs of one queue into free slots, for as long as the runtime runs.
async fn produce(shared: Arc<Shared>, q: QueueWorker) {
    let slots = Arc::new(Semaphore::new(q.opts.concurrency));
    let q = Arc::new(q);
    loop {
        let first = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shared.stop.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < q.opts.claim_batch {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let req = ClaimRequest {
            queue: q.queue.clone(),
            worker: shared.worker_name.clone(),
            max: permits.len() as i64,
            lease_ms: q.opts.lease_ms,
        };
        match shared.engine.claim_until(req, Duration::from_secs(30), &shared.stop).await {
            Ok(out) => {
                for claimed in out.jobs {
                    let permit = permits.pop().expect("never more jobs than slots asked for");
                    let (shared2, q2) = (Arc::clone(&shared), Arc::clone(&q));
                    let span = tracing::info_span!(
                        "job",
                        id = %claimed.job.id,
                        queue = %claimed.job.queue,
                        attempt = claimed.job.attempt
                    );
                    shared.jobs.spawn(
                        async move {
                            execute::run(shared2, q2, claimed).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(queue = %q.queue, error = %e, "claim failed; retrying shortly");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
        }
    }
}
