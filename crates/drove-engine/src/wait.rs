//! Long polls: claims that wait for work and callers that wait for a job's end.
//!
//! Both register with the hub before asking the store, so nothing committed between the
//! question and the wait is missed, and both wake only when the hub says something changed
//! (or at a time a rate limit named, or after `max_idle` as a safety net against a lost
//! notification). A thousand waiters cost a thousand parked futures and no store traffic but
//! the safety net's, which the claimers of one queue share: one read per queue per `max_idle`.

use std::sync::Arc;
use std::time::Duration;

use drove_core::{Job, JobId};
use drove_store::{ClaimOutcome, ClaimRequest, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Engine;

/// A claim that waits up to `wait` for a job; with a `linger`, once one is ready it waits up to
/// `linger` for the batch to fill (up to `req.max` ready) before claiming them at once, even
/// past `wait` (a `wait` of 0 with a linger of 200 ms answers at once when nothing is ready, and
/// within 200 ms when something is).
pub(crate) async fn claim(
    engine: &Engine,
    req: ClaimRequest,
    wait: Duration,
    linger: Duration,
    stop: Option<&CancellationToken>,
) -> Result<ClaimOutcome, StoreError> {
    let store = engine.store();
    let deadline = Instant::now() + wait;
    let notify = store.hub().queue_notify(&req.queue);
    let idle_look = store.hub().queue_idle_look(&req.queue);
    let max_idle = engine.config().max_idle;
    let mut first = true;
    let never = CancellationToken::new();
    let stop = stop.unwrap_or(&never);
    // Woken by the hub (something became ready or capacity was freed): claim at once. Woken by
    // a timer or asking first: look whether anything is ready before claiming, so an idle long
    // poll runs no write transaction (a claim is one) until a job is ready or due.
    let mut notified_last = false;
    // When a lingering claim first saw a job ready: it claims at the latest `linger` after.
    let mut lingering_until: Option<Instant> = None;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let asked = std::time::Instant::now();
        let asked_i = Instant::now();
        let now = crate::now();
        let mut asked_store = true;
        let ready = if notified_last && linger.is_zero() {
            None // woken by the hub: claim without looking first
        } else if !first && !notified_last && lingering_until.is_none() && idle_look.fresh(asked_i, max_idle)
        {
            // Woken by the safety-net timer, and another claimer of the queue looked and found
            // nothing within it; a notification since would have woken this one (below, the
            // hub wins over the timer). Nothing to read.
            asked_store = false;
            Some(0)
        } else {
            let ready = store.ready(&req.queue, req.max).await?;
            if ready == Some(0) {
                idle_look.found_nothing(asked_i);
            }
            ready
        };
        first = false;
        let idle = ready == Some(0);
        let fill = match (ready, linger.is_zero()) {
            (Some(n), false) if n > 0 && n < req.max => {
                let until = *lingering_until.get_or_insert(asked_i + linger);
                asked_i < until
            }
            _ => false,
        };
        let out = if idle || fill {
            ClaimOutcome::default()
        } else {
            // A linger ends with a claim; should another worker take the jobs first, the next
            // one ready starts a linger of its own.
            lingering_until = None;
            store.claim(req.clone(), now).await?
        };
        if asked_store {
            metrics::histogram!("drove_claim_seconds", "queue" => req.queue.clone())
                .record(asked.elapsed().as_secs_f64());
        }
        if !out.jobs.is_empty() {
            metrics::histogram!("drove_claim_batch_size", "queue" => req.queue.clone())
                .record(out.jobs.len() as f64);
            let wait = metrics::histogram!("drove_enqueue_to_start_seconds", "queue" => req.queue.clone());
            for c in &out.jobs {
                tracing::debug!(job = %c.job.id, queue = %c.job.queue, attempt = c.job.attempt, worker = %req.worker, "claimed");
                if let Some(started) = c.job.started_at {
                    wait.record(started.since(c.job.run_at).max(0) as f64 / 1e3);
                }
            }
        }
        let now_i = Instant::now();
        // A linger runs its course even past `wait`: jobs are ready, the batch is filling.
        let end = lingering_until.map_or(deadline, |until| until.max(deadline));
        if !out.jobs.is_empty() || now_i >= end {
            return Ok(out);
        }
        let mut wake = end.min(now_i + max_idle);
        if let Some(until) = lingering_until {
            wake = wake.min(until);
        }
        if let Some(at) = out.retry_at {
            // From the instant `now` was read, not from after the store call: the time the
            // store named is exact, and every millisecond late is pace lost.
            let ms = u64::try_from(at.since(now).max(0)).unwrap_or(0);
            wake = wake.min(asked_i + Duration::from_millis(ms));
        }
        tokio::select! {
            // A notification wins over the timer when both are due: the timer's wake-up may be
            // answered from another claimer's look, which only a notification makes stale.
            biased;
            _ = &mut notified => notified_last = true,
            _ = tokio::time::sleep_until(wake) => notified_last = false,
            _ = engine.shutdown_token().cancelled() => return Ok(ClaimOutcome::default()),
            _ = stop.cancelled() => return Ok(ClaimOutcome::default()),
        }
    }
}

pub(crate) async fn job(engine: &Engine, id: JobId, wait: Duration) -> Result<Option<Arc<Job>>, StoreError> {
    let store = engine.store();
    let mut watch = store.hub().watch_job(id);
    let Some(job) = store.get_job(id).await? else {
        return Ok(None);
    };
    if job.state.is_terminal() || wait.is_zero() {
        return Ok(Some(Arc::new(job)));
    }
    let deadline = Instant::now() + wait;
    loop {
        tokio::select! {
            changed = watch.changed() => {
                if let Some(done) = changed {
                    return Ok(Some(done));
                }
                // Poked: notifications may have been lost; look for ourselves.
                if let Some(j) = store.get_job(id).await?
                    && j.state.is_terminal()
                {
                    return Ok(Some(Arc::new(j)));
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = engine.shutdown_token().cancelled() => break,
        }
    }
    Ok(store.get_job(id).await?.map(Arc::new))
}
