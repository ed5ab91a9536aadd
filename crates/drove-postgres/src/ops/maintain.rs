//! Maintenance transitions: promote due jobs, reap runs whose lease or deadline passed, prune
//! finished jobs, compact the count deltas. Each does a bounded amount of work per call and is
//! idempotent, and each takes its rows with SKIP LOCKED, so every node may run them at once:
//! nodes share the work instead of waiting for each other, and no leader is needed.

use std::collections::BTreeSet;

use drove_core::{JobId, JobState};
use drove_store::transition::Ending;

use super::finish::{RUN_COLS, end_run, run_row_from, wake_pool_mates};
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
            &format!(
                "SELECT id, timeout_ms, {RUN_COLS} FROM jobs WHERE state = 2 AND reap_at <= $1 \
                 ORDER BY reap_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&now.0, &(limit as i64)],
        )
        .await?;
    let mut queues: Vec<String> = Vec::new();
    for r in &due {
        let id = JobId(r.try_get(0)?);
        let timeout_ms: Option<i64> = r.try_get(1)?;
        let run = run_row_from(r, 2)?;
        let ending = if run.deadline.is_some_and(|d| d <= now.0) {
            Ending::TimedOut { timeout_ms: timeout_ms.unwrap_or(0) }
        } else {
            Ending::Lost
        };
        let job = end_run(tx, id, &run, ending).await?;
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
                 ORDER BY finished_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING state, partial",
                &[&queue, &(now.0 - retention_ms), &(now.0 - reuse_ms), &((limit - total) as i64)],
            )
            .await?;
        let mut partials = 0;
        for r in &gone {
            let state = state_of(r.try_get(0)?)?;
            tx.moved(&queue, Some(state), None);
            partials += i64::from(state == JobState::Succeeded && r.try_get::<_, bool>(1)?);
        }
        tx.partial_gone(&queue, partials);
        total += gone.len();
    }
    // Outcome counts are kept for the longest window the operations view shows, and a day more.
    let oldest = now.0.div_euclid(60_000) - drove_store::OUTCOME_KEEP_MINUTES;
    tx.execute("DELETE FROM outcomes WHERE minute < $1", &[&oldest]).await?;
    Ok(total)
}

/// Folds outcome deltas into `outcomes`, like [`compact_counts`].
pub(crate) async fn compact_outcomes(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    tx.execute(
        "WITH d AS (DELETE FROM outcome_deltas WHERE id IN \
                 (SELECT id FROM outcome_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING queue, minute, state, partial, kind, n), \
             s AS (SELECT queue, minute, state, partial, kind, sum(n)::bigint AS n FROM d \
                   GROUP BY queue, minute, state, partial, kind) \
             INSERT INTO outcomes (queue, minute, state, partial, kind, n) \
             SELECT * FROM s ORDER BY queue, minute, state, partial, kind \
             ON CONFLICT (queue, minute, state, partial, kind) DO UPDATE SET n = outcomes.n + excluded.n",
        &[&COMPACT_BATCH],
    )
    .await
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
