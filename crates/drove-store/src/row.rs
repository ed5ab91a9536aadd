//! A job's row as both stores keep it, and its decoding into a [`Job`], written once.
//!
//! Each store reads the columns [`JOB_COLS`] names, in that order, into a [`JobRow`] of plain
//! values; [`JobRow::into_job`] turns the codes and the JSON texts into the job model. A value
//! that cannot be decoded (an unknown state or error kind, unreadable progress or error
//! history) is reported as an internal error, never read as nothing: it means a bug or a damaged
//! row, and hiding it would hide both.

use drove_core::{
    AttemptError, Children, ErrorKind, Job, JobError, JobId, JobState, Links, Millis, OnDependencyFailure,
    Progress, RawJson, WaitingFor, raw_from_stored,
};

use crate::StoreError;

/// The job columns every read of a whole job names, in this order.
pub const JOB_COLS: &str = "id, queue, kind, payload, key, grp, priority, state, attempt, \
    max_attempts, run_at, created_at, started_at, finished_at, progress, checkpoint, result, \
    error_kind, error_message, error_at, cancel_requested, partial, timeout_ms, worker, \
    lease_expires_at, errors, transient_retries, parent_id, deps, dep_failure, wait_for, follow_key, \
    links, children_total, children_succeeded, children_partial, children_failed, children_cancelled, \
    fan_in, traceparent, tracestate";

/// How many columns [`JOB_COLS`] names (a statement may return more after them).
pub const JOB_COL_COUNT: usize = 41;

/// A job's row, column by column as [`JOB_COLS`] names them.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub kind: Option<String>,
    pub payload: String,
    pub key: Option<String>,
    pub grp: Option<String>,
    pub priority: i64,
    pub state: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub progress: Option<String>,
    pub checkpoint: Option<String>,
    pub result: Option<String>,
    pub error_kind: Option<i64>,
    pub error_message: Option<String>,
    pub error_at: Option<i64>,
    pub cancel_requested: bool,
    pub partial: bool,
    pub timeout_ms: Option<i64>,
    pub worker: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub errors: Option<String>,
    pub transient_retries: i64,
    pub parent_id: Option<i64>,
    /// The ids it depends on, a JSON array of numbers.
    pub deps: Option<String>,
    pub dep_failure: i64,
    pub wait_for: Option<i64>,
    /// A follow-up's key while it waits behind the running job that holds it.
    pub follow_key: Option<String>,
    pub links: i64,
    pub children: [i64; 5],
    pub fan_in: bool,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// How the stores keep an entry of the error history: `{"attempt", "kind" (the code),
/// "message", "at"}` (written by each store's trigger).
#[derive(serde::Deserialize)]
struct StoredAttemptError {
    attempt: i64,
    kind: i64,
    #[serde(default)]
    message: Option<String>,
    at: i64,
}

fn damaged(id: i64, what: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("job {id}: {what}"))
}

/// A job state from its stored code.
pub fn state_from_code(code: i64) -> Result<JobState, StoreError> {
    JobState::from_code(code).ok_or_else(|| StoreError::Internal(format!("unknown job state {code}")))
}

impl JobRow {
    pub fn into_job(self) -> Result<Job, StoreError> {
        let id = self.id;
        let state = JobState::from_code(self.state)
            .ok_or_else(|| damaged(id, format!("unknown state {}", self.state)))?;
        let error = match self.error_kind {
            Some(code) => Some(JobError {
                kind: ErrorKind::from_code(code)
                    .ok_or_else(|| damaged(id, format!("unknown error kind {code}")))?,
                message: self.error_message.unwrap_or_default(),
                at: Millis(self.error_at.unwrap_or(0)),
            }),
            None => None,
        };
        let progress = match self.progress {
            Some(text) => Some(
                serde_json::from_str::<Progress>(&text)
                    .map_err(|e| damaged(id, format!("unreadable progress: {e}")))?,
            ),
            None => None,
        };
        let errors = match self.errors {
            Some(text) => {
                let stored: Vec<StoredAttemptError> = serde_json::from_str(&text)
                    .map_err(|e| damaged(id, format!("unreadable error history: {e}")))?;
                stored
                    .into_iter()
                    .map(|e| {
                        Ok(AttemptError {
                            attempt: e.attempt,
                            kind: ErrorKind::from_code(e.kind).ok_or_else(|| {
                                damaged(id, format!("unknown error kind {} in its history", e.kind))
                            })?,
                            message: e.message.unwrap_or_default(),
                            at: Millis(e.at),
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?
            }
            None => Vec::new(),
        };
        let raw = |t: Option<String>| -> Option<RawJson> { t.map(raw_from_stored) };
        let depends_on = match self.deps {
            Some(text) => serde_json::from_str::<Vec<i64>>(&text)
                .map_err(|e| damaged(id, format!("unreadable dependencies: {e}")))?
                .into_iter()
                .map(JobId)
                .collect(),
            None => Vec::new(),
        };
        let waiting_for = match (state, self.wait_for) {
            (JobState::Waiting, Some(code)) => {
                Some(WaitingFor::from_code(code).ok_or_else(|| damaged(id, format!("unknown wait {code}")))?)
            }
            (JobState::Waiting, None) => return Err(damaged(id, "waiting for nothing")),
            _ => None,
        };
        let [total, succeeded, partial, failed, cancelled] = self.children;
        let children = (total > 0).then_some(Children { total, succeeded, partial, failed, cancelled });
        Ok(Job {
            id: JobId(id),
            queue: self.queue,
            kind: self.kind,
            payload: raw_from_stored(self.payload),
            key: self.key.or(self.follow_key),
            group: self.grp,
            priority: self.priority,
            state,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: Millis(self.run_at),
            created_at: Millis(self.created_at),
            started_at: self.started_at.map(Millis),
            finished_at: self.finished_at.map(Millis),
            progress,
            checkpoint: raw(self.checkpoint),
            result: raw(self.result),
            error,
            errors,
            cancel_requested: self.cancel_requested,
            partial: self.partial,
            transient_retries: self.transient_retries,
            timeout_ms: self.timeout_ms,
            worker: self.worker,
            lease_expires_at: self.lease_expires_at.map(Millis),
            parent: self.parent_id.map(JobId),
            depends_on,
            on_dependency_failure: OnDependencyFailure::from_code(self.dep_failure),
            waiting_for,
            children,
            fan_in: self.fan_in,
            trace: self
                .traceparent
                .map(|traceparent| drove_core::TraceContext { traceparent, tracestate: self.tracestate }),
            links: Links::from_bits(self.links),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> JobRow {
        JobRow {
            id: 7,
            queue: "q".into(),
            kind: None,
            payload: "{\"a\":1}".into(),
            key: None,
            grp: None,
            priority: 0,
            state: 4,
            attempt: 2,
            max_attempts: 2,
            run_at: 1,
            created_at: 1,
            started_at: Some(2),
            finished_at: Some(3),
            progress: Some(r#"{"done":1,"total":2,"message":null}"#.into()),
            checkpoint: None,
            result: None,
            error_kind: Some(5),
            error_message: Some("deadlock".into()),
            error_at: Some(3),
            cancel_requested: false,
            partial: false,
            timeout_ms: None,
            worker: None,
            lease_expires_at: None,
            errors: Some(r#"[{"attempt":1,"kind":0,"message":"boom","at":2},{"attempt":2,"kind":5,"message":null,"at":3}]"#.into()),
            transient_retries: 1,
            parent_id: Some(3),
            deps: Some("[1,2]".into()),
            dep_failure: 1,
            wait_for: None,
            follow_key: None,
            links: 1,
            children: [4, 2, 1, 1, 0],
            fan_in: false,
            traceparent: None,
            tracestate: None,
        }
    }

    #[test]
    fn a_row_decodes_into_the_job_model() {
        let job = row().into_job().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.error.as_ref().map(|e| e.kind), Some(ErrorKind::Transient));
        assert_eq!(job.errors.len(), 2);
        assert_eq!(job.errors[1].kind, ErrorKind::Transient);
        assert_eq!(job.progress.as_ref().map(|p| p.done), Some(1));
        assert_eq!(job.transient_retries, 1);
        assert_eq!(job.parent, Some(JobId(3)));
        assert_eq!(job.depends_on, vec![JobId(1), JobId(2)]);
        assert_eq!(job.on_dependency_failure, OnDependencyFailure::Run);
        assert_eq!(job.children.map(|c| c.pending()), Some(1));
        assert!(job.links.has_dependents && !job.links.has_follow_up);
        assert_eq!(JOB_COLS.split(',').count(), JOB_COL_COUNT);
        // A follow-up waiting behind its key's running job shows the key.
        let mut r = row();
        (r.state, r.wait_for, r.follow_key) = (-1, Some(3), Some("k".into()));
        let job = r.into_job().unwrap();
        assert_eq!((job.key.as_deref(), job.waiting_for), (Some("k"), Some(WaitingFor::Key)));
    }

    #[test]
    fn damaged_rows_are_internal_errors_not_nothing() {
        for damage in [
            |r: &mut JobRow| r.state = 9,
            |r: &mut JobRow| r.error_kind = Some(42),
            |r: &mut JobRow| r.progress = Some("not json".into()),
            |r: &mut JobRow| r.errors = Some("[{\"attempt\":1,\"kind\":77,\"at\":1}]".into()),
            |r: &mut JobRow| r.errors = Some("{}".into()),
            |r: &mut JobRow| r.deps = Some("[\"x\"]".into()),
            |r: &mut JobRow| r.state = -1,
            |r: &mut JobRow| (r.state, r.wait_for) = (-1, Some(9)),
        ] {
            let mut r = row();
            damage(&mut r);
            assert!(matches!(r.into_job(), Err(StoreError::Internal(_))));
        }
    }
}
