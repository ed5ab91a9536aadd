//! What a job's end does to the jobs that wait on it (SQLite): its parent's counters (and the
//! parent's fan-in), its dependents, the follow-up behind its key, and, for a cancelled parent,
//! its unfinished children. The decisions are drove_store::lineage's; every change made here is
//! in the transaction of the end that caused it.

use drove_core::{ErrorKind, Job, JobId, JobState, Millis, OnDependencyFailure, WaitingFor};
use drove_store::StoreError;
use drove_store::lineage::{self, ChildEnd, DependentAfter};
use rusqlite::{OptionalExtension, params};

use super::group::refresh_group;
use super::{find_live, update_returning};
use crate::row::db_err;
use crate::writer::Tx;

/// Whether a job's end touches any other job (cheap: read from the job itself).
fn reaches_others(job: &Job) -> bool {
    job.parent.is_some()
        || job.links.has_dependents
        || job.links.has_follow_up
        || (job.state == JobState::Cancelled && job.children.is_some_and(|c| c.pending() > 0))
}

/// Bookkeeping once `job` reached a terminal state, for the jobs that wait on it; ends that
/// follow from it (dependents failing, children cancelled) are handled here too.
pub(crate) fn on_ended(tx: &mut Tx<'_>, job: &Job, now: Millis) -> Result<(), StoreError> {
    if !reaches_others(job) {
        return Ok(());
    }
    let mut work = vec![job.clone()];
    while let Some(j) = work.pop() {
        if let Some(parent) = j.parent {
            child_moved(tx, parent, ChildEnd::of(j.state, j.partial, 1), now)?;
        }
        if j.links.has_dependents {
            resolve_dependents(tx, &j, now, &mut work)?;
        }
        if j.links.has_follow_up
            && let Some(key) = &j.key
        {
            promote_follow_up(tx, &j.queue, key, now)?;
        }
        if j.state == JobState::Cancelled && j.children.is_some_and(|c| c.pending() > 0) {
            cancel_children(tx, j.id, now, &mut work)?;
        }
    }
    Ok(())
}

/// A child ended (or, redriven, came back): its parent's counters move, and a parent waiting
/// for its children is queued for its fan-in once none is left.
pub(crate) fn child_moved(
    tx: &mut Tx<'_>,
    parent: JobId,
    d: ChildEnd,
    now: Millis,
) -> Result<(), StoreError> {
    let changed = tx
        .conn
        .prepare_cached(
            "UPDATE jobs SET children_succeeded = children_succeeded + ?2, \
             children_partial = children_partial + ?3, children_failed = children_failed + ?4, \
             children_cancelled = children_cancelled + ?5 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![parent.0, d.succeeded, d.partial, d.failed, d.cancelled]))
        .map_err(db_err)?;
    if changed == 0 {
        return Ok(()); // the parent was pruned
    }
    let row: (i64, Option<i64>, i64) = tx
        .conn
        .prepare_cached(
            "SELECT state, wait_for, children_total - children_succeeded - children_failed - children_cancelled \
             FROM jobs WHERE id = ?1",
        )
        .and_then(|mut s| s.query_row([parent.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(db_err)?;
    let state = drove_store::row::state_from_code(row.0)?;
    if lineage::parent_wakes(state, row.1.and_then(WaitingFor::from_code), row.2) {
        let job = update_returning(
            tx,
            "UPDATE jobs SET state = 1, run_at = ?2, wait_for = NULL, fan_in = 1 WHERE id = ?1",
            params![parent.0, now.0],
            parent.0,
        )?;
        now_ready(tx, &job, JobState::Waiting, now)?;
    }
    Ok(())
}

/// Bookkeeping for a job that left `waiting` to be scheduled or queued.
fn now_ready(tx: &mut Tx<'_>, job: &Job, from: JobState, now: Millis) -> Result<(), StoreError> {
    tx.moved(&job.queue, Some(from), Some(job.state));
    if job.state == JobState::Queued {
        if let Some(g) = &job.group {
            refresh_group(tx, &job.queue, g, now)?;
        }
        tx.ready(&job.queue);
    }
    tx.changed(job);
    Ok(())
}

/// `dep` ended: each job waiting on it counts it off, starts, or ends without running.
fn resolve_dependents(
    tx: &mut Tx<'_>,
    dep: &Job,
    now: Millis,
    work: &mut Vec<Job>,
) -> Result<(), StoreError> {
    let dependents: Vec<i64> = tx
        .conn
        .prepare_cached("SELECT job_id FROM job_deps WHERE dep_id = ?1")
        .and_then(|mut s| s.query_map([dep.id.0], |r| r.get(0))?.collect())
        .map_err(db_err)?;
    tx.conn
        .prepare_cached("DELETE FROM job_deps WHERE dep_id = ?1")
        .and_then(|mut s| s.execute([dep.id.0]))
        .map_err(db_err)?;
    for id in dependents {
        let row: Option<(i64, Option<i64>, i64, i64, i64)> = tx
            .conn
            .prepare_cached(
                "SELECT state, wait_for, deps_pending, dep_failure, run_at FROM jobs WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).optional()
            })
            .map_err(db_err)?;
        let Some((state, wait_for, pending, on_failure, run_at)) = row else { continue };
        if state != JobState::Waiting.code() || wait_for != Some(WaitingFor::Dependencies.code()) {
            continue; // cancelled meanwhile
        }
        let on_failure = OnDependencyFailure::from_code(on_failure);
        match lineage::dependency_ended(dep.id, dep.state, on_failure, pending) {
            DependentAfter::Wait(n) => {
                tx.conn
                    .prepare_cached("UPDATE jobs SET deps_pending = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, n]))
                    .map_err(db_err)?;
            }
            DependentAfter::Ready => {
                let state = lineage::ready_state(drove_core::Millis(run_at), now);
                let job = update_returning(
                    tx,
                    "UPDATE jobs SET state = ?2, deps_pending = 0, wait_for = NULL WHERE id = ?1",
                    params![id, state.code()],
                    id,
                )?;
                now_ready(tx, &job, JobState::Waiting, now)?;
            }
            DependentAfter::End { state, message } => {
                let job = end_unrun(tx, JobId(id), JobState::Waiting, state, Some(&message), now)?;
                work.push(job);
            }
        }
    }
    Ok(())
}

/// Ends a job that is not running (waiting, scheduled or queued) without running it: cancelled,
/// or failed with an error of kind `dependency`. The caller handles what its end reaches.
pub(crate) fn end_unrun(
    tx: &mut Tx<'_>,
    id: JobId,
    from: JobState,
    to: JobState,
    dependency: Option<&str>,
    now: Millis,
) -> Result<Job, StoreError> {
    let job = match dependency {
        Some(message) => update_returning(
            tx,
            "UPDATE jobs SET state = ?2, finished_at = ?3, wait_for = NULL, error_kind = ?4, \
             error_message = ?5, error_at = ?3 WHERE id = ?1",
            params![id.0, to.code(), now.0, ErrorKind::Dependency.code(), message],
            id.0,
        )?,
        None => update_returning(
            tx,
            "UPDATE jobs SET state = ?2, finished_at = ?3, wait_for = NULL WHERE id = ?1",
            params![id.0, to.code(), now.0],
            id.0,
        )?,
    };
    tx.moved(&job.queue, Some(from), Some(to));
    tx.ended(&job);
    if let Some(g) = &job.group {
        refresh_group(tx, &job.queue, g, now)?;
    }
    tx.changed(&job);
    Ok(job)
}

/// The running job of `key` ended: the follow-up behind it takes the key and may start (or, if
/// a newer job holds the key meanwhile, waits behind that one).
fn promote_follow_up(tx: &mut Tx<'_>, queue: &str, key: &str, now: Millis) -> Result<(), StoreError> {
    let Some(next) = super::submit::find_follow_up(tx, queue, key)? else {
        return Ok(());
    };
    if let Some(holder) = find_live(tx, queue, key)? {
        tx.conn
            .prepare_cached("UPDATE jobs SET links = links | ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![holder.id.0, drove_core::Links::FOLLOW_UP]))
            .map_err(db_err)?;
        return Ok(());
    }
    let state = lineage::ready_state(next.run_at.max(now), now);
    let job = update_returning(
        tx,
        "UPDATE jobs SET key = follow_key, follow_key = NULL, state = ?2, wait_for = NULL, run_at = ?3 \
         WHERE id = ?1",
        params![next.id.0, state.code(), next.run_at.max(now).0],
        next.id.0,
    )?;
    now_ready(tx, &job, JobState::Waiting, now)
}

/// A cancelled parent's unfinished children are cancelled: at once if not running, by request
/// if running (they end when their worker hears of it).
fn cancel_children(
    tx: &mut Tx<'_>,
    parent: JobId,
    now: Millis,
    work: &mut Vec<Job>,
) -> Result<(), StoreError> {
    let children: Vec<(i64, i64)> = tx
        .conn
        .prepare_cached("SELECT id, state FROM jobs WHERE parent_id = ?1 AND state < 3")
        .and_then(|mut s| s.query_map([parent.0], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)?;
    for (id, state) in children {
        let state = drove_store::row::state_from_code(state)?;
        if state == JobState::Running {
            let marked =
                update_returning(tx, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id], id)?;
            tx.changed(&marked);
        } else {
            work.push(end_unrun(tx, JobId(id), state, JobState::Cancelled, None, now)?);
        }
    }
    Ok(())
}
