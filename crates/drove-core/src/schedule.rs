//! Schedules: when a recurring job's ticks fall, and which of them a scheduler pass enqueues.
//!
//! A schedule is a cron pattern in a time zone (5 fields, or 6 with seconds first; `@hourly`
//! and the other nicknames) or `@every DURATION`. Cron patterns are parsed and walked by the
//! `croner` crate over `jiff`'s zoned times (the time zone database is built in), which gives
//! the daylight-saving rules of Vixie cron: a fixed-time tick that falls in a skipped hour runs
//! once at the end of the gap, one that falls in a repeated hour runs once (the first time);
//! a pattern that steps through the hours (`0 * * * *`, `*/15 * * * *`) ticks every real
//! hour, so a repeated hour gets its ticks twice and a skipped one none. `@every` ticks fall on
//! multiples of the interval since the Unix epoch, whatever the time zone, so every node agrees
//! on them without state.
//!
//! Key decision: a schedule remembers the next tick it has not yet enqueued (`next_at`); a pass
//! at `now` enqueues, of the ticks from `next_at` to `now`, what its catch-up policy says
//! ([`fire`]), and moves `next_at` past `now` in the same transaction as the jobs it creates.

use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration_ms;
use crate::{Millis, ValidationError};

/// A tick fired at most this late is on time, also under `catch_up: "none"`.
pub const ON_TIME_MS: i64 = 60_000;
/// Most ticks one pass enqueues for one schedule under `catch_up: "all"` (the newest ones).
pub const MAX_CATCH_UP: usize = 100;
/// The shortest `@every` interval.
pub const MIN_EVERY_MS: i64 = 1_000;
/// Longest cron pattern accepted.
pub const MAX_CRON_LEN: usize = 256;

/// Which missed ticks a pass enqueues when more than one is due (the server was down, or the
/// schedule was just resumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Only a tick that is on time (at most [`ON_TIME_MS`] late); missed ones are skipped.
    None,
    /// One job for everything missed: the newest due tick.
    #[default]
    Last,
    /// Every missed tick, the newest [`MAX_CATCH_UP`] of them.
    All,
}

/// A parsed schedule: its pattern and time zone.
#[derive(Debug, Clone)]
pub struct Spec {
    rule: Rule,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Rule {
    Cron(Box<croner::Cron>),
    Every(i64),
}

impl Spec {
    /// Parses `cron` (a cron pattern or `@every 30s`) in `timezone` (an IANA name; default UTC).
    /// Errors name the field (`cron` or `timezone`).
    pub fn parse(cron: &str, timezone: Option<&str>) -> Result<Spec, ValidationError> {
        let tz = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                ValidationError::new(
                    "timezone",
                    format!("{name:?} is not a time zone name (e.g. Europe/Berlin)"),
                )
            })?,
        };
        let text = cron.trim();
        if text.is_empty() || text.len() > MAX_CRON_LEN {
            return Err(ValidationError::new("cron", format!("must be 1 to {MAX_CRON_LEN} characters")));
        }
        let rule = if let Some(every) = text.strip_prefix("@every") {
            let ms = parse_duration_ms(every.trim()).ok_or_else(|| {
                ValidationError::new("cron", "@every takes a duration such as 30s, 5m, 1h or 1500ms")
            })?;
            if !(MIN_EVERY_MS..=crate::validation::MAX_DURATION_MS).contains(&ms) {
                return Err(ValidationError::new(
                    "cron",
                    format!("@every must be at least {MIN_EVERY_MS} ms"),
                ));
            }
            Rule::Every(ms)
        } else {
            let parsed = croner::Cron::from_str(text)
                .map_err(|e| ValidationError::new("cron", format!("not a cron pattern: {e}")))?;
            Rule::Cron(Box::new(parsed))
        };
        let spec = Spec { rule, tz };
        // A pattern that never matches (`0 0 31 2 *`) is refused now, not silently never run.
        if spec.next_after(Millis(0)).is_none() {
            return Err(ValidationError::new("cron", "never matches a time"));
        }
        Ok(spec)
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match &self.rule {
            Rule::Every(ms) => Some(Millis((t.0.div_euclid(*ms) + 1).saturating_mul(*ms))),
            Rule::Cron(c) => {
                let z = self.zoned(t)?;
                c.find_next_occurrence(&z, false).ok().map(|z| Millis(z.timestamp().as_millisecond()))
            }
        }
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Millis) -> Option<Millis> {
        match &self.rule {
            Rule::Every(ms) => Some(Millis(t.0.div_euclid(*ms).saturating_mul(*ms))),
            Rule::Cron(c) => {
                let z = self.zoned(t)?;
                c.find_previous_occurrence(&z, true).ok().map(|z| Millis(z.timestamp().as_millisecond()))
            }
        }
    }

    /// The last tick strictly before `t`.
    fn last_before(&self, t: Millis) -> Option<Millis> {
        self.last_at_or_before(t.minus_ms(1))
    }

    fn zoned(&self, t: Millis) -> Option<jiff::Zoned> {
        Some(Timestamp::from_millisecond(t.0).ok()?.to_zoned(self.tz.clone()))
    }
}

/// What one scheduler pass does for a schedule whose next unenqueued tick is `next_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The ticks to enqueue a job for, oldest first (each job's `run_at`).
    pub ticks: Vec<Millis>,
    /// The schedule's next tick after this pass: the first after `now`.
    pub next_at: Option<Millis>,
}

/// The ticks due at `now` (from `next_at` on), as `catch_up` keeps them.
pub fn fire(spec: &Spec, next_at: Millis, now: Millis, catch_up: CatchUp) -> Fire {
    let next = spec.next_after(now);
    if next_at > now {
        return Fire { ticks: Vec::new(), next_at: Some(next_at) };
    }
    let Some(newest) = spec.last_at_or_before(now).filter(|t| *t >= next_at) else {
        return Fire { ticks: Vec::new(), next_at: next };
    };
    let ticks = match catch_up {
        CatchUp::None if now.since(newest) <= ON_TIME_MS => vec![newest],
        CatchUp::None => Vec::new(),
        CatchUp::Last => vec![newest],
        CatchUp::All => {
            let mut ticks = vec![newest];
            while ticks.len() < MAX_CATCH_UP {
                match spec.last_before(*ticks.last().expect("one tick")) {
                    Some(t) if t >= next_at => ticks.push(t),
                    _ => break,
                }
            }
            ticks.reverse();
            ticks
        }
    };
    Fire { ticks, next_at: next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        Millis::parse_rfc3339(text).unwrap()
    }

    fn walk(spec: &Spec, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = spec.next_after(t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn cron_patterns_in_utc_with_and_without_seconds() {
        let s = Spec::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            walk(&s, "2026-12-04T10:07:00.000Z", 2),
            ["2026-12-04T10:15:00.000Z", "2026-12-04T10:30:00.000Z"]
        );
        let s = Spec::parse("*/20 * * * * *", None).unwrap();
        assert_eq!(
            walk(&s, "2026-12-04T10:00:05.000Z", 2),
            ["2026-12-04T10:00:20.000Z", "2026-12-04T10:00:40.000Z"]
        );
        let s = Spec::parse("@daily", None).unwrap();
        assert_eq!(walk(&s, "2026-12-04T10:00:00.000Z", 1), ["2026-12-05T00:00:00.000Z"]);
    }

    #[test]
    fn every_ticks_on_multiples_of_its_interval() {
        let s = Spec::parse("@every 30s", Some("Asia/Kolkata")).unwrap();
        assert_eq!(
            walk(&s, "2026-12-04T10:00:10.000Z", 2),
            ["2026-12-04T10:00:30.000Z", "2026-12-04T10:01:00.000Z"]
        );
        assert_eq!(s.last_at_or_before(at("2026-12-04T10:00:30.000Z")), Some(at("2026-12-04T10:00:30.000Z")));
    }

    #[test]
    fn a_tick_in_a_skipped_hour_runs_once_and_a_repeated_hour_runs_once() {
        // New York: 2026-03-08 02:00 EST becomes 03:00 EDT; 2026-11-01 02:00 EDT becomes 01:00 EST.
        let daily = Spec::parse("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            walk(&daily, "2026-03-07T12:00:00.000Z", 3),
            // 03:00 EDT (the end of the gap), then 02:30 EDT on the following days
            ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z", "2026-03-10T06:30:00.000Z"]
        );
        let at_130 = Spec::parse("30 1 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            walk(&at_130, "2026-10-31T12:00:00.000Z", 2),
            // 01:30 EDT once (not again at 01:30 EST), then 01:30 EST the next day
            ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]
        );
        // An hourly pattern ticks every real hour: the repeated hour twice, no gap.
        let hourly = Spec::parse("0 * * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            walk(&hourly, "2026-11-01T04:30:00.000Z", 3),
            ["2026-11-01T05:00:00.000Z", "2026-11-01T06:00:00.000Z", "2026-11-01T07:00:00.000Z"]
        );
    }

    #[test]
    fn catch_up_keeps_what_its_policy_says() {
        let s = Spec::parse("0 * * * *", None).unwrap();
        let next_at = at("2026-12-04T10:00:00.000Z");
        // Down from before 10:00 until 12:30: three ticks missed (10, 11, 12).
        let now = at("2026-12-04T12:30:00.000Z");
        let after = Some(at("2026-12-04T13:00:00.000Z"));
        assert_eq!(fire(&s, next_at, now, CatchUp::None), Fire { ticks: vec![], next_at: after });
        assert_eq!(
            fire(&s, next_at, now, CatchUp::Last),
            Fire { ticks: vec![at("2026-12-04T12:00:00.000Z")], next_at: after }
        );
        assert_eq!(
            fire(&s, next_at, now, CatchUp::All).ticks,
            vec![
                at("2026-12-04T10:00:00.000Z"),
                at("2026-12-04T11:00:00.000Z"),
                at("2026-12-04T12:00:00.000Z")
            ]
        );
        // On time (fired 200 ms after the tick): one tick whatever the policy.
        let now = at("2026-12-04T10:00:00.200Z");
        for c in [CatchUp::None, CatchUp::Last, CatchUp::All] {
            assert_eq!(fire(&s, next_at, now, c).ticks, vec![next_at], "{c:?}");
        }
        // Not yet due: nothing, and next_at stays.
        let early = at("2026-12-04T09:59:59.000Z");
        assert_eq!(fire(&s, next_at, early, CatchUp::All), Fire { ticks: vec![], next_at: Some(next_at) });
        // All is bounded.
        let every = Spec::parse("@every 1s", None).unwrap();
        let fired = fire(&every, Millis(0), Millis(3_600_000), CatchUp::All);
        assert_eq!(fired.ticks.len(), MAX_CATCH_UP);
        assert_eq!(*fired.ticks.last().unwrap(), Millis(3_600_000));
    }

    #[test]
    fn bad_patterns_and_zones_name_their_field() {
        assert_eq!(Spec::parse("61 * * * *", None).unwrap_err().field, "cron");
        assert_eq!(Spec::parse("0 0 31 2 *", None).unwrap_err().field, "cron");
        assert_eq!(Spec::parse("@every 10ms", None).unwrap_err().field, "cron");
        assert_eq!(Spec::parse("@every soon", None).unwrap_err().field, "cron");
        assert_eq!(Spec::parse("* * * * *", Some("Mars/Olympus")).unwrap_err().field, "timezone");
    }
}
