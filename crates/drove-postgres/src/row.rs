//! Rows to jobs: the columns read into [`JobRow`], decoded once for both stores by drove-store.

use drove_core::{Job, JobState};
use drove_store::StoreError;
use drove_store::row::JobRow;
use tokio_postgres::Row;

use crate::error::TxError;

/// The columns [`job_from_row`] reads, in order.
pub(crate) use drove_store::row::{JOB_COL_COUNT, JOB_COLS};

pub(crate) fn state_of(code: i16) -> Result<JobState, TxError> {
    JobState::from_code(i64::from(code))
        .ok_or_else(|| StoreError::Internal(format!("unknown job state {code}")).into())
}

pub(crate) fn job_from_row(row: &Row) -> Result<Job, TxError> {
    let jr = JobRow {
        id: row.try_get(0)?,
        queue: row.try_get(1)?,
        kind: row.try_get(2)?,
        payload: row.try_get(3)?,
        key: row.try_get(4)?,
        grp: row.try_get(5)?,
        priority: row.try_get(6)?,
        state: i64::from(row.try_get::<_, i16>(7)?),
        attempt: row.try_get(8)?,
        max_attempts: row.try_get(9)?,
        run_at: row.try_get(10)?,
        created_at: row.try_get(11)?,
        started_at: row.try_get(12)?,
        finished_at: row.try_get(13)?,
        progress: row.try_get(14)?,
        checkpoint: row.try_get(15)?,
        result: row.try_get(16)?,
        error_kind: row.try_get::<_, Option<i16>>(17)?.map(i64::from),
        error_message: row.try_get(18)?,
        error_at: row.try_get(19)?,
        cancel_requested: row.try_get(20)?,
        partial: row.try_get(21)?,
        timeout_ms: row.try_get(22)?,
        worker: row.try_get(23)?,
        lease_expires_at: row.try_get(24)?,
        errors: row.try_get(25)?,
        transient_retries: row.try_get(26)?,
        parent_id: row.try_get(27)?,
        deps: row.try_get(28)?,
        dep_failure: i64::from(row.try_get::<_, i16>(29)?),
        wait_for: row.try_get::<_, Option<i16>>(30)?.map(i64::from),
        follow_key: row.try_get(31)?,
        links: i64::from(row.try_get::<_, i16>(32)?),
        children: [row.try_get(33)?, row.try_get(34)?, row.try_get(35)?, row.try_get(36)?, row.try_get(37)?],
        fan_in: row.try_get(38)?,
        traceparent: row.try_get(39)?,
        tracestate: row.try_get(40)?,
    };
    Ok(jr.into_job()?)
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
