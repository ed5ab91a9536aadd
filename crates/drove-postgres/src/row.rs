//! Rows to jobs.

use drove_core::{
    ErrorKind, Job, JobError, JobId, JobState, Millis, Progress, errors_from_stored, raw_from_stored,
};
use drove_store::StoreError;
use tokio_postgres::Row;

use crate::error::TxError;

/// The columns [`job_from_row`] reads, in order.
pub(crate) const JOB_COLS: &str = "id, queue, kind, payload, key, grp, priority, state, attempt, \
    max_attempts, run_at, created_at, started_at, finished_at, progress, checkpoint, result, \
    error_kind, error_message, error_at, cancel_requested, partial, timeout_ms, worker, \
    lease_expires_at, errors";

/// How many columns `JOB_COLS` names (a statement may return more after them).
pub(crate) const JOB_COL_COUNT: usize = 26;

pub(crate) fn state_of(code: i16) -> Result<JobState, TxError> {
    JobState::from_code(i64::from(code))
        .ok_or_else(|| StoreError::Internal(format!("unknown job state {code}")).into())
}

pub(crate) fn job_from_row(row: &Row) -> Result<Job, TxError> {
    let millis =
        |i: usize| -> Result<Option<Millis>, TxError> { Ok(row.try_get::<_, Option<i64>>(i)?.map(Millis)) };
    let raw = |i: usize| -> Result<Option<drove_core::RawJson>, TxError> {
        Ok(row.try_get::<_, Option<String>>(i)?.map(raw_from_stored))
    };
    let error = match row.try_get::<_, Option<i16>>(17)? {
        Some(kind) => ErrorKind::from_code(i64::from(kind)).map(|kind| JobError {
            kind,
            message: row.try_get::<_, Option<String>>(18).ok().flatten().unwrap_or_default(),
            at: Millis(row.try_get::<_, Option<i64>>(19).ok().flatten().unwrap_or(0)),
        }),
        None => None,
    };
    let progress =
        row.try_get::<_, Option<String>>(14)?.and_then(|text| serde_json::from_str::<Progress>(&text).ok());
    Ok(Job {
        id: JobId(row.try_get(0)?),
        queue: row.try_get(1)?,
        kind: row.try_get(2)?,
        payload: raw_from_stored(row.try_get(3)?),
        key: row.try_get(4)?,
        group: row.try_get(5)?,
        priority: row.try_get(6)?,
        state: state_of(row.try_get(7)?)?,
        attempt: row.try_get(8)?,
        max_attempts: row.try_get(9)?,
        run_at: Millis(row.try_get(10)?),
        created_at: Millis(row.try_get(11)?),
        started_at: millis(12)?,
        finished_at: millis(13)?,
        progress,
        checkpoint: raw(15)?,
        result: raw(16)?,
        error,
        cancel_requested: row.try_get(20)?,
        partial: row.try_get(21)?,
        timeout_ms: row.try_get(22)?,
        worker: row.try_get(23)?,
        lease_expires_at: millis(24)?,
        errors: row.try_get::<_, Option<String>>(25)?.map(|t| errors_from_stored(&t)).unwrap_or_default(),
    })
}

/// PostgreSQL text cannot hold NUL; free text from clients (error messages) has it replaced.
pub(crate) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_col_count_matches_job_cols() {
        assert_eq!(JOB_COLS.split(',').count(), JOB_COL_COUNT);
    }
}
