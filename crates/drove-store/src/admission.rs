//! What a claim may hand out, decided once for both stores: the queue's gate (paused, held),
//! its rate (GCRA at the rate in force, learned or configured, per job or per claim), and each
//! group's allowance (group concurrency, hold, group rate). The stores read the rows, call these
//! and write back what they say; the picking of jobs stays theirs (their indexes, their locks).

use drove_core::learned::{self, Learned};
use drove_core::queue::QueueConfig;
use drove_core::{Millis, RateLimit, gcra};

use crate::limits::{earliest, us_to_ms_ceil};

/// A scope's rate state as its row keeps it: the GCRA time and the learned rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateState {
    /// GCRA theoretical arrival time, µs.
    pub tat: Option<i64>,
    pub learned: Option<Learned>,
}

impl RateState {
    /// The row's three learned columns (interval µs, set at ms, strikes) as a state.
    pub fn learned_from(interval_us: Option<i64>, at: Option<i64>, strikes: Option<i64>) -> Option<Learned> {
        Some(Learned { interval_us: interval_us?, at: Millis(at?), strikes: strikes.unwrap_or(0) })
    }
}

/// The emission interval of `rate` in force at `now` (learned beneath the configured rate).
pub fn interval_in_force(rate: &RateLimit, st: &RateState, now: Millis) -> i64 {
    learned::interval_in_force(rate, st.learned.as_ref(), now)
}

/// Starts per second in force, for display (`rate_now`).
pub fn rate_now(rate: Option<&RateLimit>, st: &RateState, now: Millis) -> Option<f64> {
    rate.map(|r| (learned::per_second(interval_in_force(r, st, now)) * 1_000.0).round() / 1_000.0)
}

/// How many of `want` starts the scope's rate allows now, and, when it holds some back, when
/// more may start. A rate `per: "claim"` counts a claim as one start however many jobs it takes.
pub fn rate_grant(rate: &RateLimit, st: &RateState, now: Millis, want: i64) -> (i64, Option<Millis>) {
    let now_us = now.0.saturating_mul(1_000);
    let interval = interval_in_force(rate, st, now);
    let asked = if rate.per_claim() { want.min(1) } else { want };
    let g = gcra::take_at(interval, rate.burst_or_default(), st.tat, now_us, asked);
    let retry = if g.granted < asked { g.next_at_us.map(us_to_ms_ceil) } else { None };
    let granted = if rate.per_claim() { if g.granted > 0 { want } else { 0 } } else { g.granted };
    (granted, retry)
}

/// The scope's GCRA time after a claim took `n` jobs from it.
pub fn rate_taken(rate: &RateLimit, st: &RateState, now: Millis, n: i64) -> i64 {
    let used = if rate.per_claim() { n.min(1) } else { n };
    let interval = interval_in_force(rate, st, now);
    gcra::take_at(interval, rate.burst_or_default(), st.tat, now.0.saturating_mul(1_000), used).tat_us
}

/// The learned state an `auto` scope starts with, to write at its first claim (`None`: nothing
/// to write).
pub fn first_use(rate: &RateLimit, st: &RateState, now: Millis) -> Option<Learned> {
    (rate.is_auto() && st.learned.is_none()).then(|| learned::auto_start(now))
}

/// The learned state after a throttled outcome in the scope (see [`learned::on_throttled`]).
pub fn cut(rate: &RateLimit, st: &RateState, now: Millis, accepted_1s: i64) -> Option<Learned> {
    learned::on_throttled(rate, st.learned.as_ref(), now, accepted_1s)
}

/// Until when a throttled outcome holds its scope (`until`: its retry-after; `st`: the state
/// after the cut): see [`learned::hold_until`].
pub fn throttle_hold(rate: &RateLimit, st: &RateState, until: Millis, now: Millis) -> Millis {
    learned::hold_until(rate, st.learned.as_ref(), until, now)
}

/// Why a claim hands out nothing before looking at jobs: paused, or held by a throttled
/// outcome until a time (`Some(time)`: tell the claimer when to come back).
pub fn gate(config: &QueueConfig, held_until: Option<i64>, now: Millis) -> Option<Option<Millis>> {
    if config.is_paused() {
        return Some(None);
    }
    held_until.filter(|h| *h > now.0).map(|h| Some(Millis(h)))
}

/// A group as a claim sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupView {
    pub running: i64,
    pub held_until: Option<i64>,
    pub rate: RateState,
}

/// How many jobs a claim may take from a group (of `left` it still wants), and when the group
/// may give more if its hold or rate holds them back.
pub fn group_allowance(
    config: &QueueConfig,
    g: &GroupView,
    left: i64,
    now: Millis,
    retry_at: &mut Option<Millis>,
) -> i64 {
    let mut allowance = left;
    if let Some(cap) = config.group_concurrency {
        allowance = allowance.min(cap - g.running);
    }
    if let Some(h) = g.held_until.filter(|h| *h > now.0) {
        *retry_at = earliest(*retry_at, Millis(h));
        return 0;
    }
    if let Some(rate) = &config.group_rate
        && allowance > 0
    {
        let (granted, retry) = rate_grant(rate, &g.rate, now, allowance);
        if let Some(r) = retry {
            *retry_at = earliest(*retry_at, r);
        }
        allowance = granted;
    }
    allowance.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: i64, burst: Option<i64>) -> RateLimit {
        RateLimit { limit, period_ms: 1_000, burst, learn: None, auto: false, per: None }
    }

    #[test]
    fn a_rate_per_claim_counts_claims_not_jobs() {
        let mut r = rate(10, None);
        r.per = Some(drove_core::queue::RateUnit::Claim);
        let st = RateState::default();
        let (granted, retry) = rate_grant(&r, &st, Millis(0), 20);
        assert_eq!((granted, retry), (20, None), "one claim of 20 jobs is one start");
        let st = RateState { tat: Some(rate_taken(&r, &st, Millis(0), 20)), learned: None };
        let (granted, retry) = rate_grant(&r, &st, Millis(50), 20);
        assert_eq!((granted, retry), (0, Some(Millis(100))), "the next claim waits 100 ms");
    }

    #[test]
    fn a_learned_rate_paces_claims_beneath_the_ceiling() {
        let r = rate(50, None);
        let learned = learned::on_throttled(&r, None, Millis(0), 50);
        let st = RateState { tat: None, learned };
        let per_s = rate_now(Some(&r), &st, Millis(0)).unwrap();
        assert_eq!(per_s, 25.0);
        let (granted, _) = rate_grant(&r, &st, Millis(0), 5);
        assert_eq!(granted, 1, "burst 1");
    }

    #[test]
    fn groups_are_capped_held_and_rated() {
        let cfg = QueueConfig {
            group_concurrency: Some(2),
            group_rate: Some(rate(1_000, Some(100))),
            ..Default::default()
        };
        let mut retry = None;
        assert_eq!(
            group_allowance(&cfg, &GroupView { running: 1, ..Default::default() }, 5, Millis(0), &mut retry),
            1
        );
        let held = GroupView { held_until: Some(10), ..Default::default() };
        assert_eq!(group_allowance(&cfg, &held, 5, Millis(0), &mut retry), 0);
        assert_eq!(retry, Some(Millis(10)));
    }
}
