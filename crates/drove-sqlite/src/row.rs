//! Rows to jobs: the columns read into [`JobRow`], decoded once for both stores by drove-store.

use drove_core::Job;
use drove_store::StoreError;
use drove_store::row::JobRow;
use rusqlite::Row;

/// The columns [`job_from_row`] reads, in order.
pub(crate) use drove_store::row::JOB_COLS;

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let jr = JobRow {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload: row.get(3)?,
        key: row.get(4)?,
        grp: row.get(5)?,
        priority: row.get(6)?,
        state: row.get(7)?,
        attempt: row.get(8)?,
        max_attempts: row.get(9)?,
        run_at: row.get(10)?,
        created_at: row.get(11)?,
        started_at: row.get(12)?,
        finished_at: row.get(13)?,
        progress: row.get(14)?,
        checkpoint: row.get(15)?,
        result: row.get(16)?,
        error_kind: row.get(17)?,
        error_message: row.get(18)?,
        error_at: row.get(19)?,
        cancel_requested: row.get::<_, i64>(20)? != 0,
        partial: row.get::<_, i64>(21)? != 0,
        timeout_ms: row.get(22)?,
        worker: row.get(23)?,
        lease_expires_at: row.get(24)?,
        errors: row.get(25)?,
        transient_retries: row.get(26)?,
        parent_id: row.get(27)?,
        deps: row.get(28)?,
        dep_failure: row.get(29)?,
        wait_for: row.get(30)?,
        follow_key: row.get(31)?,
        links: row.get(32)?,
        children: [row.get(33)?, row.get(34)?, row.get(35)?, row.get(36)?, row.get(37)?],
        fan_in: row.get::<_, i64>(38)? != 0,
        traceparent: row.get(39)?,
        tracestate: row.get(40)?,
    };
    // A row that does not decode is a bug or damage: an internal error (see `db_err`).
    jr.into_job()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Null, Box::new(e)))
}

/// The columns [`queue_from_row`] reads, in order.
pub(crate) const QUEUE_COLS: &str = "config, tat, held_until, limit_now, learn_us, learn_at, learn_strikes";

/// A queue's row from [`QUEUE_COLS`], starting at column `at`.
pub(crate) fn queue_from_row(
    name: &str,
    row: &Row<'_>,
    at: usize,
) -> rusqlite::Result<drove_store::limits::QueueRow> {
    let config: String = row.get(at)?;
    let config = serde_json::from_str(&config).map_err(|e| {
        let e = StoreError::Internal(format!("queue {name} config: {e}"));
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(drove_store::limits::QueueRow {
        config,
        tat: row.get(at + 1)?,
        held_until: row.get(at + 2)?,
        limit_now: row.get(at + 3)?,
        learned: drove_store::admission::RateState::learned_from(
            row.get(at + 4)?,
            row.get(at + 5)?,
            row.get(at + 6)?,
        ),
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
