//! The engine: what a Drove node runs over a [`Store`].
//!
//! - services that keep time moving ([`services`]): the promoter (scheduled -> queued), the
//!   reaper (expired leases and timeouts), the pruner (finished jobs past retention);
//! - long polls that cost nothing while they wait ([`Engine::claim`], [`Engine::wait_job`]):
//!   woken by the store's [`Hub`](drove_store::Hub), never by a polling loop per request;
//! - the in-process runtime for Rust handlers ([`runtime`]).
//!
//! Key decision: the engine holds no state another node needs. Every limit and every
//! invariant lives in the store; the engine only decides when to ask it. Several nodes on
//! one shared store each run all services: each service call is one idempotent, bounded store
//! transition, so running it twice at once is harmless. This crate must not depend on a
//! database driver or on HTTP.

mod limiter;
pub mod runtime;
pub mod services;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use drove_core::queue::{PoolPatch, QueuePatch};
use drove_core::{ErrorKind, FailKind, Job, JobId, JobState, Millis};
use drove_store::schedules::{ScheduleInfo, ScheduleSpec};
use drove_store::{
    ClaimOutcome, ClaimRequest, Finish, Heartbeat, HeartbeatAck, NewJob, Outcome, PoolInfo, QueueInfo, Store,
    StoreError, Submitted,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use runtime::{
    BatchHandler, BatchOptions, Fail, Handler, JobContext, Runtime, RuntimeHandle, WorkerOptions,
};

/// The wall clock now: the one place a node reads it. Store calls take it from here as their
/// `now`; tests pass a fixed one instead.
pub fn now() -> Millis {
    Millis::from_system_time(std::time::SystemTime::now())
}

/// How a node runs its services.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Finished jobs are deleted this long after they ended (default 7 days).
    pub retention: Duration,
    /// How often the pruner runs (default 1 min).
    pub prune_every: Duration,
    /// The longest any service sleeps without checking the store (default 1 s), which bounds
    /// how late a due job is promoted or a lost lease is reaped if a notification is missed.
    pub max_idle: Duration,
    /// Whether to run the promoter, reaper and pruner (tests of the store alone turn them off).
    pub run_services: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(60),
            max_idle: Duration::from_secs(1),
            run_services: true,
        }
    }
}

/// How a run ended, for metrics: the job's new state, or why it went back (as the worker said).
fn run_outcome(job: &Job, failed_as: Option<FailKind>) -> &'static str {
    match job.state {
        JobState::Succeeded if job.partial => "partial",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        _ => match failed_as {
            Some(FailKind::Snooze) => "snoozed",
            Some(FailKind::Throttled) => "throttled",
            Some(FailKind::Transient) => "transient",
            Some(_) => "retried",
            None => "released",
        },
    }
}

/// A node's engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: EngineConfig,
    /// Cancelled when the node shuts down: services stop, long polls answer at once.
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Throttled outcomes seen by this node, for the limit service.
    overloads: limiter::Overloads,
}

impl Engine {
    /// Starts the engine's services over `store`.
    pub fn start(store: Arc<dyn Store>, config: EngineConfig) -> Engine {
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                config,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                overloads: Default::default(),
            }),
        };
        if engine.inner.config.run_services {
            services::spawn_all(&engine);
            engine.inner.tasks.spawn(limiter::Limiter { engine: engine.clone() }.run());
        }
        engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Cancelled when the engine shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn overloads(&self) -> &limiter::Overloads {
        &self.inner.overloads
    }

    /// Ends runs (see [`Store::finish`]), telling the limit service of throttled outcomes.
    pub async fn finish(&self, items: Vec<Finish>) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let now = crate::now();
        let failed_as: Vec<Option<FailKind>> = items
            .iter()
            .map(|f| match &f.outcome {
                Outcome::Fail { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        let results = self.inner.store.finish(items, now).await?;
        for (job, failed_as) in results.iter().zip(failed_as).filter_map(|(r, k)| Some((r.as_ref().ok()?, k)))
        {
            tracing::debug!(job = %job.id, queue = %job.queue, attempt = job.attempt, state = %job.state, "run ended");
            metrics::counter!("drove_runs_finished_total", "queue" => job.queue.clone(), "outcome" => run_outcome(job, failed_as))
                .increment(1);
            if let Some(started) = job.started_at {
                metrics::histogram!("drove_run_seconds", "queue" => job.queue.clone())
                    .record(now.since(started).max(0) as f64 / 1e3);
            }
            let throttled = job.error.as_ref().is_some_and(|e| e.kind == ErrorKind::Throttled && e.at == now);
            if throttled && !job.state.is_terminal() && job.state != JobState::Running {
                self.inner.overloads.throttled(&job.queue, now);
            }
        }
        Ok(results)
    }

    /// Submits jobs (see [`Store::submit`]).
    pub async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError> {
        let out = self.inner.store.submit(jobs, crate::now()).await?;
        for s in &out {
            tracing::debug!(job = %s.job.id, queue = %s.job.queue, created = s.created, "submitted");
            let name = if s.created { "drove_jobs_submitted_total" } else { "drove_jobs_deduplicated_total" };
            metrics::counter!(name, "queue" => s.job.queue.clone()).increment(1);
        }
        Ok(out)
    }

    /// Extends a run's lease, storing its progress and checkpoint (see [`Store::heartbeat`]).
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        let id = hb.id;
        let ack = self.inner.store.heartbeat(hb, crate::now()).await;
        let outcome = match &ack {
            Ok(a) if a.cancel_requested => "cancel_requested",
            Ok(_) => "ok",
            Err(StoreError::StaleLease) => "lease_lost",
            Err(_) => "error",
        };
        tracing::trace!(job = %id, outcome, "heartbeat");
        metrics::counter!("drove_heartbeats_total", "outcome" => outcome).increment(1);
        ack
    }

    /// Cancels a job (see [`Store::cancel`]).
    pub async fn cancel(&self, id: JobId) -> Result<Job, StoreError> {
        let job = self.inner.store.cancel(id, crate::now()).await?;
        tracing::info!(job = %id, queue = %job.queue, state = %job.state, "cancel asked");
        metrics::counter!("drove_jobs_cancelled_total", "queue" => job.queue.clone()).increment(1);
        Ok(job)
    }

    /// Queues an ended job again (see [`Store::retry`]).
    pub async fn retry(&self, id: JobId) -> Result<Job, StoreError> {
        let job = self.inner.store.retry(id, crate::now()).await?;
        tracing::info!(job = %id, queue = %job.queue, "retried by hand");
        metrics::counter!("drove_jobs_retried_total", "queue" => job.queue.clone()).increment(1);
        Ok(job)
    }

    /// Changes a queue's settings (see [`Store::put_queue`]).
    pub async fn put_queue(&self, name: &str, patch: QueuePatch) -> Result<QueueInfo, StoreError> {
        let q = self.inner.store.put_queue(name, patch, crate::now()).await?;
        tracing::info!(queue = %name, paused = q.config.paused, "queue settings changed");
        Ok(q)
    }

    /// Changes a pool's settings (see [`Store::put_pool`]).
    pub async fn put_pool(&self, name: &str, patch: PoolPatch) -> Result<PoolInfo, StoreError> {
        let p = self.inner.store.put_pool(name, patch, crate::now()).await?;
        tracing::info!(pool = %name, "pool settings changed");
        Ok(p)
    }

    /// Creates or replaces a schedule (see [`Store::put_schedule`]); `true`: created.
    pub async fn put_schedule(
        &self,
        name: &str,
        spec: ScheduleSpec,
    ) -> Result<(ScheduleInfo, bool), StoreError> {
        let out = self.inner.store.put_schedule(name, spec, crate::now()).await?;
        tracing::info!(schedule = %name, created = out.1, paused = out.0.spec.paused, "schedule written");
        Ok(out)
    }

    /// Deletes a schedule; `false`: there was none.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let gone = self.inner.store.delete_schedule(name).await?;
        tracing::info!(schedule = %name, gone, "schedule deleted");
        Ok(gone)
    }

    /// Enqueues a schedule's job now (see [`Store::run_schedule`]).
    pub async fn run_schedule(&self, name: &str) -> Result<Submitted, StoreError> {
        let sub = self.inner.store.run_schedule(name, crate::now()).await?;
        tracing::info!(schedule = %name, job = %sub.job.id, created = sub.created, "schedule run now");
        if sub.created {
            metrics::counter!("drove_jobs_submitted_total", "queue" => sub.job.queue.clone()).increment(1);
        }
        Ok(sub)
    }

    /// Claims jobs, waiting up to `wait` for one to become claimable.
    pub async fn claim(&self, req: ClaimRequest, wait: Duration) -> Result<ClaimOutcome, StoreError> {
        wait::claim(self, req, wait, Duration::ZERO, None).await
    }

    /// Claims up to `req.max` jobs, waiting up to `wait` for one; once one is ready, waiting up
    /// to `linger` more for the batch to fill before claiming (a batch handler's claim).
    pub async fn claim_batch(
        &self,
        req: ClaimRequest,
        wait: Duration,
        linger: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        wait::claim(self, req, wait, linger, None).await
    }

    /// Like [`Engine::claim`], also answering (empty) when `stop` is cancelled.
    pub async fn claim_until(
        &self,
        req: ClaimRequest,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<ClaimOutcome, StoreError> {
        wait::claim(self, req, wait, Duration::ZERO, Some(stop)).await
    }

    /// The job, once terminal or once `wait` ran out (whichever is first); `None` if unknown.
    pub async fn wait_job(&self, id: JobId, wait: Duration) -> Result<Option<Arc<Job>>, StoreError> {
        wait::job(self, id, wait).await
    }

    /// Stops the services and answers every pending long poll, then waits for the services.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}
