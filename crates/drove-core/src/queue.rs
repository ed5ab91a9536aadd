//! Queue and pool settings (docs/API.md, "Queues and their settings" and "Flow control").

use serde::{Deserialize, Deserializer, Serialize};

use crate::name::check_queue_name;
use crate::validation::{MAX_COUNT, MAX_DURATION_MS, ValidationError, count, duration_ms, within};

/// Attempts a job gets when neither the submit nor its queue says.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 20;
/// Lease length when neither the claim nor the queue says: a dead worker's job is back in ~10 s.
pub const DEFAULT_LEASE_MS: i64 = 10_000;
/// Retry backoff when the queue sets none: full jitter over `1 s * 2^(attempt-1)`, capped at 1 h.
pub const DEFAULT_BACKOFF: Backoff = Backoff { base_ms: 1_000, max_ms: 3_600_000 };
/// Bounds on a lease (docs/API.md "Workers, leases and fencing").
pub const MIN_LEASE_MS: i64 = 1_000;
pub const MAX_LEASE_MS: i64 = 86_400_000;

/// A rate limit: `limit` starts per `period_ms`, with up to `burst` at once after a quiet spell.
/// It is a ceiling: throttled outcomes lower the rate in force beneath it and it probes back up
/// (see [`crate::learned`]), unless `learn` is false. An `auto` rate (`"rate": "auto"`) has no
/// ceiling and learns from where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: i64,
    pub period_ms: i64,
    #[serde(default)]
    pub burst: Option<i64>,
    /// Whether throttled outcomes lower the rate in force (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn: Option<bool>,
    /// No ceiling: the rate is learned from the provider's throttles alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    /// What a start is: a job (default), or a claim however many jobs it takes ("50 calls/s of
    /// up to 20 items": `per: "claim"`, with claims of `max` 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<RateUnit>,
}

/// What a rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    #[default]
    Job,
    Claim,
}

impl RateLimit {
    /// A rate with no ceiling, learned from throttles (`"rate": "auto"`).
    pub fn auto() -> RateLimit {
        RateLimit {
            limit: crate::validation::MAX_COUNT,
            period_ms: 1_000,
            burst: None,
            learn: None,
            auto: true,
            per: None,
        }
    }

    pub fn is_auto(&self) -> bool {
        self.auto
    }

    /// Whether a claim counts as one start however many jobs it takes.
    pub fn per_claim(&self) -> bool {
        self.per == Some(RateUnit::Claim)
    }

    /// Whether throttled outcomes lower the rate in force.
    pub fn learns(&self) -> bool {
        self.auto || self.learn.unwrap_or(true)
    }

    pub fn burst_or_default(&self) -> i64 {
        self.burst.unwrap_or(1)
    }

    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if self.auto && self.learn == Some(false) {
            return Err(ValidationError::new(format!("{field}.learn"), "an auto rate learns"));
        }
        count(&format!("{field}.limit"), self.limit, 1)?;
        duration_ms(&format!("{field}.period_ms"), self.period_ms, 1)?;
        if let Some(b) = self.burst {
            count(&format!("{field}.burst"), b, 1)?;
        }
        Ok(())
    }
}

/// Bounds of an adaptive concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adaptive {
    pub min: i64,
    pub max: i64,
}

impl Adaptive {
    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        count(&format!("{field}.min"), self.min, 1)?;
        within(&format!("{field}.max"), self.max, self.min, MAX_COUNT)?;
        Ok(())
    }
}

/// Retry backoff: full jitter over `base_ms * 2^(attempt-1)`, capped at `max_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base_ms: i64,
    pub max_ms: i64,
}

/// Fast retries of transient failures (`kind: "transient"`): up to `retries` per attempt
/// without using it, each after a full-jitter backoff from `base_ms` doubling to `max_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transient {
    pub retries: i64,
    pub base_ms: i64,
    pub max_ms: i64,
}

/// Transient retries when the queue sets none: 10 per attempt, 10 ms doubling to 1 s.
pub const DEFAULT_TRANSIENT: Transient = Transient { retries: 10, base_ms: 10, max_ms: 1_000 };

impl Transient {
    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        count(&format!("{field}.retries"), self.retries, 0)?;
        duration_ms(&format!("{field}.base_ms"), self.base_ms, 0)?;
        within(&format!("{field}.max_ms"), self.max_ms, self.base_ms, MAX_DURATION_MS)?;
        Ok(())
    }

    /// The backoff of the transient retries.
    pub fn backoff(&self) -> Backoff {
        Backoff { base_ms: self.base_ms, max_ms: self.max_ms }
    }
}

/// Online work gets permits first within a pool; offline work gets the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    #[default]
    Online,
    Offline,
}

/// A queue's settings as set (`null` = not set, the default applies).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct QueueConfig {
    pub concurrency: Option<i64>,
    pub group_concurrency: Option<i64>,
    pub rate: Option<RateLimit>,
    pub group_rate: Option<RateLimit>,
    pub adaptive: Option<Adaptive>,
    pub pool: Option<String>,
    pub lane: Option<Lane>,
    pub paused: Option<bool>,
    pub max_attempts: Option<i64>,
    pub backoff: Option<Backoff>,
    pub timeout_ms: Option<i64>,
    pub lease_ms: Option<i64>,
    pub reuse_for_ms: Option<i64>,
    #[serde(default)]
    pub transient: Option<Transient>,
}

impl QueueConfig {
    pub fn max_attempts(&self) -> i64 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms.unwrap_or(DEFAULT_LEASE_MS)
    }
    pub fn backoff(&self) -> Backoff {
        self.backoff.unwrap_or(DEFAULT_BACKOFF)
    }
    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or(false)
    }
    pub fn lane(&self) -> Lane {
        self.lane.unwrap_or_default()
    }
    pub fn reuse_for_ms(&self) -> i64 {
        self.reuse_for_ms.unwrap_or(0)
    }
    pub fn transient(&self) -> Transient {
        self.transient.unwrap_or(DEFAULT_TRANSIENT)
    }

    /// Applies a patch: absent fields stay, `null` clears, values replace.
    pub fn apply(&mut self, patch: QueuePatch) {
        fn set<T>(slot: &mut Option<T>, change: Option<Option<T>>) {
            if let Some(v) = change {
                *slot = v;
            }
        }
        set(&mut self.concurrency, patch.concurrency);
        set(&mut self.group_concurrency, patch.group_concurrency);
        set(&mut self.rate, patch.rate);
        set(&mut self.group_rate, patch.group_rate);
        set(&mut self.adaptive, patch.adaptive);
        set(&mut self.pool, patch.pool);
        set(&mut self.lane, patch.lane);
        set(&mut self.paused, patch.paused);
        set(&mut self.max_attempts, patch.max_attempts);
        set(&mut self.backoff, patch.backoff);
        set(&mut self.timeout_ms, patch.timeout_ms);
        set(&mut self.lease_ms, patch.lease_ms);
        set(&mut self.reuse_for_ms, patch.reuse_for_ms);
        set(&mut self.transient, patch.transient);
    }
}

/// Distinguishes a field that is absent (`None`) from one set to `null` (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A rate as a patch takes it: `{limit, period_ms, burst?, learn?, per?}` or `"auto"`.
fn present_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<RateLimit>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Word(String),
        Rate(RateLimit),
    }
    match Option::<Input>::deserialize(d)? {
        None => Ok(Some(None)),
        Some(Input::Rate(r)) => Ok(Some(Some(r))),
        Some(Input::Word(w)) if w == "auto" => Ok(Some(Some(RateLimit::auto()))),
        Some(Input::Word(w)) => Err(serde::de::Error::custom(format!(
            "must be {{limit, period_ms, burst?, learn?, per?}} or \"auto\", got {w:?}"
        ))),
    }
}

/// The body of `PUT /v1/queues/NAME`: every field optional, `null` clears a setting.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    #[serde(default, deserialize_with = "present")]
    pub concurrency: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub group_concurrency: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present_rate")]
    pub rate: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "present_rate")]
    pub group_rate: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "present")]
    pub adaptive: Option<Option<Adaptive>>,
    #[serde(default, deserialize_with = "present")]
    pub pool: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub lane: Option<Option<Lane>>,
    #[serde(default, deserialize_with = "present")]
    pub paused: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub max_attempts: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub backoff: Option<Option<Backoff>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub lease_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub reuse_for_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub transient: Option<Option<Transient>>,
}

impl QueuePatch {
    /// Checks every value the patch sets (docs/API.md "Bounds").
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(Some(v)) = self.concurrency {
            count("concurrency", v, 1)?;
        }
        if let Some(Some(v)) = self.group_concurrency {
            count("group_concurrency", v, 1)?;
        }
        if let Some(Some(r)) = &self.rate {
            r.validate("rate")?;
        }
        if let Some(Some(r)) = &self.group_rate {
            r.validate("group_rate")?;
        }
        if let Some(Some(a)) = &self.adaptive {
            a.validate("adaptive")?;
        }
        if let Some(Some(p)) = &self.pool {
            check_queue_name("pool", p)?;
        }
        if let Some(Some(v)) = self.max_attempts {
            count("max_attempts", v, 1)?;
        }
        if let Some(Some(b)) = &self.backoff {
            duration_ms("backoff.base_ms", b.base_ms, 0)?;
            within("backoff.max_ms", b.max_ms, b.base_ms, MAX_DURATION_MS)?;
        }
        if let Some(Some(v)) = self.timeout_ms {
            duration_ms("timeout_ms", v, 1)?;
        }
        if let Some(Some(v)) = self.lease_ms {
            within("lease_ms", v, MIN_LEASE_MS, MAX_LEASE_MS)?;
        }
        if let Some(Some(v)) = self.reuse_for_ms {
            duration_ms("reuse_for_ms", v, 0)?;
        }
        if let Some(Some(t)) = &self.transient {
            t.validate("transient")?;
        }
        Ok(())
    }
}

/// A pool's settings (`PUT /v1/pools/NAME`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct PoolConfig {
    pub concurrency: Option<i64>,
    pub adaptive: Option<Adaptive>,
    pub offline_min_share: Option<f64>,
}

impl PoolConfig {
    /// The least share of the pool's limit offline queues keep (default 0.1).
    pub fn offline_min_share(&self) -> f64 {
        self.offline_min_share.unwrap_or(0.1)
    }

    pub fn apply(&mut self, patch: PoolPatch) {
        if let Some(v) = patch.concurrency {
            self.concurrency = v;
        }
        if let Some(v) = patch.adaptive {
            self.adaptive = v;
        }
        if let Some(v) = patch.offline_min_share {
            self.offline_min_share = v;
        }
    }
}

/// The body of `PUT /v1/pools/NAME`.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    #[serde(default, deserialize_with = "present")]
    pub concurrency: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub adaptive: Option<Option<Adaptive>>,
    #[serde(default, deserialize_with = "present")]
    pub offline_min_share: Option<Option<f64>>,
}

impl PoolPatch {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(Some(v)) = self.concurrency {
            count("concurrency", v, 1)?;
        }
        if let Some(Some(a)) = &self.adaptive {
            a.validate("adaptive")?;
        }
        if let Some(Some(s)) = self.offline_min_share
            && !(0.0..=1.0).contains(&s)
        {
            return Err(ValidationError::new("offline_min_share", "must be between 0 and 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_absent_from_null() {
        let p: QueuePatch = serde_json::from_str(r#"{"concurrency": null, "paused": true}"#).unwrap();
        assert_eq!(p.concurrency, Some(None));
        assert_eq!(p.paused, Some(Some(true)));
        assert_eq!(p.rate, None);
        let mut c = QueueConfig { concurrency: Some(4), max_attempts: Some(3), ..Default::default() };
        c.apply(p);
        assert_eq!(c.concurrency, None);
        assert_eq!(c.max_attempts, Some(3));
        assert!(c.is_paused());
    }

    #[test]
    fn patch_validation_names_the_field() {
        let p: QueuePatch = serde_json::from_str(r#"{"rate": {"limit": 0, "period_ms": 1000}}"#).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "rate.limit");
        let p: QueuePatch = serde_json::from_str(r#"{"lease_ms": 10}"#).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "lease_ms");
        let p: QueuePatch = serde_json::from_str(r#"{"adaptive": {"min": 5, "max": 2}}"#).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "adaptive.max");
        assert!(serde_json::from_str::<QueuePatch>(r#"{"concurency": 3}"#).is_err());
    }
}
