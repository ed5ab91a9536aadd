//! The limit service: keeps each adaptive queue's (and pool's) concurrency limit in force.
//!
//! Every 100 ms it feeds a [`P50Gradient`] per scope with the run times of the scope's jobs
//! that ended since its last look (`Store::recent_runs`, so runs ended on any node count) and
//! with the throttled outcomes this node saw (overload: the limit drops by a tenth), and writes
//! the limit with `Store::set_limit` when it changed; for a pool also its offline limit (the
//! capacity estimate, `Store::set_offline_limit`). Claims enforce the limits inside the
//! store, so it holds fleet-wide. With several nodes each runs this service on the same
//! fleet-wide run times; throttle signals are per node and the last limit written wins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use drove_core::adaptive::{Algorithm, OFFLINE_HOLD_US, Outcome, P50Gradient, P50GradientConfig, Sample};
use drove_core::{Adaptive, Lane, Millis};
use drove_store::{LimitScope, QueueInfo, StoreError};

use crate::Engine;

/// How often the limits are recomputed.
const TICK: Duration = Duration::from_millis(100);
/// Runs are read this long after they ended, so that one committed a little late is not
/// skipped.
const LAG_MS: i64 = 50;
/// Most runs read per scope and tick.
const MAX_RUNS: usize = 20_000;

/// Overload signals (throttled outcomes) this node saw, per queue, waiting for the service.
#[derive(Default)]
pub(crate) struct Overloads {
    pending: Mutex<HashMap<String, Vec<Millis>>>,
}

impl Overloads {
    pub fn throttled(&self, queue: &str, at: Millis) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(queue.to_owned()).or_default().push(at);
    }

    fn take(&self, queue: &str) -> Vec<Millis> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(queue).unwrap_or_default()
    }
}

struct Scope {
    bounds: Adaptive,
    alg: P50Gradient,
    /// Runs that ended up to here were fed.
    seen_until: Millis,
    /// The last sample time fed (samples must not go back in time).
    last_us: i64,
    written: Option<i64>,
    written_offline: Option<Option<i64>>,
    /// When this node last saw an online queue of the pool busy.
    online_seen: Option<Millis>,
}

impl Scope {
    fn new(bounds: Adaptive, now: Millis) -> Scope {
        Scope {
            bounds,
            // Run times come from the store in whole milliseconds.
            alg: P50Gradient::new(P50GradientConfig {
                resolution_us: 1_000,
                ..P50GradientConfig::bounded(bounds.min, bounds.max)
            }),
            seen_until: now.minus_ms(LAG_MS),
            last_us: 0,
            written: None,
            written_offline: None,
            online_seen: None,
        }
    }

    fn feed(&mut self, at: Millis, rtt_ms: i64, inflight: i64, outcome: Outcome) {
        let now_us = (at.0 * 1_000).max(self.last_us);
        self.last_us = now_us;
        let sample =
            Sample { now_us, rtt_us: rtt_ms.max(0) * 1_000, inflight, outcome, rand: fastrand::f64() };
        self.alg.on_sample(&sample);
    }
}

pub(crate) struct Limiter {
    pub engine: Engine,
}

impl Limiter {
    pub async fn run(self) {
        let mut scopes: HashMap<LimitScope, Scope> = HashMap::new();
        let shutdown = self.engine.shutdown_token().clone();
        loop {
            match crate::services::unless_shutdown(&shutdown, self.tick(&mut scopes)).await {
                None => return,
                Some(Err(e)) => tracing::warn!(error = %e, "limit service: store error"),
                Some(Ok(())) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn tick(&self, scopes: &mut HashMap<LimitScope, Scope>) -> Result<(), StoreError> {
        let store = self.engine.store();
        let queues = store.list_queues().await?;
        if !queues.iter().any(|q| q.config.adaptive.is_some() || q.config.pool.is_some()) {
            scopes.clear();
            return Ok(());
        }
        let now = Millis::now();
        let window_end = now.minus_ms(LAG_MS);
        // Which scopes are adaptive now, with the queues each one covers.
        let mut wanted: HashMap<LimitScope, (Adaptive, Vec<&QueueInfo>)> = HashMap::new();
        for q in &queues {
            if let Some(a) = q.config.adaptive {
                wanted.insert(LimitScope::Queue(q.name.clone()), (a, vec![q]));
            }
        }
        let mut pools: HashMap<&str, Vec<&QueueInfo>> = HashMap::new();
        for q in &queues {
            if let Some(p) = &q.config.pool {
                pools.entry(p.as_str()).or_default().push(q);
            }
        }
        for (name, members) in pools {
            if let Some(p) = store.get_pool(name).await?
                && let Some(a) = p.config.adaptive
            {
                wanted.insert(LimitScope::Pool(name.to_owned()), (a, members));
            }
        }
        scopes.retain(|k, s| wanted.get(k).is_some_and(|(a, _)| *a == s.bounds));
        for (key, (bounds, members)) in wanted {
            let scope = scopes.entry(key.clone()).or_insert_with(|| Scope::new(bounds, now));
            let inflight: i64 = members.iter().map(|q| q.counts.running).sum();
            let mut runs = Vec::new();
            for q in &members {
                let ended = store.recent_runs(&q.name, scope.seen_until.plus_ms(1), MAX_RUNS).await?;
                if q.config.lane() == Lane::Online
                    && (!ended.is_empty() || q.counts.running > 0 || q.counts.queued > 0)
                {
                    scope.online_seen = Some(now);
                }
                runs.extend(ended);
            }
            runs.retain(|r| r.finished_at <= window_end);
            runs.sort_by_key(|r| r.finished_at);
            for r in &runs {
                scope.feed(
                    r.finished_at,
                    r.finished_at.since(r.started_at),
                    inflight.max(1),
                    Outcome::Success,
                );
            }
            for q in &members {
                for at in self.engine.overloads().take(&q.name) {
                    scope.feed(at, 0, inflight.max(1), Outcome::Overload);
                }
            }
            scope.seen_until = scope.seen_until.max(window_end);
            let limit = scope.alg.limit().clamp(bounds.min, bounds.max);
            if let LimitScope::Pool(pool) = &key {
                // While online work is about, offline queues of the pool stop at the capacity
                // estimate (API.md "Pools and lanes"); online ones may use the whole limit.
                // With none for a while, offline work may use the whole limit too.
                let online_active = scope.online_seen.is_some_and(|t| now.since(t) * 1_000 < OFFLINE_HOLD_US);
                let offline = online_active.then(|| scope.alg.offline_limit().clamp(bounds.min, limit));
                if scope.written_offline != Some(offline) {
                    store.set_offline_limit(pool, offline).await?;
                    scope.written_offline = Some(offline);
                }
            }
            if scope.written != Some(limit) {
                store.set_limit(key, Some(limit)).await?;
                scope.written = Some(limit);
            }
        }
        Ok(())
    }
}
