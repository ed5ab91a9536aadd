//! Learned rates: a scope's configured `rate` is a ceiling; throttled outcomes (a provider's 429
//! and Retry-After) lower the rate in force beneath it, and it probes back up while calls
//! succeed. The state is a few numbers kept in the scope's row (so every node obeys the same
//! rate) and the rate in force is a pure function of that state and the time, so succeeding
//! calls write nothing.
//!
//! - **Cut.** The first throttled outcome after a clean spell halves the rate in force: at that
//!   moment what the provider accepted is still the old regime, and a halving is the step a
//!   provider's own limit most often takes. A throttle that follows a recent cut sets the rate
//!   to 97% of what the provider accepted over the last second (between 45% and 97% of the rate
//!   in force): by then that count is the new regime's. 429s of calls issued before a cut do
//!   not cut again for a second (`REACTION_MS`).
//! - **Hold.** After a cut the rate holds for `hold` (1.5 s, doubling with each cut that follows
//!   a recent one, up to 6 s): a rate that drew 429s is not tried again before a lower one has
//!   held cleanly for that long.
//! - **Probe.** Then it doubles every 1.5 s back toward the ceiling: a provider whose limit
//!   came back is found within a few seconds of the hold ending.
//!
//! `auto` scopes have no ceiling: they start at [`AUTO_START_PER_S`] and probe up from there.

use crate::Millis;
use crate::gcra::emission_us;
use crate::queue::RateLimit;

/// 429s this soon after a cut come from calls issued before it: they do not cut again.
pub const REACTION_MS: i64 = 1_000;
/// The first hold after a cut; each cut that follows a recent one doubles it, up to
/// [`HOLD_MAX_MS`].
pub const HOLD_MS: i64 = 1_500;
pub const HOLD_MAX_MS: i64 = 6_000;
/// While probing, the rate doubles this often.
pub const DOUBLING_MS: i64 = 1_500;
/// A throttle this long after the last cut's hold ended still follows it (a recent cut).
pub const FOLLOW_MS: i64 = 6_000;
/// The first cut after a clean spell.
pub const FIRST_CUT: f64 = 0.5;
/// A cut that follows a recent one keeps this share of what the provider accepted.
pub const KEEP: f64 = 0.97;
/// Where an `auto` rate (no ceiling) starts.
pub const AUTO_START_PER_S: f64 = 10.0;
/// A cut never goes below this share of the rate in force: few successes may mean little demand
/// (the scope was not at the provider's limit), not a low limit.
pub const CUT_FLOOR: f64 = 0.45;
/// The fastest rate anything learns (one start per µs).
const FASTEST_INTERVAL_US: i64 = 1;

/// A scope's learned-rate state, as its row keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The emission interval set at `at` (µs per start).
    pub interval_us: i64,
    /// When it was set (a cut, or an `auto` scope's first use).
    pub at: Millis,
    /// Cuts in a row that each followed a probe (the hold doubles with each).
    pub strikes: i64,
}

/// The emission interval of a rate per second.
fn interval_of(per_s: f64) -> i64 {
    if per_s <= 0.0 || !per_s.is_finite() {
        return i64::MAX / 4;
    }
    ((1e6 / per_s).round() as i64).max(FASTEST_INTERVAL_US)
}

/// Starts per second of an emission interval.
pub fn per_second(interval_us: i64) -> f64 {
    1e6 / interval_us.max(1) as f64
}

/// The ceiling's emission interval: the configured rate, or none (the fastest) for `auto`.
fn ceiling_us(rate: &RateLimit) -> i64 {
    if rate.is_auto() { FASTEST_INTERVAL_US } else { emission_us(rate) }
}

fn hold_ms(strikes: i64) -> i64 {
    let doublings = u32::try_from((strikes - 1).clamp(0, 10)).unwrap_or(0);
    (HOLD_MS << doublings).min(HOLD_MAX_MS)
}

/// The emission interval in force at `now`.
pub fn interval_in_force(rate: &RateLimit, learned: Option<&Learned>, now: Millis) -> i64 {
    let ceiling = ceiling_us(rate);
    if !rate.learns() {
        return ceiling;
    }
    let Some(l) = learned else {
        return if rate.is_auto() { interval_of(AUTO_START_PER_S) } else { ceiling };
    };
    let since = now.since(l.at).max(0);
    let hold = if l.strikes == 0 { 0 } else { hold_ms(l.strikes) };
    if since <= hold {
        return l.interval_us.max(ceiling);
    }
    let doublings = (since - hold) as f64 / DOUBLING_MS as f64;
    let grown = (l.interval_us as f64 / 2f64.powf(doublings.min(60.0))) as i64;
    grown.max(ceiling)
}

/// Until when a throttled outcome at `now` holds its scope, `until` being its retry-after. Under
/// a rate that learns, at most one interval of the rate in force after the cut (`learned`): the
/// cut already slows the scope, and holding it a whole retry-after as well (one rounded up to a
/// second, say) would idle it after every probe. A rate that does not learn honours the
/// retry-after in full.
pub fn hold_until(rate: &RateLimit, learned: Option<&Learned>, until: Millis, now: Millis) -> Millis {
    if !rate.learns() {
        return until;
    }
    let interval_us = interval_in_force(rate, learned, now);
    let interval_ms = interval_us.div_euclid(1_000) + i64::from(interval_us.rem_euclid(1_000) != 0);
    until.min(now.plus_ms(interval_ms))
}

/// The learned state after a throttled outcome at `now`, given how many calls of the scope
/// succeeded over the last second (`accepted_1s`); `None` when nothing changes (no
/// learning, or 429s of calls issued before the last cut).
pub fn on_throttled(
    rate: &RateLimit,
    learned: Option<&Learned>,
    now: Millis,
    accepted_1s: i64,
) -> Option<Learned> {
    if !rate.learns() {
        return None;
    }
    if let Some(l) = learned
        && l.strikes > 0
        && now.since(l.at) < REACTION_MS
    {
        return None;
    }
    let in_force = per_second(interval_in_force(rate, learned, now));
    let recent = learned.filter(|l| l.strikes > 0 && now.since(l.at) <= hold_ms(l.strikes) + FOLLOW_MS);
    let (target, strikes) = match recent {
        // A cut that follows a recent one: the last second is the new regime's; and the next
        // hold doubles (the level that failed is not tried again before a lower one held longer).
        Some(l) => {
            ((KEEP * accepted_1s.max(0) as f64).clamp(CUT_FLOOR * in_force, KEEP * in_force), l.strikes + 1)
        }
        None => (FIRST_CUT * in_force, 1),
    };
    Some(Learned { interval_us: interval_of(target).max(ceiling_us(rate)), at: now, strikes })
}

/// The state an `auto` scope starts with at its first use.
pub fn auto_start(now: Millis) -> Learned {
    Learned { interval_us: interval_of(AUTO_START_PER_S), at: now, strikes: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: i64) -> RateLimit {
        RateLimit { limit, period_ms: 1_000, burst: None, learn: None, auto: false, per: None }
    }

    fn per_s(r: &RateLimit, l: Option<&Learned>, at_ms: i64) -> f64 {
        per_second(interval_in_force(r, l, Millis(at_ms)))
    }

    #[test]
    fn a_halved_provider_is_followed_in_two_cuts_and_found_again_when_it_comes_back() {
        let r = rate(100);
        assert!((per_s(&r, None, 0) - 100.0).abs() < 0.01, "the ceiling until a 429");
        // The provider halves: the first 429 halves the rate in force.
        let l1 = on_throttled(&r, None, Millis(10_000), 100).unwrap();
        assert!((per_s(&r, Some(&l1), 10_000) - 50.0).abs() < 0.1);
        // 429s of calls issued before the cut do not cut again.
        assert_eq!(on_throttled(&r, Some(&l1), Millis(10_500), 50), None);
        // One more a second later: 97% of the 50 the provider accepted over that second.
        let l2 = on_throttled(&r, Some(&l1), Millis(11_100), 50).unwrap();
        let after = per_s(&r, Some(&l2), 11_100);
        assert!((48.0..=49.0).contains(&after), "{after}");
        assert_eq!(l2.strikes, 2);
        // It holds (3 s after a second cut), then probes, doubling every 1.5 s, to the ceiling.
        assert!((per_s(&r, Some(&l2), 14_000) - after).abs() < 0.01);
        assert!(per_s(&r, Some(&l2), 15_600) > 1.9 * after);
        assert!((per_s(&r, Some(&l2), 20_000) - 100.0).abs() < 0.01);
    }

    #[test]
    fn repeated_cuts_at_one_level_hold_longer_each_time_up_to_a_bound() {
        let r = rate(50);
        let l1 = on_throttled(&r, None, Millis(0), 50).unwrap();
        assert_eq!(l1.strikes, 1);
        let l2 = on_throttled(&r, Some(&l1), Millis(1_700), 25).unwrap();
        assert_eq!(l2.strikes, 2);
        let held = per_s(&r, Some(&l2), 1_700);
        assert!((per_s(&r, Some(&l2), 4_600) - held).abs() < 0.01, "held 3 s");
        let l3 = on_throttled(&r, Some(&l2), Millis(5_000), 25).unwrap();
        assert_eq!(l3.strikes, 3);
        let l4 = on_throttled(&r, Some(&l3), Millis(11_500), 25).unwrap();
        assert!(
            (per_s(&r, Some(&l4), 17_400) - per_s(&r, Some(&l4), 11_500)).abs() < 0.01,
            "held 6 s, the bound"
        );
        // A 429 long after a clean run starts over.
        let l5 = on_throttled(&r, Some(&l4), Millis(100_000), 25).unwrap();
        assert_eq!(l5.strikes, 1);
    }

    #[test]
    fn a_cut_is_never_deeper_than_its_floor_nor_above_the_ceiling() {
        let r = rate(100);
        let l1 = on_throttled(&r, None, Millis(0), 0).unwrap();
        let l2 = on_throttled(&r, Some(&l1), Millis(1_100), 0).unwrap();
        assert!((per_s(&r, Some(&l2), 1_100) - 22.5).abs() < 0.5, "45% of the 50 in force at most");
        let l2 = on_throttled(&r, Some(&l1), Millis(1_100), 1_000).unwrap();
        assert!(per_s(&r, Some(&l2), 1_100) <= 48.5 + 0.01, "97% of the rate in force at most");
    }

    #[test]
    fn auto_rates_start_low_and_grow_and_fixed_rates_do_not_learn() {
        let auto = RateLimit::auto();
        let l = auto_start(Millis(0));
        assert!((per_s(&auto, Some(&l), 0) - AUTO_START_PER_S).abs() < 0.01);
        assert!(per_s(&auto, Some(&l), 10_000) > 300.0);
        let fixed = RateLimit { learn: Some(false), ..rate(50) };
        assert_eq!(on_throttled(&fixed, None, Millis(0), 10), None);
        assert!((per_s(&fixed, None, 0) - 50.0).abs() < 0.01);
    }
}
