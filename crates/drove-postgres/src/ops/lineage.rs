//! What a job's end does to the jobs that wait on it (PostgreSQL): its parent's counters (and the
//! parent's fan-in), its dependents, the follow-up behind its key, and, for a cancelled parent,
//! its unfinished children. The decisions are drove_store::lineage's; each row is locked by the
//! statement that changes it, in the transaction of the end that caused it.

use drove_core::{ErrorKind, Job, JobId, JobState, Links, OnDependencyFailure, WaitingFor};
use drove_store::lineage::{self, ChildEnd, DependentAfter};

use super::{find_live, update_returning};
use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row, state_of};
use crate::tx::Tx;

/// Whether a job's end touches any other job (cheap: read from the job itself).
fn reaches_others(job: &Job) -> bool {
    job.parent.is_some()
        || job.links.has_dependents
        || job.links.has_follow_up
        || (job.state == JobState::Cancelled && job.children.is_some_and(|c| c.pending() > 0))
}

/// Bookkeeping once `job` reached a terminal state, for the jobs that wait on it; ends that
/// follow from it (dependents failing, children cancelled) are handled here too.
pub(crate) async fn on_ended(tx: &mut Tx<'_>, job: &Job) -> Result<(), TxError> {
    if !reaches_others(job) {
        return Ok(());
    }
    let mut work = vec![job.clone()];
    while let Some(j) = work.pop() {
        if let Some(parent) = j.parent {
            child_moved(tx, parent, ChildEnd::of(j.state, j.partial, 1)).await?;
        }
        if j.links.has_dependents {
            resolve_dependents(tx, &j, &mut work).await?;
        }
        if j.links.has_follow_up
            && let Some(key) = &j.key
        {
            promote_follow_up(tx, &j.queue, key).await?;
        }
        if j.state == JobState::Cancelled && j.children.is_some_and(|c| c.pending() > 0) {
            cancel_children(tx, j.id, &mut work).await?;
        }
    }
    Ok(())
}

/// A child ended (or, redriven, came back): its parent's counters move (the update locks the
/// parent), and a parent waiting for its children is queued for its fan-in once none is left.
pub(crate) async fn child_moved(tx: &mut Tx<'_>, parent: JobId, d: ChildEnd) -> Result<(), TxError> {
    let row = tx
        .query_opt(
            "UPDATE jobs SET children_succeeded = children_succeeded + $2, \
             children_partial = children_partial + $3, children_failed = children_failed + $4, \
             children_cancelled = children_cancelled + $5 WHERE id = $1 \
             RETURNING state, wait_for, children_total - children_succeeded - children_failed - children_cancelled",
            &[&parent.0, &d.succeeded, &d.partial, &d.failed, &d.cancelled],
        )
        .await?;
    let Some(row) = row else { return Ok(()) }; // the parent was pruned
    let state = state_of(row.try_get(0)?)?;
    let waiting_for = row.try_get::<_, Option<i16>>(1)?.and_then(|c| WaitingFor::from_code(i64::from(c)));
    if lineage::parent_wakes(state, waiting_for, row.try_get(2)?) {
        let job = update_returning(
            tx,
            &format!(
                "UPDATE jobs SET state = 1, run_at = $2, wait_for = NULL, fan_in = true WHERE id = $1 \
                 RETURNING {JOB_COLS}"
            ),
            &[&parent.0, &tx.now.0],
        )
        .await?;
        now_ready(tx, &job, JobState::Waiting);
    }
    Ok(())
}

/// Bookkeeping for a job that left `waiting` to be scheduled or queued.
fn now_ready(tx: &mut Tx<'_>, job: &Job, from: JobState) {
    tx.moved(&job.queue, Some(from), Some(job.state));
    if job.state == JobState::Queued {
        if let Some(g) = &job.group {
            tx.touch_group(&job.queue, g);
        }
        tx.ready(&job.queue);
    }
    tx.changed(job);
}

/// `dep` ended: each job waiting on it counts it off, starts, or ends without running.
async fn resolve_dependents(tx: &mut Tx<'_>, dep: &Job, work: &mut Vec<Job>) -> Result<(), TxError> {
    let mut dependents: Vec<i64> = tx
        .query("DELETE FROM job_deps WHERE dep_id = $1 RETURNING job_id", &[&dep.id.0])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    dependents.sort_unstable();
    for id in dependents {
        let row = tx
            .query_opt(
                "SELECT state, wait_for, deps_pending, dep_failure, run_at FROM jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = row else { continue };
        let state = state_of(row.try_get(0)?)?;
        let wait_for: Option<i16> = row.try_get(1)?;
        if state != JobState::Waiting || wait_for != Some(WaitingFor::Dependencies.code() as i16) {
            continue; // cancelled meanwhile
        }
        let pending: i64 = row.try_get(2)?;
        let on_failure = OnDependencyFailure::from_code(i64::from(row.try_get::<_, i16>(3)?));
        let run_at = drove_core::Millis(row.try_get(4)?);
        match lineage::dependency_ended(dep.id, dep.state, on_failure, pending) {
            DependentAfter::Wait(n) => {
                tx.execute("UPDATE jobs SET deps_pending = $2 WHERE id = $1", &[&id, &n]).await?;
            }
            DependentAfter::Ready => {
                let state = lineage::ready_state(run_at, tx.now);
                let job = update_returning(
                    tx,
                    &format!(
                        "UPDATE jobs SET state = $2, deps_pending = 0, wait_for = NULL WHERE id = $1 RETURNING {JOB_COLS}"
                    ),
                    &[&id, &(state.code() as i16)],
                )
                .await?;
                now_ready(tx, &job, JobState::Waiting);
            }
            DependentAfter::End { state, message } => {
                work.push(end_unrun(tx, JobId(id), JobState::Waiting, state, Some(&message)).await?);
            }
        }
    }
    Ok(())
}

/// Ends a job that is not running (waiting, scheduled or queued; locked by the caller) without
/// running it: cancelled, or failed with an error of kind `dependency`. The caller handles what
/// its end reaches.
pub(crate) async fn end_unrun(
    tx: &mut Tx<'_>,
    id: JobId,
    from: JobState,
    to: JobState,
    dependency: Option<&str>,
) -> Result<Job, TxError> {
    let job = match dependency {
        Some(message) => {
            update_returning(
                tx,
                &format!(
                    "UPDATE jobs SET state = $2, finished_at = $3, wait_for = NULL, error_kind = $4, \
                     error_message = $5, error_at = $3 WHERE id = $1 RETURNING {JOB_COLS}"
                ),
                &[&id.0, &(to.code() as i16), &tx.now.0, &(ErrorKind::Dependency.code() as i16), &message],
            )
            .await?
        }
        None => {
            update_returning(
                tx,
                &format!(
                    "UPDATE jobs SET state = $2, finished_at = $3, wait_for = NULL WHERE id = $1 RETURNING {JOB_COLS}"
                ),
                &[&id.0, &(to.code() as i16), &tx.now.0],
            )
            .await?
        }
    };
    tx.moved(&job.queue, Some(from), Some(to));
    tx.ended(&job);
    if let Some(g) = &job.group {
        tx.touch_group(&job.queue, g);
    }
    tx.changed(&job);
    Ok(job)
}

/// The running job of `key` ended: the follow-up behind it takes the key and may start (or, if
/// a newer job holds the key meanwhile, waits behind that one).
async fn promote_follow_up(tx: &mut Tx<'_>, queue: &str, key: &str) -> Result<(), TxError> {
    let sql =
        format!("SELECT {JOB_COLS} FROM jobs WHERE queue = $1 AND follow_key = $2 AND state = -1 FOR UPDATE");
    let Some(row) = tx.query_opt(&sql, &[&queue, &key]).await? else {
        return Ok(());
    };
    let next = job_from_row(&row)?;
    if let Some(holder) = find_live(tx, queue, key).await? {
        tx.execute(
            "UPDATE jobs SET links = links | $2 WHERE id = $1",
            &[&holder.id.0, &(Links::FOLLOW_UP as i16)],
        )
        .await?;
        return Ok(());
    }
    let run_at = next.run_at.max(tx.now);
    let state = lineage::ready_state(run_at, tx.now);
    let job = update_returning(
        tx,
        &format!(
            "UPDATE jobs SET key = follow_key, follow_key = NULL, state = $2, wait_for = NULL, run_at = $3 \
             WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&next.id.0, &(state.code() as i16), &run_at.0],
    )
    .await?;
    now_ready(tx, &job, JobState::Waiting);
    Ok(())
}

/// A cancelled parent's unfinished children are cancelled: at once if not running, by request
/// if running (they end when their worker hears of it).
async fn cancel_children(tx: &mut Tx<'_>, parent: JobId, work: &mut Vec<Job>) -> Result<(), TxError> {
    let rows = tx
        .query(
            "SELECT id, state FROM jobs WHERE parent_id = $1 AND state < 3 ORDER BY id FOR UPDATE",
            &[&parent.0],
        )
        .await?;
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let state = state_of(r.try_get(1)?)?;
        if state == JobState::Running {
            let marked = update_returning(
                tx,
                &format!("UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING {JOB_COLS}"),
                &[&id],
            )
            .await?;
            tx.changed(&marked);
        } else {
            work.push(end_unrun(tx, JobId(id), state, JobState::Cancelled, None).await?);
        }
    }
    Ok(())
}
