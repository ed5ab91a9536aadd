//! The limit arithmetic every store applies in its claim transaction, kept in one place so the
//! backends cannot drift apart: which concurrency limit is in force, how much room a pool
//! leaves a queue of a given lane, and the rounding of GCRA times.

use drove_core::queue::{PoolConfig, QueueConfig};
use drove_core::{Lane, Millis};

/// A queue's concurrency limit in force: `concurrency`, lowered by the adaptive limit.
pub fn queue_cap(config: &QueueConfig, limit_now: Option<i64>) -> Option<i64> {
    lowest(config.concurrency, config.adaptive.and(limit_now))
}

/// A pool's concurrency limit in force: `concurrency`, lowered by the adaptive limit.
pub fn pool_cap(config: &PoolConfig, limit_now: Option<i64>) -> Option<i64> {
    lowest(config.concurrency, config.adaptive.and(limit_now))
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

/// How many more jobs a queue of `lane` may start in a pool with limit `cap` (API.md "Pools and
/// lanes"): online queues take any free permit; offline queues take what is left while no
/// online job waits, and never less than their minimum share of the limit.
pub fn pool_room(cap: i64, load: PoolLoad, lane: Lane, offline_min_share: f64) -> i64 {
    let free = cap - load.running_total;
    match lane {
        Lane::Online => free,
        Lane::Offline if load.online_ready => {
            let share = (offline_min_share * cap as f64).ceil() as i64;
            free.min(share - load.running_offline)
        }
        Lane::Offline => free,
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
        assert_eq!(pool_room(10, busy, Lane::Online, 0.2), 1);
        assert_eq!(pool_room(10, busy, Lane::Offline, 0.2), 1, "share 2, one running");
        let idle_online = PoolLoad { online_ready: false, ..busy };
        assert_eq!(pool_room(10, idle_online, Lane::Offline, 0.2), 1, "all free permits");
        let full = PoolLoad { running_total: 10, running_offline: 0, online_ready: true };
        assert_eq!(pool_room(10, full, Lane::Offline, 0.2), 0);
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
