//! A run's life after the claim: heartbeats, its end (complete, fail, release), and the
//! cancellation and redrive of jobs. Every call on a run is fenced by its lease token, checked
//! with the job's row locked, so a run's end and the reaper never both win.

use std::collections::{HashMap, HashSet};

use drove_core::{Job, JobId, JobState, Millis};
use drove_store::admission::{self, RateState};
use drove_store::transition::{Ending, Hold, RunEnd, RunFacts, end_of_run};
use drove_store::{Finish, Heartbeat, HeartbeatAck, Outcome, StoreError};

use super::lineage::{child_moved, end_unrun, on_ended};
use super::{END_RUN, find_live, load_job_locked, update_returning};
use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row, pg_text};
use crate::tx::Tx;
use drove_store::lineage::ChildEnd;

pub(crate) async fn heartbeat(tx: &mut Tx<'_>, hb: &Heartbeat) -> Result<HeartbeatAck, TxError> {
    hb.validate(tx.shared.max_payload).map_err(StoreError::from)?;
    let progress = hb
        .progress
        .as_ref()
        .map(|p| serde_json::to_string(p).map_err(|e| StoreError::Internal(e.to_string())))
        .transpose()?;
    let row = tx
        .query_opt(
            "UPDATE jobs SET lease_ms = coalesce($4, lease_ms), \
             lease_expires_at = $3 + coalesce($4, lease_ms), \
             reap_at = CASE WHEN deadline IS NULL THEN $3 + coalesce($4, lease_ms) \
                            ELSE least(deadline, $3 + coalesce($4, lease_ms)) END, \
             progress = coalesce($5, progress), checkpoint = coalesce($6, checkpoint) \
             WHERE id = $1 AND state = 2 AND lease = $2 AND (deadline IS NULL OR deadline > $3) \
             RETURNING lease_expires_at, cancel_requested, queue",
            &[
                &hb.id.0,
                &hb.lease.0,
                &tx.now.0,
                &hb.lease_ms,
                &progress,
                &hb.checkpoint.as_ref().map(|c| c.get()),
            ],
        )
        .await?;
    match row {
        Some(r) => {
            let queue: String = r.try_get(2)?;
            tx.touched(hb.id, &queue, JobState::Running);
            Ok(HeartbeatAck { lease_expires_at: Millis(r.try_get(0)?), cancel_requested: r.try_get(1)? })
        }
        None => Err(stale_or_missing(tx, hb.id).await?.into()),
    }
}

async fn stale_or_missing(tx: &Tx<'_>, id: JobId) -> Result<StoreError, TxError> {
    let exists = tx.query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id.0]).await?.is_some();
    Ok(if exists { StoreError::StaleLease } else { StoreError::job_not_found(id) })
}

/// The facts about a job a run's end depends on.
pub(crate) struct RunRow {
    state: i16,
    lease: Option<i64>,
    pub deadline: Option<i64>,
    pub facts: RunFacts,
    pub queue: String,
}

/// The columns [`run_row_from`] reads.
pub(crate) const RUN_COLS: &str = "state, lease, deadline, cancel_requested, attempt, max_attempts, queue, grp, \
    transient_streak, children_total - children_succeeded - children_failed - children_cancelled";

/// Reads [`RUN_COLS`] from `r`, starting at column `at`.
pub(crate) fn run_row_from(r: &tokio_postgres::Row, at: usize) -> Result<RunRow, TxError> {
    Ok(RunRow {
        state: r.try_get(at)?,
        lease: r.try_get(at + 1)?,
        deadline: r.try_get(at + 2)?,
        facts: RunFacts {
            cancel_requested: r.try_get(at + 3)?,
            attempt: r.try_get(at + 4)?,
            max_attempts: r.try_get(at + 5)?,
            grouped: r.try_get::<_, Option<String>>(at + 7)?.is_some(),
            transient_streak: r.try_get(at + 8)?,
            children_pending: r.try_get(at + 9)?,
        },
        queue: r.try_get(at + 6)?,
    })
}

/// Ends runs, each on its own. The jobs' rows are locked by one statement in id order (so two
/// batches ending the same jobs cannot deadlock), every entry is checked before anything is
/// written (so an entry that fails changes nothing), and completions, the common case, are
/// written by one statement. Answers keep the order of the request.
pub(crate) async fn finish(
    tx: &mut Tx<'_>,
    items: &[Finish],
) -> Result<Vec<Result<Job, StoreError>>, TxError> {
    let mut ids: Vec<i64> = items.iter().map(|f| f.id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut runs = HashMap::with_capacity(ids.len());
    for r in tx
        .query(&format!("SELECT id, {RUN_COLS} FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"), &[&ids])
        .await?
    {
        runs.insert(r.try_get::<_, i64>(0)?, run_row_from(&r, 1)?);
    }
    let now = tx.now;
    let max_payload = tx.shared.max_payload;
    let mut out: Vec<Option<Result<Job, StoreError>>> = vec![None; items.len()];
    // Runs ended by an earlier entry of this batch: their lease is spent.
    let mut ended = HashSet::new();
    let mut completes: Vec<usize> = Vec::new();
    for (i, f) in items.iter().enumerate() {
        let checked = f.validate(max_payload).map_err(StoreError::from).and_then(|()| {
            let run = runs.get(&f.id.0).ok_or_else(|| StoreError::job_not_found(f.id))?;
            if ended.contains(&f.id.0)
                || i64::from(run.state) != JobState::Running.code()
                || run.lease != Some(f.lease.0)
                || run.deadline.is_some_and(|d| d <= now.0)
            {
                return Err(StoreError::StaleLease);
            }
            Ok(run)
        });
        let run = match checked {
            Ok(run) => run,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        ended.insert(f.id.0);
        if matches!(f.outcome, Outcome::Complete { .. }) {
            completes.push(i);
        } else {
            let job = end_run(tx, f.id, run, Ending::Worker(&f.outcome)).await?;
            out[i] = Some(Ok(job));
        }
    }
    if !completes.is_empty() {
        let (mut cids, mut results, mut partials) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &completes {
            if let Outcome::Complete { result, partial } = &items[i].outcome {
                cids.push(items[i].id.0);
                results.push(result.as_ref().map(|r| r.get()));
                partials.push(*partial);
            }
        }
        let rows = tx
            .query(
                &format!(
                    "UPDATE jobs SET state = 3, finished_at = $1, result = u.res, partial = u.part, {END_RUN} \
                     FROM unnest($2::bigint[], $3::text[], $4::bool[]) AS u(uid, res, part) \
                     WHERE jobs.id = u.uid RETURNING {JOB_COLS}"
                ),
                &[&now.0, &cids, &results, &partials],
            )
            .await?;
        let mut done: HashMap<i64, Job> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let job = job_from_row(r)?;
            done.insert(job.id.0, job);
        }
        for i in completes {
            let job = done.remove(&items[i].id.0).ok_or_else(|| {
                StoreError::Internal(format!("job {} was locked but not completed", items[i].id))
            })?;
            after_run(tx, &job).await?;
            out[i] = Some(Ok(job));
        }
    }
    let queues: Vec<String> = out.iter().flatten().flatten().map(|j| j.queue.clone()).collect();
    wake_pool_mates(tx, &queues).await?;
    Ok(out.into_iter().map(|r| r.expect("every entry answered")).collect())
}

/// Ends a run the way [`end_of_run`] decides (the worker's outcome, or the reaper's lost lease or
/// timeout): one statement writes it, then the bookkeeping of every run's end.
pub(crate) async fn end_run(
    tx: &mut Tx<'_>,
    id: JobId,
    run: &RunRow,
    ending: Ending<'_>,
) -> Result<Job, TxError> {
    let now = tx.now;
    let queue = tx.queue(&run.queue).await?;
    let end = end_of_run(&run.facts, ending, &queue.config, now, fastrand::f64());
    let job = apply_end(tx, id, &end).await?;
    match end.hold {
        // The rate learns from the throttle first; the hold then lasts what the rate says.
        Some(Hold::Group(until)) => {
            if let Some(g) = &job.group {
                let mut until = until;
                if let Some(rate) = &queue.config.group_rate {
                    let row = tx
                        .query_opt(
                            "SELECT tat, learn_us, learn_at, learn_strikes FROM groups WHERE queue = $1 AND grp = $2",
                            &[&job.queue, g],
                        )
                        .await?;
                    let mut state = match row {
                        Some(r) => RateState {
                            tat: r.try_get(0)?,
                            learned: RateState::learned_from(r.try_get(1)?, r.try_get(2)?, r.try_get(3)?),
                        },
                        None => RateState::default(),
                    };
                    let accepted = accepted_1s(tx, &job.queue, Some(g)).await?;
                    if let Some(l) = admission::cut(rate, &state, now, accepted) {
                        tx.set_group_learned(&job.queue, g, l);
                        state.learned = Some(l);
                    }
                    until = admission::throttle_hold(rate, &state, until, now);
                }
                tx.hold_group(&job.queue, g, until);
            }
        }
        Some(Hold::Queue(until)) => {
            let mut until = until;
            if let Some(rate) = &queue.config.rate {
                let accepted = accepted_1s(tx, &job.queue, None).await?;
                let mut state = queue.rate_state();
                if let Some(l) = admission::cut(rate, &state, now, accepted) {
                    tx.learn_queue(&job.queue, l);
                    state.learned = Some(l);
                }
                until = admission::throttle_hold(rate, &state, until, now);
            }
            tx.hold_queue(&job.queue, until);
        }
        None => {}
    }
    after_run(tx, &job).await?;
    Ok(job)
}

/// Successes of a queue (or one of its groups) over the second before now: what the
/// provider accepted, for a learned rate's cut.
async fn accepted_1s(tx: &Tx<'_>, queue: &str, grp: Option<&str>) -> Result<i64, TxError> {
    let row = tx
        .query_one(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND state >= 3 AND finished_at >= $2 AND state = 3 \
             AND ($3::text IS NULL OR grp = $3)",
            &[&queue, &(tx.now.0 - 1_000), &grp],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Writes a decided run end in one statement, returning the job.
async fn apply_end(tx: &Tx<'_>, id: JobId, end: &RunEnd) -> Result<Job, TxError> {
    let (is_success, result, partial) = match &end.success {
        Some((result, partial)) => (true, result.as_ref().map(|r| r.get()), *partial),
        None => (false, None, false),
    };
    let message = end.error.as_ref().map(|(_, m)| pg_text(m));
    update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = $2, run_at = coalesce($3, run_at), finished_at = $4, free_run = $5, \
             result = CASE WHEN $6 THEN $7 ELSE result END, partial = CASE WHEN $6 THEN $8 ELSE partial END, \
             error_kind = coalesce($9, error_kind), error_message = coalesce($10, error_message), \
             error_at = CASE WHEN $9::smallint IS NULL THEN error_at ELSE $4 END, \
             transient_streak = $11, transient_retries = transient_retries + $12, wait_for = $13, \
             fan_in = fan_in OR $14, {END_RUN} \
             WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[
            &id.0,
            &(end.state.code() as i16),
            &end.run_at.map(|t| t.0),
            &tx.now.0,
            &end.free_run,
            &is_success,
            &result,
            &partial,
            &end.error.as_ref().map(|(k, _)| k.code() as i16),
            &message.as_deref(),
            &end.transient_streak,
            &i64::from(end.transient),
            &end.wait_for.map(|w| w.code() as i16),
            &end.fan_in,
        ],
    )
    .await
}

/// Bookkeeping once a run ended (by its worker or the reaper).
/// A slot freed in a queue that shares a pool may let claimers of any queue of the pool through.
pub(crate) async fn wake_pool_mates(tx: &mut Tx<'_>, queues: &[String]) -> Result<(), TxError> {
    let mut pools: Vec<String> = Vec::new();
    for q in queues {
        if let Some(p) = tx.queue(q).await?.config.pool.clone()
            && !pools.contains(&p)
        {
            pools.push(p);
        }
    }
    for p in pools {
        for q in super::admin::pool_queues(tx, &p).await? {
            tx.ready(&q);
        }
    }
    Ok(())
}

pub(crate) async fn after_run(tx: &mut Tx<'_>, job: &Job) -> Result<(), TxError> {
    tx.moved(&job.queue, Some(JobState::Running), Some(job.state));
    if let Some(g) = &job.group {
        tx.touch_group(&job.queue, g);
    }
    // A freed slot (or a requeued job) may let a waiting claimer through.
    tx.ready(&job.queue);
    tx.changed(job);
    if job.state.is_terminal() {
        tx.ended(job);
        on_ended(tx, job).await?;
    }
    Ok(())
}

pub(crate) async fn cancel(tx: &mut Tx<'_>, id: JobId) -> Result<Job, TxError> {
    let Some(job) = load_job_locked(tx, id).await? else {
        return Err(StoreError::job_not_found(id).into());
    };
    match job.state {
        JobState::Waiting | JobState::Scheduled | JobState::Queued => {
            let done = end_unrun(tx, id, job.state, JobState::Cancelled, None).await?;
            on_ended(tx, &done).await?;
            Ok(done)
        }
        JobState::Running if job.cancel_requested => Ok(job),
        JobState::Running => {
            let marked = update_returning(
                tx,
                &format!("UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING {JOB_COLS}"),
                &[&id.0],
            )
            .await?;
            tx.changed(&marked);
            Ok(marked)
        }
        state => Err(StoreError::WrongState { job: id, state, action: "cancel" }.into()),
    }
}

pub(crate) async fn retry(tx: &mut Tx<'_>, id: JobId) -> Result<Job, TxError> {
    let Some(job) = load_job_locked(tx, id).await? else {
        return Err(StoreError::job_not_found(id).into());
    };
    if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
        return Err(StoreError::WrongState { job: id, state: job.state, action: "retry" }.into());
    }
    if let Some(key) = &job.key
        && let Some(live) = find_live(tx, &job.queue, key).await?
    {
        return Err(StoreError::KeyConflict { key: key.clone(), job: live.id }.into());
    }
    // A submit racing this check makes the update below violate the key index; the runner
    // then runs the whole call again, and the check above answers with the conflict.
    let queued = update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = 1, attempt = 0, free_run = false, run_at = $2, finished_at = NULL, \
             cancel_requested = false, result = NULL, partial = false WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&id.0, &tx.now.0],
    )
    .await?;
    tx.moved(&queued.queue, Some(job.state), Some(JobState::Queued));
    if let Some(parent) = queued.parent {
        // Its end is taken back: the parent counts it pending again.
        child_moved(tx, parent, ChildEnd::of(job.state, job.partial, -1)).await?;
    }
    if let Some(g) = &queued.group {
        tx.touch_group(&queued.queue, g);
    }
    tx.ready(&queued.queue);
    tx.changed(&queued);
    Ok(queued)
}
