//! The in-process runtime: Rust handlers run jobs of their queues inside the node.
//!
//! Per queue, a producer claims as many jobs as it has free slots (one store call for all of
//! them), each job runs in its own task with heartbeats every third of its lease, and a
//! completer folds the ends of runs into one store call per batch. Shutdown is soft, then
//! hard: stop claiming, let running jobs finish within a grace period, then hand the leases of
//! those still running back (release) so another worker starts them at once.

mod batch;
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

pub use batch::{BatchHandler, BatchOptions};
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
    /// Jobs claimed ahead of free slots, so one claim (and one commit) serves many short jobs.
    /// `None`: sized automatically to about a quarter second of work at the measured start
    /// rate, at most 1,000. `Some(0)` claims only for free slots.
    pub prefetch: Option<usize>,
    /// After a cancel request, how long a handler may take to stop before it is dropped.
    pub cancel_grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 10,
            lease_ms: None,
            claim_batch: 1_000,
            prefetch: None,
            cancel_grace: Duration::from_secs(5),
        }
    }
}

impl WorkerOptions {
    pub fn concurrency(n: usize) -> WorkerOptions {
        WorkerOptions { concurrency: n.max(1), ..Default::default() }
    }
}

/// What runs a queue's jobs: one job per call, or a batch per call.
enum Work {
    One(Arc<dyn Handler>),
    Batch(Arc<dyn BatchHandler>, BatchOptions),
}

struct QueueWorker {
    queue: String,
    work: Work,
    opts: WorkerOptions,
}

impl QueueWorker {
    fn handler(&self) -> Option<&Arc<dyn Handler>> {
        match &self.work {
            Work::One(h) => Some(h),
            Work::Batch(..) => None,
        }
    }
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
        self.queues.insert(queue.clone(), QueueWorker { queue, work: Work::One(Arc::new(handler)), opts });
        self
    }

    /// Runs `handler` for batches of up to `batch.max` jobs of `queue` at once (waiting up to
    /// `batch.linger` for a batch to fill). `opts.concurrency` is the number of batches in
    /// flight. The handler returns one result per job, in order.
    pub fn handle_batch(
        mut self,
        queue: impl Into<String>,
        opts: WorkerOptions,
        batch: BatchOptions,
        handler: impl BatchHandler,
    ) -> Runtime {
        let queue = queue.into();
        let work = Work::Batch(Arc::new(handler), batch);
        self.queues.insert(queue.clone(), QueueWorker { queue, work, opts });
        self
    }

    /// Starts claiming and running jobs.
    pub fn start(self) -> RuntimeHandle {
        let kill = CancellationToken::new();
        let shared = Arc::new(Shared {
            completer: completer::spawn(self.engine.clone(), kill.clone()),
            engine: self.engine,
            worker_name: self.worker_name,
            stop: CancellationToken::new(),
            hard: CancellationToken::new(),
            kill,
            jobs: TaskTracker::new(),
        });
        let producers = TaskTracker::new();
        for (_, q) in self.queues {
            match q.work {
                Work::One(_) => producers.spawn(produce(Arc::clone(&shared), q)),
                Work::Batch(..) => producers.spawn(batch::produce(Arc::clone(&shared), Arc::new(q))),
            };
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

/// Keeps the start rate of a queue, to size its prefetch.
struct StartRate {
    since: tokio::time::Instant,
    count: u64,
    per_s: f64,
}

impl StartRate {
    fn started(&mut self) {
        self.count += 1;
        let dt = self.since.elapsed().as_secs_f64();
        // Short windows and a heavy weight: a burst of short jobs reaches a useful prefetch in
        // a few tens of milliseconds (a drain of 20,000 jobs lasts well under a second).
        if dt >= 0.025 {
            self.per_s = 0.5 * self.per_s + 0.5 * (self.count as f64 / dt);
            self.count = 0;
            self.since = tokio::time::Instant::now();
        }
    }
}

/// Claims jobs of one queue into free slots (and a small buffer ahead of them), for as long
/// as the runtime runs.
///
/// Without a buffer, a slot cycles once per commit (claim, run, free), so no more than
/// `concurrency` jobs share one commit. The buffer lets one claim serve many short jobs while
/// bounding how long a claimed job waits for a slot: about a quarter second at the current
/// start rate. A buffered job that waited past half its lease is handed back instead of run.
async fn produce(shared: Arc<Shared>, q: QueueWorker) {
    let slots = Arc::new(Semaphore::new(q.opts.concurrency));
    let q = Arc::new(q);
    let mut buffer: std::collections::VecDeque<drove_store::Claimed> = std::collections::VecDeque::new();
    let mut rate = StartRate { since: tokio::time::Instant::now(), count: 0, per_s: 0.0 };
    let mut prefetch_dry = false;
    let limit = q.opts.claim_batch.max(1);
    loop {
        // Hand buffered jobs to free slots.
        while !buffer.is_empty() {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { break };
            let job = buffer.pop_front().expect("not empty");
            if start_or_hand_back(&shared, &q, job, permit) {
                rate.started();
            }
        }
        let free = slots.available_permits();
        let target = match q.opts.prefetch {
            Some(n) => n,
            None => ((rate.per_s * 0.25) as usize).min(1_000),
        };
        let (want, wait) = if buffer.is_empty() && free > 0 {
            // Idle capacity: long-poll for work.
            (free + target, Duration::from_secs(30))
        } else if buffer.len() < target / 2 + 1 && !prefetch_dry && target > 0 {
            (target + free - buffer.len().min(target + free), Duration::ZERO)
        } else {
            (0, Duration::ZERO)
        };
        if want > 0 {
            let req = ClaimRequest {
                queue: q.queue.clone(),
                worker: shared.worker_name.clone(),
                max: want.min(limit) as i64,
                lease_ms: q.opts.lease_ms,
            };
            match shared.engine.claim_until(req, wait, &shared.stop).await {
                Ok(out) => {
                    prefetch_dry = wait.is_zero() && out.jobs.len() < want.min(limit);
                    buffer.extend(out.jobs);
                    if shared.stop.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(queue = %q.queue, error = %e, "claim failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shared.stop.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        // Everything is busy (or the buffer is full): wait for a slot.
        tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => {
                let Ok(permit) = p else { break };
                prefetch_dry = false;
                if let Some(job) = buffer.pop_front()
                    && start_or_hand_back(&shared, &q, job, permit)
                {
                    rate.started();
                }
            }
            _ = shared.stop.cancelled() => break,
        }
    }
    // Stopping: buffered jobs never started; hand them back at once.
    if !shared.kill.is_cancelled() {
        for job in buffer {
            shared.completer.send(drove_store::Finish {
                id: job.job.id,
                lease: job.lease,
                outcome: drove_store::Outcome::Release,
            });
        }
    }
}

/// Starts a claimed job in a slot, or hands it back if it waited too long in the buffer.
fn start_or_hand_back(
    shared: &Arc<Shared>,
    q: &Arc<QueueWorker>,
    claimed: drove_store::Claimed,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let started = claimed.job.started_at.unwrap_or(claimed.lease_expires_at);
    let lease_ms = claimed.lease_expires_at.since(started);
    if crate::now().since(started) > lease_ms / 2 {
        shared.completer.send(drove_store::Finish {
            id: claimed.job.id,
            lease: claimed.lease,
            outcome: drove_store::Outcome::Release,
        });
        return false;
    }
    let (shared2, q2) = (Arc::clone(shared), Arc::clone(q));
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
    true
}
