//! The limit arithmetic every store applies in its claim transaction, kept in one place so the
//! backends cannot drift apart: which concurrency limit is in force, how much room a pool
//! leaves a queue of a given lane, and the rounding of GCRA times.

use drove_core::queue::{PoolConfig, QueueConfig, QueuePatch};
use drove_core::{Lane, Millis};

use crate::PoolInfo;

/// A queue's concurrency limit in force: `concurrency`, lowered by the adaptive limit.
pub fn queue_cap(config: &QueueConfig, limit_now: Option<i64>) -> Option<i64> {
    lowest(config.concurrency, config.adaptive.and(limit_now))
}

/// A pool's concurrency limit in force: `concurrency`, lowered by the adaptive limit.
pub fn pool_cap(config: &PoolConfig, limit_now: Option<i64>) -> Option<i64> {
    lowest(config.concurrency, config.adaptive.and(limit_now))
}

/// The adaptive limit a queue or pool starts with when `adaptive` is first set (then the limit
/// service moves it).
pub const INITIAL_ADAPTIVE_LIMIT: i64 = 20;

/// A queue's row as both stores keep it: its settings and the flow-control state every node
/// shares (the GCRA time and learned rate of its `rate`, a throttled hold, the adaptive limit in
/// force).
#[derive(Debug, Clone, Default)]
pub struct QueueRow {
    pub config: QueueConfig,
    /// GCRA theoretical arrival time of the queue's `rate`, µs.
    pub tat: Option<i64>,
    pub held_until: Option<i64>,
    /// The adaptive limit in force.
    pub limit_now: Option<i64>,
    /// The rate learned beneath `rate` from throttled outcomes.
    pub learned: Option<drove_core::learned::Learned>,
}

impl QueueRow {
    /// The queue's concurrency limit in force.
    pub fn cap(&self) -> Option<i64> {
        queue_cap(&self.config, self.limit_now)
    }

    /// The state of the queue's `rate`.
    pub fn rate_state(&self) -> crate::admission::RateState {
        crate::admission::RateState { tat: self.tat, learned: self.learned }
    }

    /// Applies a settings patch (docs/API.md "PUT /v1/queues/{name}"): a newly adaptive queue starts
    /// at [`INITIAL_ADAPTIVE_LIMIT`] within its bounds, and a changed rate starts afresh (no
    /// GCRA debt, nothing learned).
    pub fn apply(&mut self, patch: QueuePatch) {
        let old_rate = self.config.rate;
        self.config.apply(patch);
        self.limit_now = self
            .config
            .adaptive
            .map(|a| self.limit_now.unwrap_or(INITIAL_ADAPTIVE_LIMIT).clamp(a.min, a.max));
        if self.config.rate != old_rate {
            self.tat = None;
            self.learned = None;
        }
    }

    /// The queue as the API shows it.
    pub fn info(&self, name: &str, counts: crate::Counts, now: Millis) -> crate::QueueInfo {
        crate::QueueInfo {
            name: name.to_owned(),
            config: self.config.clone(),
            counts,
            limit_now: self.cap(),
            held_until: self.held_until.filter(|h| *h > now.0).map(Millis),
            rate_now: crate::admission::rate_now(self.config.rate.as_ref(), &self.rate_state(), now),
        }
    }
}

/// A pool's row as both stores keep it: its settings and the limits the limit service wrote.
#[derive(Debug, Clone, Default)]
pub struct PoolRow {
    pub config: PoolConfig,
    pub limit_now: Option<i64>,
    pub offline_limit: Option<i64>,
}

impl PoolRow {
    /// The pool's concurrency limit in force.
    pub fn cap(&self) -> Option<i64> {
        pool_cap(&self.config, self.limit_now)
    }

    /// The offline limit in force: only with `adaptive`, never above the limit in force.
    pub fn offline_cap(&self) -> Option<i64> {
        let offline = self.config.adaptive.and(self.offline_limit)?;
        Some(self.cap().map_or(offline, |cap| offline.min(cap)))
    }

    /// How many more jobs a queue of `lane` may start now ([`pool_room`]; unbounded without a
    /// limit).
    pub fn room(&self, load: PoolLoad, lane: Lane) -> i64 {
        match self.cap() {
            Some(cap) => pool_room(cap, self.offline_cap(), load, lane, self.config.offline_min_share()),
            None => i64::MAX,
        }
    }

    /// The pool as the API shows it.
    pub fn info(&self, name: &str, queues: Vec<String>) -> PoolInfo {
        PoolInfo {
            name: name.to_owned(),
            config: self.config.clone(),
            limit_now: self.cap(),
            offline_limit_now: self.offline_cap(),
            queues,
        }
    }
}

fn lowest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a pool's queues are doing right now, as a claim counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolLoad {
    pub running_total: i64,
    pub running_offline: i64,
    /// Whether any online queue of the pool has a ready job.
    pub online_ready: bool,
}

/// How many more jobs a queue of `lane` may start in a pool with limit `cap` and offline limit
/// `offline_cap` (docs/API.md "Pools and lanes"): online queues take any free permit; offline
/// queues take what is left below the offline limit while no online job waits, and never less
/// than their minimum share of the offline limit.
///
/// The offline limit is the downstream's capacity estimate: permits above it would only queue
/// offline calls inside the downstream, where online calls would wait behind them.
pub fn pool_room(
    cap: i64,
    offline_cap: Option<i64>,
    load: PoolLoad,
    lane: Lane,
    offline_min_share: f64,
) -> i64 {
    let free = cap - load.running_total;
    match lane {
        Lane::Online => free,
        Lane::Offline => {
            let offline_cap = offline_cap.map_or(cap, |o| o.min(cap));
            let share = (offline_min_share * offline_cap as f64).ceil() as i64 - load.running_offline;
            let rest = if load.online_ready { 0 } else { offline_cap - load.running_total };
            free.min(share.max(rest))
        }
    }
}

/// The earlier of an optional time and another.
pub fn earliest(a: Option<Millis>, b: Millis) -> Option<Millis> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Microseconds (GCRA's unit) to the millisecond at or after them.
pub fn us_to_ms_ceil(us: i64) -> Millis {
    Millis(us.div_euclid(1_000) + i64::from(us.rem_euclid(1_000) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_keeps_its_share_only_while_online_work_waits() {
        let busy = PoolLoad { running_total: 9, running_offline: 1, online_ready: true };
        assert_eq!(pool_room(10, None, busy, Lane::Online, 0.2), 1);
        assert_eq!(pool_room(10, None, busy, Lane::Offline, 0.2), 1, "share 2, one running");
        let idle_online = PoolLoad { online_ready: false, ..busy };
        assert_eq!(pool_room(10, None, idle_online, Lane::Offline, 0.2), 1, "all free permits");
        let full = PoolLoad { running_total: 10, running_offline: 0, online_ready: true };
        assert_eq!(pool_room(10, None, full, Lane::Offline, 0.2), 0);
    }

    #[test]
    fn offline_stops_at_the_offline_limit_online_does_not() {
        let load = PoolLoad { running_total: 6, running_offline: 5, online_ready: false };
        assert_eq!(pool_room(20, Some(8), load, Lane::Offline, 0.1), 2, "up to the offline limit");
        assert_eq!(pool_room(20, Some(8), load, Lane::Online, 0.1), 14, "online: the whole limit");
        let over = PoolLoad { running_total: 12, running_offline: 0, online_ready: false };
        assert_eq!(
            pool_room(20, Some(8), over, Lane::Offline, 0.1),
            1,
            "the share (0.1 x 8), above the offline limit"
        );
        let three = PoolLoad { running_total: 3, running_offline: 3, online_ready: false };
        assert_eq!(
            pool_room(4, Some(8), three, Lane::Offline, 0.1),
            1,
            "the offline limit never exceeds the limit"
        );
        let waiting = PoolLoad { running_total: 3, running_offline: 0, online_ready: true };
        assert_eq!(
            pool_room(20, Some(30), waiting, Lane::Offline, 0.1),
            2,
            "share of min(limit, offline limit)"
        );
    }

    #[test]
    fn caps_take_the_lowest_limit_set() {
        let mut c = QueueConfig { concurrency: Some(8), ..Default::default() };
        assert_eq!(queue_cap(&c, Some(3)), Some(8), "limit_now counts only with adaptive set");
        c.adaptive = Some(drove_core::Adaptive { min: 1, max: 10 });
        assert_eq!(queue_cap(&c, Some(3)), Some(3));
        c.concurrency = None;
        assert_eq!(queue_cap(&c, None), None);
        assert_eq!(us_to_ms_ceil(1_001), Millis(2));
        assert_eq!(us_to_ms_ceil(2_000), Millis(2));
    }
}
