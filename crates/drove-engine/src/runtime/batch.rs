//! Batch handlers: one call runs up to N jobs of a queue (a provider's bulk endpoint, one
//! database round trip for many rows). A batch is claimed with one request, waiting up to a
//! linger time for it to fill; every job of it heartbeats while the handler runs, and each
//! gets its own result, so one job of a batch can fail (or be throttled) alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drove_store::{ClaimRequest, Claimed, Finish, Outcome};
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::context::{Fail, JobContext, RunLink};
use super::execute::{beat_interval, heartbeats, link_for, outcome_of, panic_message};
use super::{HandlerResult, QueueWorker, Shared, Work};

/// A batch handler: one result per job, in the order of the contexts it was given.
pub trait BatchHandler: Send + Sync + 'static {
    fn call(&self, jobs: Vec<JobContext>) -> Pin<Box<dyn Future<Output = Vec<HandlerResult>> + Send>>;
}

impl<F, Fut> BatchHandler for F
where
    F: Fn(Vec<JobContext>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<HandlerResult>> + Send + 'static,
{
    fn call(&self, jobs: Vec<JobContext>) -> Pin<Box<dyn Future<Output = Vec<HandlerResult>> + Send>> {
        Box::pin(self(jobs))
    }
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most jobs in one call.
    pub max: usize,
    /// How long to wait for a batch to fill once it has a first job.
    pub linger: Duration,
}

pub(crate) async fn produce(shared: Arc<Shared>, q: Arc<QueueWorker>) {
    let Work::Batch(handler, opts) = &q.work else { return };
    let max = opts.max.clamp(1, drove_store::MAX_BATCH);
    let slots = Arc::new(Semaphore::new(q.opts.concurrency));
    let request = |n: usize| ClaimRequest {
        queue: q.queue.clone(),
        worker: shared.worker_name.clone(),
        max: n as i64,
        lease_ms: q.opts.lease_ms,
    };
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shared.stop.cancelled() => return,
        };
        let mut jobs: Vec<Claimed> =
            match shared.engine.claim_until(request(max), Duration::from_secs(30), &shared.stop).await {
                Ok(out) => out.jobs,
                Err(e) => {
                    tracing::warn!(queue = %q.queue, error = %e, "claim failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
        if jobs.is_empty() {
            continue;
        }
        let fill_by = Instant::now() + opts.linger;
        while jobs.len() < max {
            let left = fill_by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match shared.engine.claim_until(request(max - jobs.len()), left, &shared.stop).await {
                Ok(out) if !out.jobs.is_empty() => jobs.extend(out.jobs),
                _ => break,
            }
        }
        let (shared2, handler) = (Arc::clone(&shared), Arc::clone(handler));
        shared.jobs.spawn(async move {
            run(shared2, handler, jobs).await;
            drop(permit);
        });
    }
}

async fn run(shared: Arc<Shared>, handler: Arc<dyn BatchHandler>, jobs: Vec<Claimed>) {
    let interval = jobs.iter().map(beat_interval).min().unwrap_or(Duration::from_secs(3));
    let links: Vec<Arc<RunLink>> = jobs.into_iter().map(|c| link_for(&shared, c)).collect();
    let contexts = links.iter().map(|l| JobContext { link: Arc::clone(l) }).collect();
    let call = std::panic::AssertUnwindSafe(handler.call(contexts)).catch_unwind();
    let beats = futures_util::future::join_all(links.iter().map(|l| heartbeats(l, interval)));
    let results = tokio::select! {
        r = call => r.unwrap_or_else(|p| {
            let msg = panic_message(&p);
            links.iter().map(|_| Err(Fail::retry(&msg))).collect()
        }),
        _ = beats => return, // every lease was lost
        () = shared.hard.cancelled() => {
            for l in &links {
                shared.completer.send(Finish { id: l.job.id, lease: l.lease, outcome: Outcome::Release });
            }
            return;
        }
        () = shared.kill.cancelled() => return,
    };
    let mut results = results.into_iter();
    for link in &links {
        let result = results
            .next()
            .unwrap_or_else(|| Err(Fail::retry("the batch handler gave no result for this job")));
        if link.lost.load(Ordering::Acquire) {
            continue;
        }
        let outcome = outcome_of(result, link.partial.load(Ordering::Acquire));
        shared.completer.send(Finish { id: link.job.id, lease: link.lease, outcome });
    }
}
