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
    /// When the limit the algorithm holds last changed (wall clock): the store applies it a
    /// moment later, and runs that started before it say nothing about it.
    limit_since: Millis,
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
            limit_since: now,
        }
    }

    /// Feeds the runs that ended (sorted by end), as read `now`.
    fn feed_runs(&mut self, runs: &[drove_store::RunSample], inflight: i64, now: Millis) {
        for r in runs {
            // A probe measures the halved limit: runs fed late (this service reads them up to
            // TICK + LAG after they end) that started before the halved limit took effect
            // queued under the old one, and would make the probe read queueing.
            if self.alg.probing() && r.started_at < self.limit_since {
                continue;
            }
            let before = self.alg.limit();
            self.feed(r.finished_at, r.finished_at.since(r.started_at), inflight.max(1), Outcome::Success);
            if self.alg.limit() != before {
                self.limit_since = now;
            }
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
        let now = crate::now();
        let queues = store.list_queues(now).await?;
        if !queues.iter().any(|q| q.config.adaptive.is_some() || q.config.pool.is_some()) {
            scopes.clear();
            return Ok(());
        }
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
        // A queue's overloads are taken once per tick and fed to every scope it is in (its own
        // adaptive limit and its pool's), not only to whichever is computed first.
        let mut overloads: HashMap<String, Vec<Millis>> = HashMap::new();
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
            scope.feed_runs(&runs, inflight, now);
            for q in &members {
                let taken =
                    overloads.entry(q.name.clone()).or_insert_with(|| self.engine.overloads().take(&q.name));
                for &at in taken.iter() {
                    scope.feed(at, 0, inflight.max(1), Outcome::Overload);
                }
            }
            scope.seen_until = scope.seen_until.max(window_end);
            let limit = scope.alg.limit().clamp(bounds.min, bounds.max);
            if let LimitScope::Pool(pool) = &key {
                // While online work is about, offline queues of the pool stop at the capacity
                // estimate (docs/API.md "Pools and lanes"); online ones may use the whole limit.
                // With none for a while, offline work may use the whole limit too.
                let online_active = scope.online_seen.is_some_and(|t| now.since(t) * 1_000 < OFFLINE_HOLD_US);
                let offline = online_active.then(|| scope.alg.offline_limit().clamp(bounds.min, limit));
                if scope.written_offline != Some(offline) {
                    store.set_offline_limit(pool, offline, now).await?;
                    scope.written_offline = Some(offline);
                }
            }
            if scope.written != Some(limit) {
                store.set_limit(key, Some(limit), now).await?;
                scope.written = Some(limit);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use drove_core::JobState;
    use drove_store::RunSample;

    use super::*;

    /// The product's loop on a virtual clock: a closed loop of workers keeping the limit in force
    /// busy against a downstream of `c` slots (50 ms each, FIFO beyond `c`), the limit service
    /// reading runs every TICK up to LAG after they ended and writing the limit it computes,
    /// which claims obey from then on. Returns the scope, and when its first probe began (ms).
    /// `seed` fixes the algorithm's random draws (the samples' `rand`), so a case is exact.
    fn product(
        c: usize,
        secs: i64,
        filter_probe_runs: bool,
        seed: u64,
    ) -> (Scope, Option<i64>, Vec<(i64, i64)>) {
        const SERVICE_MS: i64 = 50;
        fastrand::seed(seed);
        let bounds = Adaptive { min: 1, max: 32 };
        let mut scope = Scope::new(bounds, Millis(0));
        scope.seen_until = Millis(0);
        let mut applied = scope.alg.limit();
        // Calls in the downstream: (started, slot free at); FIFO queue of (started).
        let mut serving: Vec<(i64, i64)> = Vec::new();
        let mut waiting: VecDeque<i64> = VecDeque::new();
        let mut ended: Vec<RunSample> = Vec::new();
        let mut first_probe = None;
        let mut trace = Vec::new();
        let mut id = 0;
        for ms in 0..secs * 1_000 {
            // Calls that end now free their slot; the next waiting call takes it.
            let mut done = Vec::new();
            serving.retain(|(started, free_at)| {
                if *free_at <= ms {
                    done.push(*started);
                    false
                } else {
                    true
                }
            });
            for started in done {
                id += 1;
                ended.push(RunSample {
                    id: drove_core::JobId(id),
                    state: JobState::Succeeded,
                    run_at: Millis(started),
                    started_at: Millis(started),
                    finished_at: Millis(ms),
                    partial: false,
                });
            }
            while serving.len() < c && !waiting.is_empty() {
                let started = waiting.pop_front().unwrap();
                serving.push((started, ms + SERVICE_MS));
            }
            // Workers keep `applied` calls in flight (an endless backlog).
            while (serving.len() + waiting.len()) < applied as usize {
                if serving.len() < c {
                    serving.push((ms, ms + SERVICE_MS));
                } else {
                    waiting.push_back(ms);
                }
            }
            if ms % TICK.as_millis() as i64 == 0 {
                let window_end = Millis(ms - LAG_MS);
                let mut runs: Vec<RunSample> = ended
                    .iter()
                    .filter(|r| r.finished_at > scope.seen_until && r.finished_at <= window_end)
                    .cloned()
                    .collect();
                runs.sort_by_key(|r| r.finished_at);
                let inflight = (serving.len() + waiting.len()) as i64;
                if filter_probe_runs {
                    scope.feed_runs(&runs, inflight, Millis(ms));
                } else {
                    for r in &runs {
                        scope.feed(
                            r.finished_at,
                            r.finished_at.since(r.started_at),
                            inflight.max(1),
                            Outcome::Success,
                        );
                    }
                }
                scope.seen_until = scope.seen_until.max(window_end);
                if first_probe.is_none() && scope.alg.probing() {
                    first_probe = Some(ms);
                }
                applied = scope.alg.limit();
                trace.push((ms, applied));
            }
        }
        (scope, first_probe, trace)
    }

    #[test]
    fn fed_as_the_service_feeds_it_the_limiter_starts_fast_probes_early_and_measures_unqueued() {
        for seed in 1..=8 {
            fed_as_the_service_feeds_it(seed);
        }
    }

    fn fed_as_the_service_feeds_it(seed: u64) {
        let (scope, first_probe, trace) = product(8, 20, true, seed);
        // Slow start: a fresh scope reaches the downstream's 8 slots within a second.
        let reached = trace.iter().find(|(_, l)| *l >= 8).map(|(ms, _)| *ms);
        assert!(reached.is_some_and(|ms| ms <= 1_000), "seed {seed}: limit 8 first at {reached:?} ms");
        // The first probe comes a second or two after load starts, not 10 s later.
        assert!(first_probe.is_some_and(|ms| ms <= 3_000), "seed {seed}: first probe at {first_probe:?} ms");
        // The probe measures runs that started under the halved limit: the capacity estimate
        // is near the 8 slots, not 1.7-2x above them.
        let capacity = scope.alg.capacity().expect("an estimate");
        eprintln!(
            "seed {seed}: slow start reached 8 at {reached:?} ms, first probe at {first_probe:?} ms, capacity {capacity:.2}, limit {}, offline {}",
            scope.alg.limit(),
            scope.alg.offline_limit()
        );
        assert!((6.0..=10.5).contains(&capacity), "seed {seed}: capacity estimate {capacity:.1} for 8 slots");
    }

    #[test]
    fn without_dropping_runs_started_before_the_probe_it_reads_queueing() {
        // The defect of the report, kept as the reference: fed without the filter, the same
        // loop (the same random draws) estimates capacity above the filtered estimate.
        for seed in 1..=8 {
            let (scope, _, _) = product(8, 20, false, seed);
            let capacity = scope.alg.capacity().unwrap_or(0.0);
            let (filtered, _, _) = product(8, 20, true, seed);
            let good = filtered.alg.capacity().unwrap_or(0.0);
            eprintln!("seed {seed}: capacity unfiltered {capacity:.2}, filtered {good:.2}");
            assert!(capacity > good, "seed {seed}: unfiltered {capacity:.1} vs filtered {good:.1}");
        }
    }
}
