//! One run of one job: the handler, its heartbeats, its timeout, and how the run ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drove_core::FailKind;
use drove_store::{Claimed, Finish, Outcome};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::context::{Fail, JobContext, RunLink};
use super::{HandlerResult, QueueWorker, Shared};

/// Least time between two heartbeats sent only to carry progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub(crate) async fn run(shared: Arc<Shared>, q: Arc<QueueWorker>, claimed: Claimed) {
    let job = &claimed.job;
    let span = drove_trace::run_span(
        &job.queue,
        &job.id.to_string(),
        job.attempt,
        job.key.as_deref(),
        job.group.as_deref(),
        job.trace.as_ref(),
    );
    let outcome = tracing::Instrument::instrument(run_traced(shared, q, claimed), span.clone()).await;
    drove_trace::record_outcome(&span, outcome);
}

/// A run; returns how it ended, for its span.
async fn run_traced(shared: Arc<Shared>, q: Arc<QueueWorker>, claimed: Claimed) -> &'static str {
    let interval = beat_interval(&claimed);
    let timeout = claimed.job.timeout_ms;
    let Some(handler) = q.handler() else { return "no handler" };
    let link = link_for(&shared, claimed);
    let handler =
        std::panic::AssertUnwindSafe(handler.call(JobContext { link: Arc::clone(&link) })).catch_unwind();
    tokio::pin!(handler);
    let deadline = async {
        match timeout {
            Some(ms) => tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    // First phase: the run as it should go.
    let first: Option<Option<HandlerResult>> = tokio::select! {
        r = &mut handler => Some(Some(r.unwrap_or_else(|p| Err(Fail::retry(panic_message(&p)))))),
        () = heartbeats(&link, interval) => Some(None), // lease lost: abandoned at once
        () = &mut deadline => {
            // The store voids the lease at the deadline and records the timeout; the handler
            // is told to stop like on a cancel request.
            link.cancel.cancel();
            None
        }
        () = link.cancel.cancelled() => None,
        () = shared.hard.cancelled() => {
            link.cancel.cancel();
            shared.completer.send(Finish { id: link.job.id, lease: link.lease, outcome: Outcome::Release });
            return "released";
        }
        () = shared.kill.cancelled() => return "abandoned",
    };
    // Second phase (cancelled or timed out): the handler gets its grace to stop.
    let result = match first {
        Some(r) => r,
        None => tokio::select! {
            r = &mut handler => Some(r.unwrap_or_else(|p| Err(Fail::retry(panic_message(&p))))),
            () = heartbeats(&link, interval) => None,
            () = tokio::time::sleep(q.opts.cancel_grace) => Some(Err(Fail::retry("cancelled"))),
            () = shared.hard.cancelled() => Some(Err(Fail::retry("cancelled"))),
            () = shared.kill.cancelled() => return "abandoned",
        },
    };
    let Some(result) = result else { return "lost" };
    if link.lost.load(Ordering::Acquire) {
        return "lost"; // the store would refuse this run's end
    }
    let mut outcome = outcome_of(result, link.partial.load(Ordering::Acquire));
    if link.await_children.load(Ordering::Acquire)
        && let Outcome::Complete { result, .. } = outcome
    {
        outcome = Outcome::AwaitChildren { result };
    }
    let label = outcome.label();
    shared.completer.send(Finish { id: link.job.id, lease: link.lease, outcome });
    label
}

/// The end of a run as the store takes it, from what the handler returned.
pub(crate) fn outcome_of(result: HandlerResult, partial: bool) -> Outcome {
    // Within the API's bound, so a handler's long wait is not refused as invalid.
    let ms = |d: Duration| {
        Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(drove_core::validation::MAX_DURATION_MS))
    };
    match result {
        Ok(value) => Outcome::Complete { result: serde_json::value::to_raw_value(&value).ok(), partial },
        Err(Fail::Retry(message)) => {
            Outcome::Fail { kind: FailKind::Retryable, message, retry_after_ms: None }
        }
        Err(Fail::Permanent(message)) => {
            Outcome::Fail { kind: FailKind::Permanent, message, retry_after_ms: None }
        }
        Err(Fail::Throttled { after, message }) => {
            Outcome::Fail { kind: FailKind::Throttled, message, retry_after_ms: ms(after) }
        }
        Err(Fail::Snooze(after)) => {
            Outcome::Fail { kind: FailKind::Snooze, message: String::new(), retry_after_ms: ms(after) }
        }
        Err(Fail::Transient(message)) => {
            Outcome::Fail { kind: FailKind::Transient, message, retry_after_ms: None }
        }
    }
}

/// A claimed job's link to the store, as its handler's context holds it.
pub(crate) fn link_for(shared: &Shared, claimed: Claimed) -> Arc<RunLink> {
    Arc::new(RunLink {
        store: Arc::clone(shared.engine.store()),
        job: Arc::new(claimed.job),
        lease: claimed.lease,
        progress: Default::default(),
        progress_changed: Notify::new(),
        partial: AtomicBool::new(false),
        await_children: AtomicBool::new(false),
        cancel: CancellationToken::new(),
        lost: AtomicBool::new(false),
    })
}

/// A heartbeat interval: a third of the run's lease.
pub(crate) fn beat_interval(claimed: &Claimed) -> Duration {
    let lease_ms = claimed.lease_expires_at.since(claimed.job.started_at.unwrap_or(crate::now())).max(1_000);
    Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1_000))
}

/// Heartbeats every `interval`, and sooner (at most every 250 ms) when progress changed.
/// Returns only when the store refused the lease.
pub(crate) async fn heartbeats(link: &RunLink, interval: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = link.progress_changed.notified() => tokio::time::sleep(PROGRESS_EVERY).await,
        }
        if link.beat(None).await.is_err() && link.lost.load(Ordering::Acquire) {
            tracing::warn!("lease lost; the run is abandoned");
            return;
        }
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("the handler panicked: {text}")
}
