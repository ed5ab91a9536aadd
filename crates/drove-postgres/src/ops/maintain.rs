//! Maintenance transitions: promote due jobs, reap runs whose lease or deadline passed, prune
//! finished jobs, compact the count deltas. Each does a bounded amount of work per call and is
//! idempotent, and each takes its rows with SKIP LOCKED, so every node may run them at once:
//! nodes share the work instead of waiting for each other, and no leader is needed.

use std::collections::BTreeSet;

use drove_core::{ErrorKind, JobId, JobState};

use super::finish::{after_run, end_cancelled, retry_or_fail, wake_pool_mates};
use crate::error::TxError;
use crate::row::state_of;
use crate::tx::Tx;

pub(crate) async fn promote(tx: &mut Tx<'_>, limit: usize) -> Result<usize, TxError> {
    let rows = tx
        .query(
            "UPDATE jobs SET state = 1 WHERE id IN (SELECT id FROM jobs WHERE state = 0 \
             AND run_at <= $1 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, queue, grp",
            &[&tx.now.0, &(limit as i64)],
        )
        .await?;
    let mut groups = BTreeSet::new();
    for r in &rows {
        let (id, queue, grp): (i64, String, Option<String>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        tx.moved(&queue, Some(JobState::Scheduled), Some(JobState::Queued));
        tx.ready(&queue);
        tx.changed_light(JobId(id), &queue, JobState::Queued);
        if let Some(g) = grp {
            groups.insert((queue, g));
        }
    }
    for (queue, g) in groups {
        tx.touch_group(&queue, &g);
    }
    Ok(rows.len())
}

pub(crate) async fn reap(tx: &mut Tx<'_>, limit: usize) -> Result<usize, TxError> {
    let now = tx.now;
    let due = tx
        .query(
            "SELECT id, deadline, cancel_requested, attempt, max_attempts, queue, timeout_ms \
             FROM jobs WHERE state = 2 AND reap_at <= $1 ORDER BY reap_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now.0, &(limit as i64)],
        )
        .await?;
    let mut queues: Vec<String> = Vec::new();
    for r in &due {
        let id = JobId(r.try_get(0)?);
        let deadline: Option<i64> = r.try_get(1)?;
        let cancel_requested: bool = r.try_get(2)?;
        let queue: String = r.try_get(5)?;
        let timeout_ms: Option<i64> = r.try_get(6)?;
        let (kind, message) = if deadline.is_some_and(|d| d <= now.0) {
            (ErrorKind::Timeout, format!("timed out after {} ms", timeout_ms.unwrap_or(0)))
        } else {
            (ErrorKind::Lost, "the lease expired: the worker stopped heartbeating".to_owned())
        };
        let job = if cancel_requested {
            end_cancelled(tx, id, Some((kind, &message))).await?
        } else {
            retry_or_fail(tx, id, &queue, (r.try_get(3)?, r.try_get(4)?), (kind, &message)).await?
        };
        after_run(tx, &job);
        queues.push(job.queue.clone());
    }
    wake_pool_mates(tx, &queues).await?;
    Ok(due.len())
}

pub(crate) async fn prune(tx: &mut Tx<'_>, retention_ms: i64, limit: usize) -> Result<usize, TxError> {
    let now = tx.now;
    let queues = tx.query("SELECT name, reuse_ms FROM queues ORDER BY name", &[]).await?;
    let mut total = 0;
    for q in &queues {
        if total >= limit {
            break;
        }
        let (queue, reuse_ms): (String, i64) = (q.try_get(0)?, q.try_get(1)?);
        // A succeeded keyed job stays while its queue's reuse window covers it, so a reuse
        // window longer than the retention is honoured.
        let gone = tx
            .query(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND state >= 3 \
                 AND finished_at < $2 AND (state <> 3 OR key IS NULL OR finished_at < $3) \
                 ORDER BY finished_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING state",
                &[&queue, &(now.0 - retention_ms), &(now.0 - reuse_ms), &((limit - total) as i64)],
            )
            .await?;
        for r in &gone {
            let state = state_of(r.try_get(0)?)?;
            tx.moved(&queue, Some(state), None);
        }
        total += gone.len();
    }
    Ok(total)
}

/// Rows of count deltas folded into the base counts per call.
const COMPACT_BATCH: i64 = 10_000;

/// Folds count deltas into `queue_counts`. Deltas are taken with SKIP LOCKED, so compactions
/// on several nodes never fold one delta twice, and base rows are updated in (queue, state)
/// order, so they cannot deadlock. Returns how many base rows it changed.
pub(crate) async fn compact_counts(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    tx.execute(
        "WITH d AS (DELETE FROM count_deltas WHERE id IN \
                 (SELECT id FROM count_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING queue, state, n), \
             s AS (SELECT queue, state, sum(n)::bigint AS n FROM d GROUP BY queue, state) \
             INSERT INTO queue_counts (queue, state, n) SELECT queue, state, n FROM s ORDER BY queue, state \
             ON CONFLICT (queue, state) DO UPDATE SET n = queue_counts.n + excluded.n",
        &[&COMPACT_BATCH],
    )
    .await
}
