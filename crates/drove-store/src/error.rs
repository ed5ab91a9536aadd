//! The errors a store returns: each variant is one thing its caller does something different
//! about (answer 404, answer 409, retry later, report a bug).

use drove_core::{JobId, JobState, ValidationError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such job (or queue, or pool).
    #[error("{0} not found")]
    NotFound(String),
    /// The lease given is not the job's current lease (it expired, was reaped, was handed to
    /// another worker, or the job timed out): the call changed nothing.
    #[error("the lease is not the job's current lease")]
    StaleLease,
    /// `on_conflict: reject` (or a redrive) met an active job holding the key.
    #[error("key {key:?} is held by active job {job}")]
    KeyConflict { key: String, job: JobId },
    /// The transition does not apply to a job in this state (cancel a finished job, retry a
    /// running one).
    #[error("job {job} is {state}: cannot {action}")]
    WrongState { job: JobId, state: JobState, action: &'static str },
    /// An invalid value; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store cannot be reached or did not commit (IO error, connection lost, database
    /// restarting). Nothing was acknowledged; the caller may try again.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data: not the caller's fault, and retrying will not help.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn job_not_found(id: JobId) -> StoreError {
        StoreError::NotFound(format!("job {id}"))
    }

    /// Worth retrying the same call later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
