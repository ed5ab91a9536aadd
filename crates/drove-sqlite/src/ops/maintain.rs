//! Maintenance transitions: promote due jobs, reap runs whose lease or deadline passed, prune
//! finished jobs. Each does a bounded amount of work per call and is idempotent.

use drove_core::{ErrorKind, JobId, JobState, Millis};
use drove_store::StoreError;
use rusqlite::params;

use super::finish::{after_run, end_cancelled, retry_or_fail_with};
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
    type Row = (i64, Option<i64>, i64, i64, i64, String, Option<i64>);
    let due: Vec<Row> = tx
        .conn
        .prepare_cached(
            "SELECT id, deadline, cancel_requested, attempt, max_attempts, queue, timeout_ms \
             FROM jobs WHERE state = 2 AND reap_at <= ?1 ORDER BY reap_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now.0, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect()
        })
        .map_err(db_err)?;
    for (id, deadline, cancel_requested, attempt, max_attempts, queue, timeout_ms) in &due {
        let id = JobId(*id);
        let (kind, message) = if deadline.is_some_and(|d| d <= now.0) {
            (ErrorKind::Timeout, format!("timed out after {} ms", timeout_ms.unwrap_or(0)))
        } else {
            (ErrorKind::Lost, "the lease expired: the worker stopped heartbeating".to_owned())
        };
        let job = if *cancel_requested != 0 {
            end_cancelled(tx, id, now, Some((kind, &message)))?
        } else {
            retry_or_fail_with(tx, id, queue, (*attempt, *max_attempts), now, (kind, &message))?
        };
        after_run(tx, &job, now)?;
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
        let gone: Vec<i64> = tx
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND state >= 3 \
                 AND finished_at < ?2 AND (state <> 3 OR key IS NULL OR finished_at < ?3) \
                 ORDER BY finished_at LIMIT ?4) RETURNING state",
            )
            .and_then(|mut s| {
                let args = params![queue, now.0 - retention_ms, now.0 - reuse_ms, (limit - total) as i64];
                s.query_map(args, |r| r.get(0))?.collect()
            })
            .map_err(db_err)?;
        for state in &gone {
            tx.moved(&queue, JobState::from_code(*state), None);
        }
        total += gone.len();
    }
    Ok(total)
}
