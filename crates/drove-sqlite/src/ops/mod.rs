//! The state transitions, each run by the writer inside its own savepoint.

pub(crate) mod admin;
pub(crate) mod claim;
pub(crate) mod finish;
pub(crate) mod group;
pub(crate) mod lineage;
pub(crate) mod maintain;
pub(crate) mod schedule;
pub(crate) mod submit;

use drove_core::{Job, JobId};
use drove_store::StoreError;
use rusqlite::{OptionalExtension, params};

use crate::row::{JOB_COLS, db_err, job_from_row};
use crate::writer::Tx;

/// Columns reset when a run ends, whatever its outcome.
pub(crate) const END_RUN: &str = "lease = NULL, lease_ms = NULL, lease_expires_at = NULL, \
    deadline = NULL, reap_at = NULL, worker = NULL";

/// Runs an UPDATE of job `id` (one row), then reads the job back.
///
/// Not `UPDATE ... RETURNING`: SQLite implements RETURNING with an internal trigger, which
/// makes the statement keep a statement journal (a copy of every page it touches); measured
/// as the largest cost of a claim or a completion. A read by primary key is cheaper.
pub(crate) fn update_returning(
    tx: &Tx<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    id: i64,
) -> Result<Job, StoreError> {
    let changed = tx.conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(db_err)?;
    if changed != 1 {
        return Err(StoreError::Internal(format!("job {id}: expected to change one row, changed {changed}")));
    }
    load_job(tx, JobId(id))?.ok_or_else(|| StoreError::Internal(format!("job {id} vanished")))
}

/// Jobs by id, in the order of `ids` (ids that do not exist are skipped).
pub(crate) fn load_jobs(tx: &Tx<'_>, ids: &[i64]) -> Result<Vec<Job>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(ids);
    let mut jobs: Vec<Job> = tx
        .conn
        .prepare_cached(sql!("SELECT {JOB_COLS} FROM jobs WHERE id IN (SELECT value FROM json_each(?1))"))
        .and_then(|mut s| s.query_map([list], job_from_row)?.collect())
        .map_err(db_err)?;
    let order: std::collections::HashMap<i64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    jobs.sort_by_key(|j| order.get(&j.id.0).copied().unwrap_or(usize::MAX));
    Ok(jobs)
}

/// A JSON array of ids, for `json_each`: one statement serves a whole batch.
pub(crate) fn id_list(ids: &[i64]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(ids.len() * 8 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push(']');
    s
}

pub(crate) fn load_job(tx: &Tx<'_>, id: JobId) -> Result<Option<Job>, StoreError> {
    tx.conn
        .prepare_cached(sql!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
        .and_then(|mut s| s.query_row(params![id.0], job_from_row).optional())
        .map_err(db_err)
}

/// The active job holding `key` in `queue` (the unique index guarantees at most one).
pub(crate) fn find_live(tx: &Tx<'_>, queue: &str, key: &str) -> Result<Option<Job>, StoreError> {
    tx.conn
        .prepare_cached(sql!(
            "SELECT {JOB_COLS} FROM jobs \
             WHERE queue = ?1 AND key = ?2 AND state < 3 AND cancel_requested = 0"
        ))
        .and_then(|mut s| s.query_row(params![queue, key], job_from_row).optional())
        .map_err(db_err)
}
