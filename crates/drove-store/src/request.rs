//! What each store transition takes and returns.

use drove_core::name::{check_label, check_queue_name};
use drove_core::queue::{MAX_LEASE_MS, MIN_LEASE_MS, PoolConfig, QueueConfig};
use drove_core::validation::{check_json, count, duration_ms, within};
use drove_core::{
    FailKind, Job, JobId, JobState, LeaseToken, Links, Millis, OnConflict, OnDependencyFailure, Progress,
    RawJson, ValidationError,
};

use crate::StoreError;
use serde::Serialize;

/// Default largest payload (docs/API.md: 1 MiB, configurable).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Most jobs in one claim, finish or page.
pub const MAX_BATCH: usize = 1_000;
/// Most jobs in one batch submit (a parent's children, thousands at a time).
pub const MAX_SUBMIT_BATCH: usize = 10_000;
/// Most jobs one job may depend on.
pub const MAX_DEPENDS_ON: usize = 100;
/// Most children one parent may have.
pub const MAX_CHILDREN: i64 = 100_000;
/// Deepest nesting of children (a child of a child ... of a top-level job).
pub const MAX_DEPTH: i64 = 32;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: Option<String>,
    pub payload: RawJson,
    pub key: Option<String>,
    pub group: Option<String>,
    pub priority: i64,
    /// When it may start; `None` or a time not after `now`: at once.
    pub run_at: Option<Millis>,
    /// `None`: the queue's setting.
    pub max_attempts: Option<i64>,
    /// `None`: the queue's setting.
    pub timeout_ms: Option<i64>,
    /// `None`: the queue's setting.
    pub reuse_for_ms: Option<i64>,
    pub on_conflict: OnConflict,
    /// After the reuse window, a submit within this much more answers the last success at once,
    /// marked stale, and starts one refresh (needs a key).
    pub stale_for_ms: Option<i64>,
    /// The job whose child this is.
    pub parent: Option<JobId>,
    /// Jobs that must succeed before this one may start.
    pub depends_on: Vec<JobId>,
    pub on_dependency_failure: OnDependencyFailure,
    /// The W3C trace context its runs descend from.
    pub trace: Option<drove_core::TraceContext>,
}

impl NewJob {
    /// A job with defaults for everything but its queue and payload.
    pub fn new(queue: impl Into<String>, payload: RawJson) -> NewJob {
        NewJob {
            queue: queue.into(),
            kind: None,
            payload,
            key: None,
            group: None,
            priority: 0,
            run_at: None,
            max_attempts: None,
            timeout_ms: None,
            reuse_for_ms: None,
            on_conflict: OnConflict::Join,
            stale_for_ms: None,
            parent: None,
            depends_on: Vec::new(),
            on_dependency_failure: OnDependencyFailure::Fail,
            trace: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> NewJob {
        self.key = Some(key.into());
        self
    }

    pub fn with_group(mut self, group: impl Into<String>) -> NewJob {
        self.group = Some(group.into());
        self
    }

    /// The job this submit creates (not yet stored): the queue's defaults applied, scheduled
    /// when `run_at` is after `now`, else queued.
    pub fn into_job(self, id: JobId, queue: &QueueConfig, now: Millis) -> Job {
        let run_at = self.run_at.unwrap_or(now);
        Job {
            id,
            state: if run_at <= now { JobState::Queued } else { JobState::Scheduled },
            max_attempts: self.max_attempts.unwrap_or_else(|| queue.max_attempts()),
            timeout_ms: self.timeout_ms.or(queue.timeout_ms),
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            key: self.key,
            group: self.group,
            priority: self.priority,
            attempt: 0,
            run_at,
            created_at: now,
            started_at: None,
            finished_at: None,
            progress: None,
            checkpoint: None,
            result: None,
            error: None,
            errors: Vec::new(),
            cancel_requested: false,
            partial: false,
            transient_retries: 0,
            worker: None,
            lease_expires_at: None,
            parent: self.parent,
            depends_on: self.depends_on,
            on_dependency_failure: self.on_dependency_failure,
            waiting_for: None,
            children: None,
            fan_in: false,
            trace: self.trace,
            links: Links::default(),
        }
    }

    /// Checks every field (docs/API.md "POST /v1/jobs", "Bounds").
    pub fn validate(&self, max_payload: usize) -> Result<(), ValidationError> {
        check_queue_name("queue", &self.queue)?;
        if let Some(t) = &self.trace {
            drove_core::TraceContext::parse(
                "traceparent",
                &t.traceparent,
                "tracestate",
                t.tracestate.as_deref(),
            )?;
        }
        if let Some(kind) = &self.kind {
            check_label("kind", kind)?;
        }
        if let Some(key) = &self.key {
            check_label("key", key)?;
        }
        if let Some(group) = &self.group {
            check_label("group", group)?;
        }
        if self.payload.get().len() > max_payload {
            return Err(ValidationError::too_large("payload", max_payload));
        }
        check_json("payload", self.payload.get())?;
        if let Some(n) = self.max_attempts {
            count("max_attempts", n, 1)?;
        }
        if let Some(n) = self.timeout_ms {
            duration_ms("timeout_ms", n, 1)?;
        }
        if let Some(n) = self.reuse_for_ms {
            duration_ms("reuse_for_ms", n, 0)?;
        }
        if let Some(n) = self.stale_for_ms {
            duration_ms("stale_for_ms", n, 0)?;
            if self.key.is_none() {
                return Err(ValidationError::new("stale_for_ms", "needs a key"));
            }
        }
        if self.on_conflict == OnConflict::FollowUp {
            if self.key.is_none() {
                return Err(ValidationError::new("on_conflict", "follow_up needs a key"));
            }
            if !self.depends_on.is_empty() {
                return Err(ValidationError::new("depends_on", "a follow-up cannot have dependencies"));
            }
        }
        if self.depends_on.len() > MAX_DEPENDS_ON {
            return Err(ValidationError::new(
                "depends_on",
                format!("at most {MAX_DEPENDS_ON} jobs, got {}", self.depends_on.len()),
            ));
        }
        Ok(())
    }
}

/// Checks every job of a submit (see [`NewJob::validate`]); in a batch the field names the
/// entry (`jobs[3].key`).
pub fn validate_submit(jobs: &[NewJob], max_payload: usize) -> Result<(), ValidationError> {
    let many = jobs.len() > 1;
    for (i, job) in jobs.iter().enumerate() {
        job.validate(max_payload).map_err(|e| if many { e.within(&format!("jobs[{i}]")) } else { e })?;
    }
    Ok(())
}

/// The answer to one submitted job.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: Job,
    /// True when this submit created the job; false when it joined (or reused, or replaced the
    /// payload of) an existing one.
    pub created: bool,
    /// Set when `job` is a stale success answered at once (`stale_for_ms`): the job refreshing
    /// it (created by this submit or already live).
    pub refresh: Option<JobId>,
}

impl Submitted {
    pub fn created(job: Job) -> Submitted {
        Submitted { job, created: true, refresh: None }
    }

    pub fn existing(job: Job) -> Submitted {
        Submitted { job, created: false, refresh: None }
    }
}

/// A worker asking for up to `max` jobs of `queue`.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub queue: String,
    pub worker: String,
    pub max: i64,
    /// `None`: the queue's lease length.
    pub lease_ms: Option<i64>,
}

impl ClaimRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_queue_name("queue", &self.queue)?;
        check_label("worker", &self.worker)?;
        within("max", self.max, 1, MAX_BATCH as i64)?;
        if let Some(ms) = self.lease_ms {
            within("lease_ms", ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        }
        Ok(())
    }
}

/// One claimed job with its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub lease: LeaseToken,
    pub lease_expires_at: Millis,
}

/// What a claim handed out, and when trying again could hand out more.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    pub jobs: Vec<Claimed>,
    /// Set when a time-based limit (a rate limit, a throttled hold) held jobs back: the
    /// earliest time a claim may get one. `None`: wait for a notification.
    pub retry_at: Option<Millis>,
}

/// A running job's heartbeat: extends the lease, optionally storing progress and a checkpoint.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub id: JobId,
    pub lease: LeaseToken,
    pub progress: Option<Progress>,
    pub checkpoint: Option<RawJson>,
    /// `None`: the length the run was claimed with.
    pub lease_ms: Option<i64>,
}

impl Heartbeat {
    pub fn validate(&self, max_payload: usize) -> Result<(), ValidationError> {
        if let Some(ms) = self.lease_ms {
            within("lease_ms", ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        }
        if let Some(c) = &self.checkpoint
            && c.get().len() > max_payload
        {
            return Err(ValidationError::too_large("checkpoint", max_payload));
        }
        if let Some(c) = &self.checkpoint {
            check_json("checkpoint", c.get())?;
        }
        if let Some(p) = &self.progress
            && let Some(m) = &p.message
            && m.len() > 1_024
        {
            return Err(ValidationError::new("progress.message", "must be at most 1024 bytes"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeartbeatAck {
    pub lease_expires_at: Millis,
    pub cancel_requested: bool,
}

/// How a run ended, as its worker reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Complete {
        result: Option<RawJson>,
        partial: bool,
    },
    Fail {
        kind: FailKind,
        message: String,
        /// For throttled and snooze: when to run again (default 1 s).
        retry_after_ms: Option<i64>,
    },
    /// Handed back unrun: queued again at once, no attempt used, checkpoint kept.
    Release,
    /// Done for now: run again (the fan-in, no attempt used) once every child has ended. The
    /// result is kept meanwhile.
    AwaitChildren {
        result: Option<RawJson>,
    },
}

impl Outcome {
    /// How the run ended, in a word (a span's `drove.outcome`).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Complete { .. } => "succeeded",
            Outcome::Fail { kind: FailKind::Retryable, .. } => "retryable",
            Outcome::Fail { kind: FailKind::Permanent, .. } => "permanent",
            Outcome::Fail { kind: FailKind::Throttled, .. } => "throttled",
            Outcome::Fail { kind: FailKind::Snooze, .. } => "snoozed",
            Outcome::Fail { kind: FailKind::Transient, .. } => "transient",
            Outcome::Release => "released",
            Outcome::AwaitChildren { .. } => "awaiting_children",
        }
    }
}

/// The end of one run, fenced by its lease.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: JobId,
    pub lease: LeaseToken,
    pub outcome: Outcome,
}

impl Finish {
    pub fn validate(&self, max_payload: usize) -> Result<(), ValidationError> {
        match &self.outcome {
            Outcome::Complete { result: Some(r), .. } | Outcome::AwaitChildren { result: Some(r) }
                if r.get().len() > max_payload =>
            {
                Err(ValidationError::too_large("result", max_payload))
            }
            Outcome::Complete { result: Some(r), .. } | Outcome::AwaitChildren { result: Some(r) } => {
                check_json("result", r.get())
            }
            Outcome::Fail { message, retry_after_ms, .. } => {
                if message.len() > 64 * 1024 {
                    return Err(ValidationError::new("error.message", "must be at most 65536 bytes"));
                }
                if let Some(ms) = retry_after_ms {
                    duration_ms("retry_after_ms", *ms, 0)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Jobs per state, and the partial successes among the succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Waiting for dependencies, children or the run of their key ahead of them.
    pub waiting: i64,
    pub scheduled: i64,
    pub queued: i64,
    pub running: i64,
    /// Every succeeded job, partial or not.
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// The succeeded jobs that left some items undone (`partial: true`), a subset of
    /// `succeeded`.
    pub partial: i64,
}

/// How long the stores keep the per-minute outcomes of ended runs: the longest window the
/// operations view shows (a week), and a day more.
pub const OUTCOME_KEEP_MINUTES: i64 = 8 * 24 * 60;

/// The code the stores' count rows keep partial successes under (beside the state codes 0-5).
pub const PARTIAL_COUNT_CODE: i64 = 6;

impl Counts {
    /// Adds a stored count row: a state code, or [`PARTIAL_COUNT_CODE`].
    pub fn add_code(&mut self, code: i64, n: i64) -> Result<(), StoreError> {
        if code == PARTIAL_COUNT_CODE {
            self.partial += n;
            return Ok(());
        }
        let state = JobState::from_code(code)
            .ok_or_else(|| StoreError::Internal(format!("unknown state {code} in the queue counts")))?;
        self.add(state, n);
        Ok(())
    }

    pub fn add(&mut self, state: JobState, n: i64) {
        let slot = match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Scheduled => &mut self.scheduled,
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    pub fn get(&self, state: JobState) -> i64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Scheduled => self.scheduled,
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }
}

/// A queue as `GET /v1/queues/NAME` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueInfo {
    pub name: String,
    pub config: QueueConfig,
    pub counts: Counts,
    /// The queue's own concurrency limit in force (the lower of `concurrency` and the adaptive
    /// limit), or `null` when it has none; a pool's limits are shown on the pool.
    pub limit_now: Option<i64>,
    /// While set and in the future, no job starts (a throttled outcome held the queue).
    pub held_until: Option<Millis>,
    /// With a `rate`: the starts per second in force (the rate learned beneath the configured
    /// one after throttled outcomes, or the configured one).
    pub rate_now: Option<f64>,
}

/// A pool as `PUT /v1/pools/NAME` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub config: PoolConfig,
    pub limit_now: Option<i64>,
    /// With `adaptive`, while online work is about: how many of the pool's jobs may run before
    /// offline work waits (the downstream's capacity estimate; online work may use all of
    /// `limit_now`). `null`: offline work may use the whole limit too.
    pub offline_limit_now: Option<i64>,
    pub queues: Vec<String>,
}

/// Filters of `GET /v1/jobs` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub key: Option<String>,
    pub group: Option<String>,
    /// Only succeeded jobs that were (true) or were not (false) partial successes.
    pub partial: Option<bool>,
    /// Only the children of this job.
    pub parent: Option<JobId>,
    /// Only jobs with children (operations).
    pub operations: bool,
}

impl JobFilter {
    /// Checks the names a listing filters by: a queue name of the pattern, printable keys and
    /// groups (docs/API.md "Conventions"), so a filter no job could match is refused, not sent to
    /// the database.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(q) = &self.queue {
            check_queue_name("queue", q)?;
        }
        if let Some(k) = &self.key {
            check_label("key", k)?;
        }
        if let Some(g) = &self.group {
            check_label("group", g)?;
        }
        Ok(())
    }
}

/// Whether `name` could name a queue or pool: reads of one that could not answer "not found"
/// without asking the database.
pub fn could_be_queue_name(name: &str) -> bool {
    check_queue_name("name", name).is_ok()
}

/// One page of a job listing, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_before: Option<JobId>,
}

/// How many runs ended one way in a window: per queue, end state, partial success and error
/// kind (`None` for successes and for failures or cancellations without an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    pub queue: String,
    pub state: JobState,
    pub partial: bool,
    pub error_kind: Option<drove_core::ErrorKind>,
    pub n: i64,
}

impl OutcomeCount {
    /// From a stored row: (queue, state code, partial, kind code or -1, n).
    pub fn from_stored(
        queue: String,
        state: i64,
        partial: bool,
        kind: i64,
        n: i64,
    ) -> Result<OutcomeCount, StoreError> {
        Ok(OutcomeCount {
            queue,
            state: JobState::from_code(state)
                .ok_or_else(|| StoreError::Internal(format!("unknown state {state} in the outcomes")))?,
            partial,
            error_kind: if kind < 0 {
                None
            } else {
                Some(drove_core::ErrorKind::from_code(kind).ok_or_else(|| {
                    StoreError::Internal(format!("unknown error kind {kind} in the outcomes"))
                })?)
            },
            n,
        })
    }
}

/// One finished run, for run-time statistics (dashboard, metrics, adaptive limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSample {
    pub id: JobId,
    pub state: JobState,
    /// When the job became due (`run_at`) and when its last run was claimed and ended.
    pub run_at: Millis,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub partial: bool,
}
