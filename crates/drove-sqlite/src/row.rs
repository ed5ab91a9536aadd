//! Rows to jobs.

use drove_core::{
    ErrorKind, Job, JobError, JobId, JobState, Millis, Progress, errors_from_stored, raw_from_stored,
};
use drove_store::StoreError;
use rusqlite::Row;

/// The columns [`job_from_row`] reads, in order.
pub(crate) const JOB_COLS: &str = "id, queue, kind, payload, key, grp, priority, state, attempt, \
    max_attempts, run_at, created_at, started_at, finished_at, progress, checkpoint, result, \
    error_kind, error_message, error_at, cancel_requested, partial, timeout_ms, worker, \
    lease_expires_at, errors";

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let state_code: i64 = row.get(7)?;
    let state = JobState::from_code(state_code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Integer,
            format!("unknown job state {state_code}").into(),
        )
    })?;
    let millis =
        |i: usize| -> rusqlite::Result<Option<Millis>> { Ok(row.get::<_, Option<i64>>(i)?.map(Millis)) };
    let raw = |i: usize| -> rusqlite::Result<Option<drove_core::RawJson>> {
        Ok(row.get::<_, Option<String>>(i)?.map(raw_from_stored))
    };
    let error = match (row.get::<_, Option<i64>>(17)?, row.get::<_, Option<String>>(18)?) {
        (Some(kind), message) => ErrorKind::from_code(kind).map(|kind| JobError {
            kind,
            message: message.unwrap_or_default(),
            at: Millis(row.get::<_, Option<i64>>(19).ok().flatten().unwrap_or(0)),
        }),
        _ => None,
    };
    let progress =
        row.get::<_, Option<String>>(14)?.and_then(|text| serde_json::from_str::<Progress>(&text).ok());
    Ok(Job {
        id: JobId(row.get(0)?),
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload: raw_from_stored(row.get(3)?),
        key: row.get(4)?,
        group: row.get(5)?,
        priority: row.get(6)?,
        state,
        attempt: row.get(8)?,
        max_attempts: row.get(9)?,
        run_at: Millis(row.get(10)?),
        created_at: Millis(row.get(11)?),
        started_at: millis(12)?,
        finished_at: millis(13)?,
        progress,
        checkpoint: raw(15)?,
        result: raw(16)?,
        error,
        cancel_requested: row.get::<_, i64>(20)? != 0,
        partial: row.get::<_, i64>(21)? != 0,
        timeout_ms: row.get(22)?,
        worker: row.get(23)?,
        lease_expires_at: millis(24)?,
        errors: row.get::<_, Option<String>>(25)?.map(|t| errors_from_stored(&t)).unwrap_or_default(),
    })
}

/// Maps a SQLite error to the store's vocabulary: busy, locked, IO and full disks are
/// transient (the caller may try again); anything else is a bug or corruption.
pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | OutOfMemory => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}
