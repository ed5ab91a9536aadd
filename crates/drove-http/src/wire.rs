//! The JSON shapes of the v1 API: request bodies (parsed strictly: unknown fields are refused,
//! so a typo never passes silently) and documented response shapes for the OpenAPI document.

use drove_core::TraceContext;
use drove_core::queue::MAX_LEASE_MS;
use drove_core::validation::{duration_ms, within};
use drove_core::{
    FailKind, Job, JobId, LeaseToken, Millis, OnConflict, OnDependencyFailure, Progress, RawJson,
};
use drove_store::{Finish, NewJob, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// `on_conflict` of a submit.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnConflictWire {
    #[default]
    Join,
    Replace,
    Reject,
    /// While the key's job runs, one successor waits behind it with the newest payload.
    FollowUp,
}

/// `on_dependency_failure` of a submit.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailureWire {
    /// End as the dependency did (failed or cancelled), without running.
    #[default]
    Fail,
    /// Run once every dependency has ended, however it ended.
    Run,
}

/// A job to submit (`POST /v1/jobs`, and each entry of `POST /v1/jobs/batch`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// `[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    pub queue: String,
    /// Any JSON (default `null`), nested at most 64 deep.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub payload: Option<RawJson>,
    /// 1 to 128 bytes of printable UTF-8.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub kind: Option<String>,
    /// One active job per key and queue. 1 to 128 bytes of printable UTF-8.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub key: Option<String>,
    /// 1 to 128 bytes of printable UTF-8.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub group: Option<String>,
    /// Larger runs first (default 0).
    #[serde(default)]
    pub priority: Option<i64>,
    /// RFC 3339; not with `delay_ms`.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Not with `run_at`.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub delay_ms: Option<i64>,
    /// Attempts the job gets (1 to 10^9; default the queue's `max_attempts`, else 20).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_attempts: Option<i64>,
    /// The longest a single run may take, in ms (1 to 10 years; default the queue's, else no limit).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub timeout_ms: Option<i64>,
    /// With a `key`: a success of the key that finished within this many ms is the answer (0 to 10 years;
    /// default the queue's, else 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub reuse_for_ms: Option<i64>,
    #[serde(default)]
    pub on_conflict: Option<OnConflictWire>,
    /// After `reuse_for_ms`, a submit within this much more answers the key's last success at
    /// once (`stale: true`) and starts one refresh (needs a key).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub stale_for_ms: Option<i64>,
    /// The id of the job whose child this is (counted in its `children`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub parent: Option<String>,
    /// Ids of jobs that must succeed before this one starts (at most 100).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub depends_on: Option<Vec<String>>,
    #[serde(default)]
    pub on_dependency_failure: Option<OnDependencyFailureWire>,
    /// The W3C trace context the job's runs descend from (default: the request's `traceparent`
    /// header). `00-<32 hex>-<16 hex>-<2 hex>`, lower case.
    #[serde(default)]
    #[schema(pattern = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with `traceparent` (at most 512 printable ASCII characters).
    #[serde(default)]
    #[schema(max_length = 512)]
    pub tracestate: Option<String>,
}

/// A job id given in a body: canonical decimal text (a bare number is refused, as ids are
/// strings), else a 422 naming the field.
fn job_id_field(field: &str, text: &str) -> Result<JobId, ApiError> {
    text.parse().map_err(|_| ApiError::invalid(field, format!("{text:?} is not a job id")))
}

impl SubmitBody {
    /// Validates the entry and makes it a store request.
    /// The job this body asks for. Only what belongs to the wire is checked here (`run_at` or
    /// `delay_ms`, their formats); every rule of the job itself is [`NewJob::validate`], which
    /// the store runs once for every submit.
    pub fn into_new_job(self, now: Millis) -> Result<NewJob, ApiError> {
        let payload = match self.payload {
            Some(p) => p,
            None => drove_core::raw_null(),
        };
        let run_at = match (self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("delay_ms", "give run_at or delay_ms, not both"));
            }
            (Some(text), None) => Some(
                Millis::parse_rfc3339(&text)
                    .ok_or_else(|| ApiError::invalid("run_at", "must be an RFC 3339 timestamp"))?,
            ),
            (None, Some(ms)) => Some(now.plus_ms(duration_ms("delay_ms", ms, 0)?)),
            (None, None) => None,
        };
        Ok(NewJob {
            queue: self.queue,
            kind: self.kind,
            payload,
            key: self.key,
            group: self.group,
            priority: self.priority.unwrap_or(0),
            run_at,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            reuse_for_ms: self.reuse_for_ms,
            on_conflict: match self.on_conflict.unwrap_or_default() {
                OnConflictWire::Join => OnConflict::Join,
                OnConflictWire::Replace => OnConflict::Replace,
                OnConflictWire::Reject => OnConflict::Reject,
                OnConflictWire::FollowUp => OnConflict::FollowUp,
            },
            stale_for_ms: self.stale_for_ms,
            parent: self.parent.as_deref().map(|p| job_id_field("parent", p)).transpose()?,
            depends_on: match self.depends_on {
                Some(ids) => ids
                    .iter()
                    .enumerate()
                    .map(|(i, d)| job_id_field(&format!("depends_on[{i}]"), d))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
            on_dependency_failure: match self.on_dependency_failure.unwrap_or_default() {
                OnDependencyFailureWire::Fail => OnDependencyFailure::Fail,
                OnDependencyFailureWire::Run => OnDependencyFailure::Run,
            },
            trace: match (self.traceparent, self.tracestate) {
                (Some(tp), ts) => Some(TraceContext::parse("traceparent", &tp, "tracestate", ts.as_deref())?),
                (None, Some(_)) => return Err(ApiError::invalid("tracestate", "needs a traceparent")),
                (None, None) => None,
            },
        })
    }
}

/// `POST /v1/jobs/batch`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1 to 10,000 jobs.
    #[schema(min_items = 1, max_items = 10000)]
    pub jobs: Vec<SubmitBody>,
}

/// A lease as clients send it back: the string we gave out (a bare number is accepted too).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LeaseWire {
    Text(String),
    Number(i64),
}

impl LeaseWire {
    pub fn token(&self) -> LeaseToken {
        match self {
            LeaseWire::Text(t) => LeaseToken::parse_lenient(t),
            LeaseWire::Number(n) => LeaseToken::parse_lenient(&n.to_string()),
        }
    }
}

/// `POST /v1/queues/NAME/claim`
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Names the claimer (shown on running jobs); default `anonymous`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    pub worker: Option<String>,
    /// 1 to 1,000 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max: Option<i64>,
    /// Long-poll up to this long when nothing may start (0 to 60,000; default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60000)]
    pub wait_ms: Option<i64>,
    /// Once a job is ready, wait up to this long for `max` to be ready before claiming them at
    /// once, even past `wait_ms` (a batch worker's claim; 0 to 60,000; default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60000)]
    pub linger_ms: Option<i64>,
    /// 1,000 to 86,400,000 (default: the queue's, 10 s).
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 86_400_000)]
    pub lease_ms: Option<i64>,
    /// Runs this worker ended, reported with its next claim (entries as in `POST
    /// /v1/jobs/finish`): they end first, each on its own, and the answer's `finished` says how.
    #[serde(default)]
    #[schema(value_type = Option<Vec<FinishEntry>>)]
    pub finish: Option<Vec<Box<serde_json::value::RawValue>>>,
}

impl ClaimBody {
    pub fn wait_ms(&self) -> Result<i64, ApiError> {
        Ok(within("wait_ms", self.wait_ms.unwrap_or(0), 0, 60_000)?)
    }

    pub fn linger_ms(&self) -> Result<i64, ApiError> {
        Ok(within("linger_ms", self.linger_ms.unwrap_or(0), 0, 60_000)?)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressWire {
    /// Items done so far.
    pub done: i64,
    /// Items in all, when known.
    #[serde(default)]
    pub total: Option<i64>,
    /// At most 1,024 bytes.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub message: Option<String>,
}

/// `POST /v1/jobs/ID/heartbeat`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// The run's lease token, sent back exactly as the claim gave it (required).
    #[schema(value_type = String)]
    pub lease: LeaseWire,
    #[serde(default)]
    pub progress: Option<ProgressWire>,
    /// Any JSON; durable once this heartbeat is answered.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub checkpoint: Option<RawJson>,
    /// Extend the lease to this long from now (1,000 to 86,400,000; default: as claimed).
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 86_400_000)]
    pub lease_ms: Option<i64>,
}

impl HeartbeatBody {
    pub fn progress(&self) -> Option<Progress> {
        self.progress.as_ref().map(|p| Progress { done: p.done, total: p.total, message: p.message.clone() })
    }
}

/// `POST /v1/jobs/ID/complete`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The run's lease token, sent back exactly as the claim gave it (required).
    #[schema(value_type = String)]
    pub lease: LeaseWire,
    /// Any JSON.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub result: Option<RawJson>,
    /// A success that left some items undone.
    #[serde(default)]
    pub partial: Option<bool>,
    /// Not done yet: run again (the fan-in, no attempt used) once every child has ended; the
    /// result is kept meanwhile. Not with `partial`.
    #[serde(default)]
    pub await_children: Option<bool>,
}

/// The outcome of a completion: a success, or a wait for the job's children.
pub fn complete_outcome(
    result: Option<RawJson>,
    partial: Option<bool>,
    await_children: Option<bool>,
) -> Result<Outcome, ApiError> {
    match (await_children.unwrap_or(false), partial.unwrap_or(false)) {
        (true, true) => {
            Err(ApiError::invalid("await_children", "a partial success has ended: not with partial"))
        }
        (true, false) => Ok(Outcome::AwaitChildren { result }),
        (false, partial) => Ok(Outcome::Complete { result, partial }),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailKindWire {
    #[default]
    Retryable,
    Permanent,
    Throttled,
    Snooze,
    /// Retried fast on the queue's transient budget (a deadlock, a lock wait timeout, a reset
    /// connection); past the budget, like `retryable`.
    Transient,
}

impl From<FailKindWire> for FailKind {
    fn from(k: FailKindWire) -> FailKind {
        match k {
            FailKindWire::Retryable => FailKind::Retryable,
            FailKindWire::Permanent => FailKind::Permanent,
            FailKindWire::Throttled => FailKind::Throttled,
            FailKindWire::Snooze => FailKind::Snooze,
            FailKindWire::Transient => FailKind::Transient,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailError {
    /// At most 65,536 bytes.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub message: String,
    #[serde(default)]
    pub kind: Option<FailKindWire>,
}

/// `POST /v1/jobs/ID/fail`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// The run's lease token, sent back exactly as the claim gave it (required).
    #[schema(value_type = String)]
    pub lease: LeaseWire,
    pub error: FailError,
    /// Throttled and snooze: run again after this long (default 1 s).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub retry_after_ms: Option<i64>,
}

/// `POST /v1/jobs/ID/release`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// The run's lease token, sent back exactly as the claim gave it (required).
    #[schema(value_type = String)]
    pub lease: LeaseWire,
}

/// One entry of `POST /v1/jobs/finish` (an addition): complete (default), fail (`error`), or
/// release (`release: true`) one run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishEntry {
    /// The job's id, a string of decimal digits (required).
    #[schema(value_type = String)]
    pub id: String,
    /// The run's lease token, sent back exactly as the claim gave it (required).
    #[schema(value_type = String)]
    pub lease: LeaseWire,
    /// Any JSON.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub result: Option<RawJson>,
    /// As in `POST /v1/jobs/{id}/complete`: the success left some items undone.
    #[serde(default)]
    pub partial: Option<bool>,
    #[serde(default)]
    pub error: Option<FailError>,
    /// As in `POST /v1/jobs/{id}/fail`: for `throttled` and `snooze`, run again after this many ms (0 to 10
    /// years; default 1,000).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub retry_after_ms: Option<i64>,
    /// `true`: hand the run back unrun, as `POST /v1/jobs/{id}/release` does.
    #[serde(default)]
    pub release: Option<bool>,
    /// As in `POST /v1/jobs/{id}/complete`.
    #[serde(default)]
    pub await_children: Option<bool>,
}

/// `POST /v1/jobs/finish`: ends many runs in one request; each entry stands alone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    /// 1 to 1,000 entries.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<FinishEntry>,
}

pub fn fail_outcome(error: FailError, retry_after_ms: Option<i64>) -> Outcome {
    Outcome::Fail { kind: error.kind.unwrap_or_default().into(), message: error.message, retry_after_ms }
}

impl FinishEntry {
    pub fn into_finish(self) -> Result<Finish, ApiError> {
        let id = self.id.parse().map_err(|_| ApiError::not_found(format!("job {} not found", self.id)))?;
        let outcome = if self.release == Some(true) {
            Outcome::Release
        } else if let Some(error) = self.error {
            fail_outcome(error, self.retry_after_ms)
        } else {
            complete_outcome(self.result, self.partial, self.await_children)?
        };
        Ok(Finish { id, lease: self.lease.token(), outcome })
    }
}

/// A lease length given in a request, checked against the API's bounds.
pub fn lease_ms(v: Option<i64>) -> Result<Option<i64>, ApiError> {
    v.map(|ms| within("lease_ms", ms, 1_000, MAX_LEASE_MS)).transpose().map_err(Into::into)
}

/// A job in a response, with the additions some endpoints make.
#[derive(Serialize)]
pub struct JobOut<'a> {
    #[serde(flatten)]
    pub job: &'a Job,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
    /// A stale success answered at once (`stale_for_ms`): the job refreshing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<JobId>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseToken>,
}

impl<'a> JobOut<'a> {
    /// The job alone.
    pub fn of(job: &'a Job) -> JobOut<'a> {
        JobOut { job, deduplicated: None, refresh: None, stale: false, lease: None }
    }

    /// A submit's answer.
    pub fn submitted(s: &'a drove_store::Submitted) -> JobOut<'a> {
        JobOut {
            deduplicated: Some(!s.created),
            refresh: s.refresh,
            stale: s.refresh.is_some(),
            ..JobOut::of(&s.job)
        }
    }
}

// ---- documented response shapes (serialised from drove_core types; a test keeps them in step)

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProgressDoc {
    /// Items done so far, as the worker last reported.
    pub done: i64,
    /// Items in all, or null when unknown.
    pub total: Option<i64>,
    /// The worker's note (at most 1,024 bytes), or null.
    pub message: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDoc {
    /// retryable, permanent, throttled, timeout, lost, transient or dependency
    pub kind: String,
    /// The error's message (at most 65,536 bytes).
    pub message: String,
    /// When the error was recorded (RFC 3339, UTC, millisecond precision).
    pub at: String,
}

/// One run that ended in an error (an addition to docs/API.md's job model).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AttemptErrorDoc {
    /// The job's attempt during that run.
    pub attempt: i64,
    /// retryable, permanent, throttled, timeout, lost, transient or dependency
    pub kind: String,
    /// The error's message (at most 65,536 bytes).
    pub message: String,
    /// When the run ended with this error (RFC 3339, UTC, millisecond precision).
    pub at: String,
}

/// A job (docs/API.md "Jobs").
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JobDoc {
    /// The job's id: a string of decimal digits, increasing with submission order.
    pub id: String,
    /// The queue the job belongs to.
    pub queue: String,
    /// A free label for the caller's own use, or null.
    pub kind: Option<String>,
    /// Any JSON.
    #[schema(value_type = Value)]
    pub payload: (),
    /// The deduplication key (at most one active job per queue and key), or null.
    pub key: Option<String>,
    /// The partition of the queue for per-group limits, or null.
    pub group: Option<String>,
    /// Higher runs first within the queue, equal priorities oldest first (any 64-bit integer; default 0).
    pub priority: i64,
    /// waiting, scheduled, queued, running, succeeded, failed or cancelled
    pub state: String,
    /// Which attempt the current or last run is: 0 until the first claim; free ends and a fan-in's claim do
    /// not advance it.
    pub attempt: i64,
    /// How many attempts the job gets, fixed at submit: the request's, else the queue's, else 20.
    pub max_attempts: i64,
    /// When the job may run next: the submit time, the requested start, or the end of a retry delay (RFC
    /// 3339, UTC).
    pub run_at: String,
    /// When the job was submitted (RFC 3339, UTC).
    pub created_at: String,
    /// When the current or most recent run was claimed (RFC 3339, UTC), or null.
    pub started_at: Option<String>,
    /// When the most recent run ended or the job ended without running (RFC 3339, UTC); also set while it
    /// waits for its next run, cleared by a redrive.
    pub finished_at: Option<String>,
    pub progress: Option<ProgressDoc>,
    /// Any JSON, or null.
    #[schema(value_type = Value)]
    pub checkpoint: (),
    /// Any JSON, or null.
    #[schema(value_type = Value)]
    pub result: (),
    pub error: Option<ErrorDoc>,
    /// Every run that ended in an error, oldest first (the newest 25 are kept).
    pub errors: Vec<AttemptErrorDoc>,
    /// A cancel arrived while the job was running: it becomes `cancelled` when that run ends (unless the run
    /// completes).
    pub cancel_requested: bool,
    /// The success left some items undone (set by the worker at completion).
    pub partial: bool,
    /// How many runs ended in a transient error.
    pub transient_retries: i64,
    /// The longest a single run may take, in ms, fixed at submit (the request's, else the queue's); null: no
    /// limit.
    pub timeout_ms: Option<i64>,
    /// The name of the worker holding the current run; null unless `running`.
    pub worker: Option<String>,
    /// When the current run's lease ends unless a heartbeat extends it (RFC 3339, UTC); null unless
    /// `running`.
    pub lease_expires_at: Option<String>,
    /// Submit responses: true when the submit joined (or reused) an existing job.
    pub deduplicated: Option<bool>,
    /// Claim responses: the run's fencing token.
    pub lease: Option<String>,
    /// The W3C trace context the job's runs descend from (absent when none was given and the server
    /// exports no spans).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with `traceparent`.
    pub tracestate: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JobListDoc {
    /// The page's jobs, newest first.
    pub jobs: Vec<JobDoc>,
    /// The `cursor` of the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HeartbeatDoc {
    /// When the lease now ends unless another heartbeat extends it (RFC 3339, UTC).
    pub lease_expires_at: String,
    /// A cancel was requested: the worker should stop and end the run (`fail` or `release`).
    pub cancel_requested: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CountsDoc {
    /// Jobs waiting for their dependencies, their children or the running job of their key.
    pub waiting: i64,
    /// Jobs waiting for their `run_at`.
    pub scheduled: i64,
    /// Jobs ready to run, handed to the next claim the limits allow.
    pub queued: i64,
    /// Jobs leased to a worker.
    pub running: i64,
    /// Every succeeded job, partial or not.
    pub succeeded: i64,
    /// Failed jobs not yet deleted by retention.
    pub failed: i64,
    /// Cancelled jobs not yet deleted by retention.
    pub cancelled: i64,
    /// The succeeded jobs that left items undone (a subset of `succeeded`).
    pub partial: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueDoc {
    /// The queue's name.
    pub name: String,
    pub config: QueueSettingsDoc,
    pub counts: CountsDoc,
    /// The queue's own concurrency limit in force (the lower of `concurrency` and the adaptive limit); null
    /// when neither is set.
    pub limit_now: Option<i64>,
    /// While in the future, no job of the queue starts (a throttled outcome holds it; RFC 3339, UTC); null
    /// otherwise.
    pub held_until: Option<String>,
    /// With a `rate`: the starts per second in force (learned beneath the configured rate after
    /// throttled outcomes, or the configured rate).
    pub rate_now: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueListDoc {
    /// Every queue the store knows.
    pub queues: Vec<QueueDoc>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PoolDoc {
    /// The pool's name.
    pub name: String,
    pub config: PoolSettingsDoc,
    /// The pool's concurrency limit in force (the lower of `concurrency` and the adaptive limit); null when
    /// neither is set.
    pub limit_now: Option<i64>,
    /// With `adaptive`, while online work is about: running jobs allowed before offline queues
    /// wait (the downstream's capacity estimate); online queues may use all of `limit_now`.
    /// `null`: offline queues may use the whole limit too.
    pub offline_limit_now: Option<i64>,
    /// The queues that name this pool in their `pool` setting.
    pub queues: Vec<String>,
}

/// `POST /v1/queues/NAME/claim`: the jobs leased (empty when the wait ran out).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClaimDoc {
    /// Each job has `lease` and `lease_expires_at`.
    pub jobs: Vec<JobDoc>,
    /// With `finish` in the request: how each of those runs ended, in order.
    pub finished: Option<Vec<FinishResultDoc>>,
}

/// `POST /v1/jobs/batch`: the jobs, in the order of the request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchDoc {
    /// One job per entry of the request, in order, each with `deduplicated`.
    pub jobs: Vec<JobDoc>,
}

/// `POST /v1/jobs/finish`: one entry per entry of the request, in order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FinishListDoc {
    /// One result per entry of the request, in order: the job's new state, or why the entry was refused.
    pub jobs: Vec<FinishResultDoc>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FinishResultDoc {
    /// The entry's `id`, echoed as written.
    pub id: String,
    /// The job's state after this entry ended its run; absent when the entry was refused (see `error`).
    pub state: Option<String>,
    #[schema(value_type = Option<ErrorBodyInnerDoc>)]
    pub error: (),
}

/// Every error answer: `{"error": {code, message, field?}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBodyDoc {
    pub error: ErrorBodyInnerDoc,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBodyInnerDoc {
    /// snake_case: malformed_request, invalid_value, not_found, key_conflict, wrong_state,
    /// lease_lost, payload_too_large, unsupported_media_type, request_timeout, unauthorized,
    /// cross_origin, host_not_allowed, method_not_allowed, store_unavailable, internal, ...
    pub code: String,
    /// What went wrong, for people to read.
    pub message: String,
    /// The field at fault, as the client wrote it (`jobs[3].key`), for 413 and 422.
    pub field: Option<String>,
}

// ---- queue and pool settings (the bodies of PUT /v1/queues/NAME and /v1/pools/NAME, and the
// `config` of a queue or pool; parsed by drove_core's QueuePatch / PoolPatch)

/// A rate limit: `limit` starts per `period_ms`, up to `burst` at once after a quiet spell. It is
/// a ceiling: throttled outcomes lower the rate in force beneath it, and it probes back up
/// (`rate_now` shows it), unless `learn` is false. In a PUT, the string `"auto"` instead of the
/// object asks for a rate learned with no ceiling.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RateDoc {
    /// Starts allowed per period (1 to 10^9).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub limit: i64,
    /// The period, in ms (1 to 10 years).
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub period_ms: i64,
    /// Default 1.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub burst: Option<i64>,
    /// Whether throttled outcomes lower the rate in force (default true).
    pub learn: Option<bool>,
    /// Learned with no ceiling (set by `"rate": "auto"`).
    pub auto: Option<bool>,
    /// What a start is: `job` (default) or `claim` (one claim, however many jobs it takes).
    #[schema(value_type = Option<String>, pattern = "^(job|claim)$")]
    pub per: Option<String>,
}

/// Bounds of an adaptive concurrency limit (`max` at least `min`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AdaptiveDoc {
    /// The lowest concurrency limit the server may set (1 to 10^9).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub min: i64,
    /// The highest concurrency limit the server may set (`min` to 10^9).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max: i64,
}

/// Retry backoff: full jitter over `base_ms * 2^(attempt-1)`, capped at `max_ms` (at least
/// `base_ms`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BackoffDoc {
    /// A retry after attempt n waits a random time up to `base_ms * 2^(n-1)` ms (0 to 10 years; default
    /// 1,000).
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub base_ms: i64,
    /// The cap on a retry's delay, in ms (`base_ms` to 10 years; default 3,600,000).
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub max_ms: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum LaneDoc {
    Online,
    Offline,
}

/// A queue's settings. In a PUT every field is optional: absent keeps the setting, `null`
/// clears it (its default applies), a value sets it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueSettingsDoc {
    /// Most jobs of the queue running at once, fleet-wide (1 to 10^9; default no limit).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub concurrency: Option<i64>,
    /// Most jobs of one group running at once (1 to 10^9; default no limit).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub group_concurrency: Option<i64>,
    pub rate: Option<RateDoc>,
    pub group_rate: Option<RateDoc>,
    pub adaptive: Option<AdaptiveDoc>,
    /// A pool name (same pattern as a queue name).
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    pub pool: Option<String>,
    pub lane: Option<LaneDoc>,
    /// While true, claims hand out nothing from this queue; submits are still accepted (default false).
    pub paused: Option<bool>,
    /// Attempts of jobs submitted from now on without their own `max_attempts` (1 to 10^9; default 20).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_attempts: Option<i64>,
    pub backoff: Option<BackoffDoc>,
    /// Run time limit, in ms, of jobs submitted from now on without their own (1 to 10 years; default none).
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub timeout_ms: Option<i64>,
    /// Lease length, in ms, of claims that do not ask for one (1,000 to 86,400,000; default 10,000).
    #[schema(minimum = 1000, maximum = 86_400_000)]
    pub lease_ms: Option<i64>,
    /// Reuse window, in ms, of keyed submits that do not give one (0 to 10 years; default 0).
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub reuse_for_ms: Option<i64>,
    /// Fast retries of transient failures (default: 10 per attempt, 10 ms doubling to 1 s).
    pub transient: Option<TransientDoc>,
}

/// Up to `retries` transient failures per attempt are retried without using it, each after a
/// full-jitter backoff from `base_ms` doubling to `max_ms` (at least `base_ms`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TransientDoc {
    /// Transient failures in a row retried without spending an attempt (0 to 10^9; default 10).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub retries: i64,
    /// The n-th transient retry in a row waits a random time up to `base_ms * 2^(n-1)` ms (0 to 10 years;
    /// default 10).
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub base_ms: i64,
    /// The cap on a transient retry's delay, in ms (`base_ms` to 10 years; default 1,000).
    #[schema(minimum = 0, maximum = 315_360_000_000_i64)]
    pub max_ms: i64,
}

/// A pool's settings (absent keeps, `null` clears, a value sets).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PoolSettingsDoc {
    /// Most jobs of all the pool's queues running at once (1 to 10^9; default no limit).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub concurrency: Option<i64>,
    pub adaptive: Option<AdaptiveDoc>,
    /// 0 to 1 (default 0.1).
    #[schema(minimum = 0, maximum = 1)]
    pub offline_min_share: Option<f64>,
}
