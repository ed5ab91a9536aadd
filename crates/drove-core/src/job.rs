//! The job model of docs/API.md: states, errors, progress, and the job document itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Millis, RawJson};

/// A job's id: time-ordered (assigned in increasing order by the store) and opaque to clients,
/// who see it as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        // Only canonical decimal text: "007" or "+7" are not ids we ever handed out.
        if s.is_empty() || s.len() > 19 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        s.parse::<i64>().map(JobId).map_err(|_| ())
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| serde::de::Error::custom("not a job id"))
    }
}

/// The fencing token of one run of a job. Tokens only grow: a later run of a job always holds a
/// larger token than an earlier one, so downstream systems can fence their own writes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub i64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl LeaseToken {
    /// Parses a token as a client sent it back. Text that is not a token we could have issued
    /// maps to a token no job holds, so it is refused like any other stale lease.
    pub fn parse_lenient(text: &str) -> LeaseToken {
        text.parse::<i64>().ok().filter(|v| *v > 0).map(LeaseToken).unwrap_or(LeaseToken(-1))
    }
}

impl Serialize for LeaseToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A job's state (docs/API.md "States"). The explicit values are the codes both stores keep in
/// their `state` column and name in index predicates (`state = 1`): they never change (a test
/// pins them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waits for something other than time: its dependencies, its children (a fan-in), or the
    /// run of its key ahead of it (a follow-up). Below the live codes' floor, so `state < 3`
    /// still means "holds its key" and `state >= 3` "ended".
    Waiting = -1,
    Scheduled = 0,
    Queued = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Cancelled = 5,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The small integer stores keep in their `state` column.
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }

    /// Waiting, scheduled, queued or running: the states that hold a key.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

impl FromStr for JobState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a job's last error (docs/API.md `error.kind`). The explicit values are the codes the
/// stores keep (`error_kind`, the error history): they never change (a test pins them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Retryable = 0,
    Permanent = 1,
    Throttled = 2,
    Timeout = 3,
    Lost = 4,
    /// A failure known to pass by itself (a deadlock, a lock wait timeout, a reset connection):
    /// retried fast, on a budget of its own.
    Transient = 5,
    /// Never ran: a job it depends on failed or was cancelled (the message names it).
    Dependency = 6,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Retryable,
        ErrorKind::Permanent,
        ErrorKind::Throttled,
        ErrorKind::Timeout,
        ErrorKind::Lost,
        ErrorKind::Transient,
        ErrorKind::Dependency,
    ];

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<ErrorKind> {
        ErrorKind::ALL.get(usize::try_from(code).ok()?).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Lost => "lost",
            ErrorKind::Transient => "transient",
            ErrorKind::Dependency => "dependency",
        }
    }
}

impl FromStr for ErrorKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// How a worker ends a run it did not complete (`POST /fail`'s `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// Backoff, then retry while attempts remain.
    #[default]
    Retryable,
    /// Fail now, whatever attempts remain.
    Permanent,
    /// The downstream pushed back: requeue after `retry_after_ms`, no attempt used.
    Throttled,
    /// Not an error: run again after `retry_after_ms`, no attempt used.
    Snooze,
    /// A failure known to pass by itself (deadlock, lock wait timeout, serialization failure,
    /// reset connection): retried after a short jittered backoff without using an attempt, up
    /// to the queue's transient budget per attempt; past it, like `retryable`.
    Transient,
}

/// A job's last error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
    pub at: Millis,
}

/// Runs kept in a job's error history ([`Job::errors`]): the newest ones.
pub const ERROR_HISTORY: usize = 25;

/// One run that ended in an error, in a job's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptError {
    /// The job's `attempt` during that run (a throttled run repeats the number it had).
    pub attempt: i64,
    pub kind: ErrorKind,
    pub message: String,
    pub at: Millis,
}

/// Progress a worker reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: i64,
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What a submit does when its key is held by an active job (docs/API.md "Keys").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Return the existing job; create nothing.
    #[default]
    Join,
    /// A scheduled or queued job takes the new payload, run_at and priority; a running one is
    /// joined unchanged.
    Replace,
    /// Refuse (409) while a job with the key is active.
    Reject,
    /// While the key's job runs, keep one successor waiting behind it with the newest payload
    /// (every such submit answers the successor); a job that has not started takes the payload.
    FollowUp,
}

/// What a `waiting` job waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    /// Jobs it depends on (`depends_on`) to succeed.
    Dependencies = 1,
    /// Its children to end (it completed with `await_children`).
    Children = 2,
    /// The running job of its key to end (a follow-up).
    Key = 3,
}

impl WaitingFor {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<WaitingFor> {
        [WaitingFor::Dependencies, WaitingFor::Children, WaitingFor::Key]
            .into_iter()
            .find(|w| w.code() == code)
    }
}

/// What a dependent does when a job it depends on fails or is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// End the same way without running (failed, or cancelled), the error naming the job.
    #[default]
    Fail = 0,
    /// Run anyway once every dependency has ended.
    Run = 1,
}

impl OnDependencyFailure {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> OnDependencyFailure {
        if code == 1 { OnDependencyFailure::Run } else { OnDependencyFailure::Fail }
    }
}

/// A parent's children, counted as they end (`succeeded` includes the `partial` ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub struct Children {
    pub total: i64,
    pub succeeded: i64,
    pub partial: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl Children {
    /// Children that have ended.
    pub fn ended(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Children not yet ended.
    pub fn pending(&self) -> i64 {
        (self.total - self.ended()).max(0)
    }
}

/// How an operation (a parent and its children) came out, from the parent's state and its
/// children's: `running` until the parent has ended; then `failed` when the parent failed or
/// was cancelled or every child failed, `partial` when any child failed, was cancelled or
/// succeeded partly, else `succeeded`.
pub fn operation_outcome(parent: JobState, children: &Children) -> &'static str {
    if !parent.is_terminal() {
        return "running";
    }
    if parent != JobState::Succeeded
        || (children.total > 0 && children.failed + children.cancelled == children.total)
    {
        return "failed";
    }
    if children.failed + children.cancelled + children.partial > 0 { "partial" } else { "succeeded" }
}

/// Flags a store keeps on a job for its own bookkeeping (never shown to clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Links {
    /// Some job depends on this one: its end resolves them.
    pub has_dependents: bool,
    /// A follow-up waits behind this one: its end starts it.
    pub has_follow_up: bool,
}

impl Links {
    pub const DEPENDENTS: i64 = 1;
    pub const FOLLOW_UP: i64 = 2;

    pub fn from_bits(bits: i64) -> Links {
        Links { has_dependents: bits & Self::DEPENDENTS != 0, has_follow_up: bits & Self::FOLLOW_UP != 0 }
    }
}

/// A job as clients see it (docs/API.md "Jobs"), plus a few additions (`timeout_ms`,
/// `lease_expires_at`, `worker`).
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: Option<String>,
    pub payload: RawJson,
    pub key: Option<String>,
    pub group: Option<String>,
    pub priority: i64,
    pub state: JobState,
    pub attempt: i64,
    pub max_attempts: i64,
    pub run_at: Millis,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub progress: Option<Progress>,
    pub checkpoint: Option<RawJson>,
    pub result: Option<RawJson>,
    pub error: Option<JobError>,
    /// Every run that ended in an error (retryable, transient, permanent, throttled, timeout, lost), oldest
    /// first, the last [`ERROR_HISTORY`] of them; kept by the store whatever path recorded it.
    /// An addition to docs/API.md's job model.
    pub errors: Vec<AttemptError>,
    pub cancel_requested: bool,
    pub partial: bool,
    /// How many runs ended in a transient error (an addition to docs/API.md's job model).
    pub transient_retries: i64,
    pub timeout_ms: Option<i64>,
    /// The worker holding the current run (`running` only).
    pub worker: Option<String>,
    /// When the current run's lease ends unless extended (`running` only).
    pub lease_expires_at: Option<Millis>,
    /// The job whose child this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// The jobs this one waited for (given at submit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<JobId>,
    #[serde(skip_serializing_if = "is_default")]
    pub on_dependency_failure: OnDependencyFailure,
    /// What a `waiting` job waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
    /// Its children, once it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Children>,
    /// This run is the fan-in: the job completed with `await_children` and its children have
    /// all ended since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fan_in: bool,
    /// The trace its runs descend from (`traceparent`, `tracestate`), as given at submit or
    /// as the server's submit span made it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::TraceContext>,
    #[serde(skip)]
    pub links: Links,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        fn raw(v: &Option<RawJson>) -> Option<&str> {
            v.as_ref().map(|r| r.get())
        }
        self.id == other.id
            && self.queue == other.queue
            && self.kind == other.kind
            && self.payload.get() == other.payload.get()
            && self.key == other.key
            && self.group == other.group
            && self.priority == other.priority
            && self.state == other.state
            && self.attempt == other.attempt
            && self.max_attempts == other.max_attempts
            && self.run_at == other.run_at
            && self.created_at == other.created_at
            && self.started_at == other.started_at
            && self.finished_at == other.finished_at
            && self.progress == other.progress
            && raw(&self.checkpoint) == raw(&other.checkpoint)
            && raw(&self.result) == raw(&other.result)
            && self.error == other.error
            && self.errors == other.errors
            && self.cancel_requested == other.cancel_requested
            && self.partial == other.partial
            && self.transient_retries == other.transient_retries
            && self.timeout_ms == other.timeout_ms
            && self.worker == other.worker
            && self.lease_expires_at == other.lease_expires_at
            && self.parent == other.parent
            && self.depends_on == other.depends_on
            && self.on_dependency_failure == other.on_dependency_failure
            && self.waiting_for == other.waiting_for
            && self.children == other.children
            && self.fan_in == other.fan_in
            && self.trace == other.trace
            && self.links == other.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_parse_only_canonical_text() {
        assert_eq!("42".parse::<JobId>(), Ok(JobId(42)));
        for bad in ["", "0", "042", "+4", "-4", "4x", "99999999999999999999"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_codes_never_change() {
        // The stores' rows, their index predicates and their error histories hold these numbers.
        let states: Vec<(JobState, i64)> = JobState::ALL.iter().map(|s| (*s, s.code())).collect();
        assert_eq!(
            states,
            vec![
                (JobState::Waiting, -1),
                (JobState::Scheduled, 0),
                (JobState::Queued, 1),
                (JobState::Running, 2),
                (JobState::Succeeded, 3),
                (JobState::Failed, 4),
                (JobState::Cancelled, 5)
            ]
        );
        let kinds: Vec<(&str, i64)> = ErrorKind::ALL.iter().map(|k| (k.as_str(), k.code())).collect();
        assert_eq!(
            kinds,
            vec![
                ("retryable", 0),
                ("permanent", 1),
                ("throttled", 2),
                ("timeout", 3),
                ("lost", 4),
                ("transient", 5),
                ("dependency", 6)
            ]
        );
        let waits: Vec<i64> = [WaitingFor::Dependencies, WaitingFor::Children, WaitingFor::Key]
            .iter()
            .map(|w| w.code())
            .collect();
        assert_eq!(waits, vec![1, 2, 3]);
        assert_eq!((Links::DEPENDENTS, Links::FOLLOW_UP), (1, 2));
        assert_eq!((OnDependencyFailure::Fail.code(), OnDependencyFailure::Run.code()), (0, 1));
    }

    #[test]
    fn an_operation_comes_out_of_its_parent_and_children() {
        let c = |total, succeeded, partial, failed, cancelled| Children {
            total,
            succeeded,
            partial,
            failed,
            cancelled,
        };
        assert_eq!(operation_outcome(JobState::Running, &c(3, 3, 0, 0, 0)), "running");
        assert_eq!(operation_outcome(JobState::Succeeded, &c(3, 3, 0, 0, 0)), "succeeded");
        assert_eq!(operation_outcome(JobState::Succeeded, &c(3, 3, 1, 0, 0)), "partial");
        assert_eq!(operation_outcome(JobState::Succeeded, &c(3, 2, 0, 1, 0)), "partial");
        assert_eq!(operation_outcome(JobState::Succeeded, &c(3, 0, 0, 2, 1)), "failed");
        assert_eq!(operation_outcome(JobState::Failed, &c(3, 3, 0, 0, 0)), "failed");
        assert_eq!(c(5, 2, 1, 1, 1).pending(), 1);
    }

    #[test]
    fn state_codes_round_trip() {
        for st in JobState::ALL {
            assert_eq!(JobState::from_code(st.code()), Some(st));
            assert_eq!(st.as_str().parse::<JobState>(), Ok(st));
        }
        assert_eq!(JobState::from_code(6), None);
        assert_eq!(JobState::from_code(-2), None);
    }

    #[test]
    fn lease_tokens_that_we_never_issued_parse_to_an_unheld_token() {
        assert_eq!(LeaseToken::parse_lenient("17"), LeaseToken(17));
        assert_eq!(LeaseToken::parse_lenient("abc"), LeaseToken(-1));
        assert_eq!(LeaseToken::parse_lenient("0"), LeaseToken(-1));
    }
}
