//! The state transitions, each run inside one transaction by `Shared::write`.

pub(crate) mod admin;
pub(crate) mod claim;
pub(crate) mod finish;
pub(crate) mod lineage;
pub(crate) mod maintain;
pub(crate) mod schedule;
pub(crate) mod submit;

use drove_core::{Job, JobId};

use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row};
use crate::tx::{Params, Tx};

/// Columns reset when a run ends, whatever its outcome.
pub(crate) const END_RUN: &str = "lease = NULL, lease_ms = NULL, lease_expires_at = NULL, \
    deadline = NULL, reap_at = NULL, worker = NULL";

/// Runs an UPDATE ... RETURNING {JOB_COLS} expected to touch exactly one row.
pub(crate) async fn update_returning(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Job, TxError> {
    job_from_row(&tx.query_one(sql, params).await?)
}

/// The job, locked until the transaction ends.
pub(crate) async fn load_job_locked(tx: &Tx<'_>, id: JobId) -> Result<Option<Job>, TxError> {
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1 FOR UPDATE");
    tx.query_opt(&sql, &[&id.0]).await?.as_ref().map(job_from_row).transpose()
}

/// The active job holding `key` in `queue` (the unique index guarantees at most one).
pub(crate) async fn find_live(tx: &Tx<'_>, queue: &str, key: &str) -> Result<Option<Job>, TxError> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs \
         WHERE queue = $1 AND key = $2 AND state < 3 AND NOT cancel_requested"
    );
    tx.query_opt(&sql, &[&queue, &key]).await?.as_ref().map(job_from_row).transpose()
}
