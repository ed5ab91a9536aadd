//! The services that keep time moving. Each has a `tick(now)` that does one round of work
//! through the store (what tests call, with any `now`), and a loop that decides when to tick.

use std::time::{Duration, SystemTime};

use drove_core::Millis;
use drove_store::{Store, StoreError};
use tokio::time::Instant;

use crate::Engine;

/// Rows per store call: bounded work per transaction, so no call holds the writer for long.
const BATCH: usize = 1_000;

pub(crate) fn spawn_all(engine: &Engine) {
    let tasks = engine.tasks();
    tasks.spawn(Promoter { engine: engine.clone() }.run());
    tasks.spawn(Reaper { engine: engine.clone() }.run());
    tasks.spawn(Pruner { engine: engine.clone() }.run());
    tasks.spawn(Scheduler { engine: engine.clone() }.run());
}

/// How long to sleep until `at` (never negative), capped at `cap`.
fn until(at: Option<Millis>, now: Millis, cap: Duration) -> Duration {
    match at {
        Some(at) => Duration::from_millis(u64::try_from(at.since(now).max(0)).unwrap_or(0)).min(cap),
        None => cap,
    }
}

/// After a store error, wait a little before trying again (the store may be restarting).
async fn pause_after(e: &StoreError, service: &str) {
    if e.is_transient() {
        tracing::warn!(error = %e, service, "store unavailable; retrying shortly");
    } else {
        tracing::error!(error = %e, service, "store error");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Runs `step` unless shutdown comes first (`None`): a store that hangs or keeps failing, and
/// the pauses between tries, never keep a node from stopping.
pub(crate) async fn unless_shutdown<T>(
    shutdown: &tokio_util::sync::CancellationToken,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        out = step => Some(out),
    }
}

/// What one round of a service's loop came to.
enum Round<T> {
    /// The step answered.
    Done(T),
    /// The store failed and the pause after it is over: try again.
    Again,
    /// Shutdown came first.
    Stop,
}

/// Runs `step` (a pass: how many jobs it handled, and what the loop needs next) unless shutdown
/// comes first; a pass that handled jobs gets its span ([`drove_trace::service_pass`]). After a
/// store error, pauses (the pause also gives way to shutdown) so that the loop tries again.
async fn round<T>(
    shutdown: &tokio_util::sync::CancellationToken,
    service: &'static str,
    step: impl std::future::Future<Output = Result<(usize, T), StoreError>>,
) -> Round<T> {
    let started = SystemTime::now();
    match unless_shutdown(shutdown, step).await {
        None => Round::Stop,
        Some(Ok((jobs, out))) => {
            drove_trace::service_pass(service, started, jobs);
            Round::Done(out)
        }
        Some(Err(e)) => match unless_shutdown(shutdown, pause_after(&e, service)).await {
            None => Round::Stop,
            Some(()) => Round::Again,
        },
    }
}

/// Moves scheduled jobs whose `run_at` has come to queued.
pub struct Promoter {
    pub engine: Engine,
}

impl Promoter {
    /// Promotes every due job; returns how many.
    pub async fn tick(store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = store.promote(now, BATCH).await?;
            total += n;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    async fn run(self) {
        let store = self.engine.store();
        let hub = store.hub();
        let shutdown = self.engine.shutdown_token();
        let cap = self.engine.config().max_idle;
        loop {
            let now = crate::now();
            let step = async { Ok((Self::tick(&**store, now).await?, store.next_due().await?)) };
            let next = match round(shutdown, "promoter", step).await {
                Round::Stop => return,
                Round::Again => continue,
                Round::Done((next, _)) => next,
            };
            let mut wake_at = Instant::now() + until(next, now, cap);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(wake_at) => break,
                    _ = hub.scheduled_changed() => {
                        if let Some(at) = hub.take_scheduled_hint() {
                            let sooner = Instant::now() + until(Some(at), crate::now(), cap);
                            wake_at = wake_at.min(sooner);
                        }
                    }
                }
            }
        }
    }
}

/// Enqueues the ticks of schedules as they come (exactly one job per tick across nodes: the
/// store's pass is the guarantee; this only decides when to ask).
pub struct Scheduler {
    pub engine: Engine,
}

impl Scheduler {
    /// Fires every due schedule; returns how many jobs that submitted.
    pub async fn tick(store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let before = total;
            total += store.fire_schedules(now, drove_store::schedules::FIRE_BATCH).await?;
            // A pass that found a full batch due may have left more; one that submitted nothing
            // new had nothing left (or only ticks that enqueue nothing).
            if total == before || total - before < drove_store::schedules::FIRE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn run(self) {
        let store = self.engine.store();
        let hub = store.hub();
        let shutdown = self.engine.shutdown_token();
        let cap = self.engine.config().max_idle;
        loop {
            let now = crate::now();
            let step = async { Ok((Self::tick(&**store, now).await?, store.next_tick().await?)) };
            let next = match round(shutdown, "scheduler", step).await {
                Round::Stop => return,
                Round::Again => continue,
                Round::Done(next) => next,
            };
            // Past the tick by a millisecond: the pass at the tick's own instant finds it due.
            let wait = until(next.map(|t| t.plus_ms(1)), now, cap);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = hub.schedules_changed() => {}
            }
        }
    }
}

/// Ends runs whose lease ran out (the worker died) or whose deadline passed.
pub struct Reaper {
    pub engine: Engine,
}

impl Reaper {
    pub async fn tick(store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = store.reap(now, BATCH).await?;
            total += n;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    async fn run(self) {
        let store = self.engine.store();
        let shutdown = self.engine.shutdown_token();
        let cap = self.engine.config().max_idle;
        loop {
            let now = crate::now();
            let step = async {
                let reaped = Self::tick(&**store, now).await?;
                if reaped > 0 {
                    metrics::counter!("drove_runs_reaped_total").increment(reaped as u64);
                    tracing::info!(runs = reaped, "reaped runs whose lease or deadline passed");
                }
                Ok((reaped, store.next_due().await?))
            };
            let next = match round(shutdown, "reaper", step).await {
                Round::Stop => return,
                Round::Again => continue,
                Round::Done((_, next)) => next,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A lease that expires at T is reaped at T (a few ms later), never before.
                _ = tokio::time::sleep(until(next, now, cap) + Duration::from_millis(1)) => {}
            }
        }
    }
}

/// Deletes finished jobs past the retention.
pub struct Pruner {
    pub engine: Engine,
}

impl Pruner {
    pub async fn tick(store: &dyn Store, now: Millis, retention: Duration) -> Result<usize, StoreError> {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let n = store.prune(now, retention_ms, BATCH).await?;
            total += n;
            if n < BATCH {
                return Ok(total);
            }
            // Leave room for other writers between big deletions.
            tokio::task::yield_now().await;
        }
    }

    async fn run(self) {
        let store = self.engine.store();
        let shutdown = self.engine.shutdown_token();
        let config = self.engine.config().clone();
        loop {
            let step = async {
                let n = Self::tick(&**store, crate::now(), config.retention).await?;
                Ok((n, n))
            };
            match round(shutdown, "pruner", step).await {
                Round::Stop => return,
                Round::Done(0) | Round::Again => {}
                Round::Done(n) => tracing::info!(jobs = n, "pruned finished jobs"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.prune_every) => {}
            }
        }
    }
}
