//! Maintenance transitions: promote due jobs, reap runs whose lease or deadline passed, prune
//! finished jobs. Each does a bounded amount of work per call and is idempotent.

use drove_core::{JobId, JobState, Millis};
use drove_store::StoreError;
use drove_store::transition::Ending;
use rusqlite::params;

use super::finish::{RUN_COLS, end_run, run_row_from};
use super::group::refresh_group;
use crate::row::db_err;
use crate::writer::Tx;

pub(crate) fn promote(tx: &mut Tx<'_>, now: Millis, limit: usize) -> Result<usize, StoreError> {
    let moved: Vec<(i64, String, Option<String>)> = tx
        .conn
        .prepare_cached(
            "UPDATE jobs SET state = 1 WHERE id IN (SELECT id FROM jobs WHERE state = 0 \
             AND run_at <= ?1 ORDER BY run_at LIMIT ?2) RETURNING id, queue, grp",
        )
        .and_then(|mut s| {
            s.query_map(params![now.0, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
        })
        .map_err(db_err)?;
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for (id, queue, grp) in &moved {
        tx.moved(queue, Some(JobState::Scheduled), Some(JobState::Queued));
        tx.ready(queue);
        tx.changed_light(JobId(*id), queue, JobState::Queued);
        if let Some(g) = grp
            && !groups.contains(&(queue.as_str(), g.as_str()))
        {
            groups.push((queue, g));
        }
    }
    for (queue, g) in groups {
        refresh_group(tx, queue, g, now)?;
    }
    Ok(moved.len())
}

pub(crate) fn reap(tx: &mut Tx<'_>, now: Millis, limit: usize) -> Result<usize, StoreError> {
    type Due = (i64, Option<i64>, crate::ops::finish::RunRow);
    let due: Vec<Due> = tx
        .conn
        .prepare_cached(sql!(
            "SELECT id, timeout_ms, {RUN_COLS} FROM jobs WHERE state = 2 AND reap_at <= ?1 \
             ORDER BY reap_at LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![now.0, limit as i64], |r| {
                // The run's columns start after the two above.
                let run = run_row_from(r, 2)?;
                Ok((r.get(0)?, r.get(1)?, run))
            })?
            .collect()
        })
        .map_err(db_err)?;
    for (id, timeout_ms, run) in &due {
        let ending = if run.deadline().is_some_and(|d| d <= now.0) {
            Ending::TimedOut { timeout_ms: timeout_ms.unwrap_or(0) }
        } else {
            Ending::Lost
        };
        end_run(tx, JobId(*id), run, ending, now)?;
    }
    Ok(due.len())
}

pub(crate) fn prune(
    tx: &mut Tx<'_>,
    now: Millis,
    retention_ms: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    let queues: Vec<(String, i64)> = tx
        .conn
        .prepare_cached("SELECT name, reuse_ms FROM queues")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)?;
    let mut total = 0;
    for (queue, reuse_ms) in queues {
        if total >= limit {
            break;
        }
        // A succeeded keyed job stays while its queue's reuse window covers it, so a reuse
        // window longer than the retention is honoured.
        let gone: Vec<(i64, bool)> = tx
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND state >= 3 \
                 AND finished_at < ?2 AND (state <> 3 OR key IS NULL OR finished_at < ?3) \
                 ORDER BY finished_at LIMIT ?4) RETURNING state, partial",
            )
            .and_then(|mut s| {
                let args = params![queue, now.0 - retention_ms, now.0 - reuse_ms, (limit - total) as i64];
                s.query_map(args, |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?.collect()
            })
            .map_err(db_err)?;
        let mut partials = 0;
        for (state, partial) in &gone {
            tx.moved(&queue, JobState::from_code(*state), None);
            partials += i64::from(*state == JobState::Succeeded.code() && *partial);
        }
        tx.partial_gone(&queue, partials);
        total += gone.len();
    }
    // Outcome counts are kept for the longest window the operations view shows, and a day more.
    tx.conn
        .prepare_cached("DELETE FROM outcomes WHERE minute < ?1")
        .and_then(|mut s| s.execute([now.0.div_euclid(60_000) - drove_store::OUTCOME_KEEP_MINUTES]))
        .map_err(db_err)?;
    Ok(total)
}
