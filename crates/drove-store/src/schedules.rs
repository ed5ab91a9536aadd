//! Schedules as both stores keep them, and what a scheduler pass does with one, decided once.
//!
//! A store keeps each schedule's settings ([`ScheduleSpec`], as JSON), whether it is paused, the
//! next tick it has not enqueued (`next_at`), and its last enqueued tick and job. A pass takes
//! the due schedules (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two nodes never take the same
//! one), asks [`plan`] which ticks to enqueue, submits those jobs, and moves `next_at` on with a
//! compare-and-set on the `next_at` it read, all in one transaction: a tick's job exists exactly
//! when the schedule has moved past it, whatever restarts or races happen around it.

use drove_core::name::{check_label, check_queue_name};
use drove_core::schedule::{CatchUp, Spec, fire};
use drove_core::validation::{check_json, count, duration_ms};
use drove_core::{JobId, JobState, Millis, RawJson, ValidationError};
use serde::{Deserialize, Serialize};

use crate::request::NewJob;

/// Most schedules a store keeps.
pub const MAX_SCHEDULES: i64 = 100_000;
/// Most schedules one pass of the scheduler takes.
pub const FIRE_BATCH: usize = 100;

/// A schedule's settings (`PUT /v1/schedules/NAME`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A cron pattern (5 fields, or 6 with seconds first, or a nickname such as `@daily`) or
    /// `@every DURATION`.
    pub cron: String,
    /// An IANA time zone name; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub queue: String,
    #[serde(default = "drove_core::raw_null")]
    pub payload: RawJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub paused: bool,
}

impl ScheduleSpec {
    /// Checks every field; the parsed pattern on success.
    pub fn validate(&self, max_payload: usize) -> Result<Spec, ValidationError> {
        let spec = Spec::parse(&self.cron, self.timezone.as_deref())?;
        self.job(Millis(0)).validate(max_payload)?;
        for (field, v) in [("kind", &self.kind), ("key", &self.key), ("group", &self.group)] {
            if let Some(v) = v {
                check_label(field, v)?;
            }
        }
        check_queue_name("queue", &self.queue)?;
        check_json("payload", self.payload.get())?;
        if let Some(n) = self.max_attempts {
            count("max_attempts", n, 1)?;
        }
        if let Some(n) = self.timeout_ms {
            duration_ms("timeout_ms", n, 1)?;
        }
        Ok(spec)
    }

    /// The job a tick at `tick` enqueues (`run_at` is the tick).
    pub fn job(&self, tick: Millis) -> NewJob {
        NewJob {
            kind: self.kind.clone(),
            key: self.key.clone(),
            group: self.group.clone(),
            priority: self.priority,
            run_at: Some(tick),
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            ..NewJob::new(self.queue.clone(), self.payload.clone())
        }
    }
}

/// A schedule as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub name: String,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// The next tick to enqueue (`None` when the pattern has no more ticks).
    pub next_at: Option<Millis>,
    /// The last tick a job was enqueued for.
    pub last_tick_at: Option<Millis>,
    /// The last job it enqueued (by a tick or by "run now"), and that job's state if it is still
    /// kept.
    pub last_job: Option<JobId>,
    pub last_job_state: Option<JobState>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What a pass does for one due schedule.
#[derive(Debug)]
pub struct FirePlan {
    /// The jobs to submit, oldest tick first (their `run_at` is the tick).
    pub jobs: Vec<NewJob>,
    /// The newest tick among them, if any.
    pub last_tick: Option<Millis>,
    /// The schedule's next `next_at`.
    pub next_at: Option<Millis>,
}

/// Plans a pass over a schedule due at `now` whose next unenqueued tick is `next_at`. A spec
/// that no longer parses (stored by an older version) enqueues nothing and stops ticking.
pub fn plan(spec: &ScheduleSpec, next_at: Millis, now: Millis) -> FirePlan {
    let Ok(parsed) = Spec::parse(&spec.cron, spec.timezone.as_deref()) else {
        return FirePlan { jobs: Vec::new(), last_tick: None, next_at: None };
    };
    let fired = fire(&parsed, next_at, now, spec.catch_up);
    FirePlan {
        last_tick: fired.ticks.last().copied(),
        jobs: fired.ticks.iter().map(|t| spec.job(*t)).collect(),
        next_at: fired.next_at,
    }
}

/// A schedule's next tick once `spec` is written over `old` (if any): kept when it was ticking
/// and still ticks the same way (an edit of its payload skips no tick), else the first tick
/// after `now` (a new, changed or resumed schedule: ticks missed while paused are skipped).
pub fn next_at_after_put(
    old: Option<&ScheduleInfo>,
    spec: &ScheduleSpec,
    parsed: &Spec,
    now: Millis,
) -> Option<Millis> {
    match old {
        Some(o)
            if !o.spec.paused
                && !spec.paused
                && o.spec.cron == spec.cron
                && o.spec.timezone == spec.timezone =>
        {
            o.next_at
        }
        _ => parsed.next_after(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ScheduleSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_pass_enqueues_the_due_ticks_as_jobs_run_at_their_tick() {
        let s = spec(
            r#"{"cron": "@every 10s", "queue": "q", "payload": {"a": 1}, "key": "nightly", "catch_up": "all"}"#,
        );
        let p = plan(&s, Millis(10_000), Millis(35_000));
        let ticks: Vec<_> = p.jobs.iter().map(|j| j.run_at.unwrap().0).collect();
        assert_eq!(ticks, vec![10_000, 20_000, 30_000]);
        assert_eq!((p.last_tick, p.next_at), (Some(Millis(30_000)), Some(Millis(40_000))));
        assert_eq!(p.jobs[0].key.as_deref(), Some("nightly"));
        assert_eq!(p.jobs[0].payload.get(), r#"{"a": 1}"#);
        // Defaults: catch_up last, payload null, UTC.
        let s = spec(r#"{"cron": "@every 10s", "queue": "q"}"#);
        assert_eq!(s.catch_up, CatchUp::Last);
        assert_eq!(plan(&s, Millis(10_000), Millis(35_000)).jobs.len(), 1);
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let bad = |json: &str| spec(json).validate(1 << 20).unwrap_err().field;
        assert_eq!(bad(r#"{"cron": "nope", "queue": "q"}"#), "cron");
        assert_eq!(bad(r#"{"cron": "* * * * *", "timezone": "X/Y", "queue": "q"}"#), "timezone");
        assert_eq!(bad(r#"{"cron": "* * * * *", "queue": "bad name"}"#), "queue");
        assert_eq!(bad(r#"{"cron": "* * * * *", "queue": "q", "max_attempts": 0}"#), "max_attempts");
        assert!(
            serde_json::from_str::<ScheduleSpec>(r#"{"cron": "* * * * *", "queue": "q", "x": 1}"#).is_err()
        );
        assert!(
            spec(r#"{"cron": "0 3 * * *", "timezone": "Europe/Berlin", "queue": "backup"}"#)
                .validate(1 << 20)
                .is_ok()
        );
    }
}
