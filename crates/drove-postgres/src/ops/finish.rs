//! A run's life after the claim: heartbeats, its end (complete, fail, release), and the
//! cancellation and redrive of jobs. Every call on a run is fenced by its lease token, checked
//! with the job's row locked, so a run's end and the reaper never both win.

use std::collections::{HashMap, HashSet};

use drove_core::backoff::retry_delay_ms;
use drove_core::{ErrorKind, FailKind, Job, JobId, JobState, Millis};
use drove_store::{Finish, Heartbeat, HeartbeatAck, Outcome, StoreError};

use super::{END_RUN, find_live, load_job_locked, update_returning};
use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row, pg_text};
use crate::tx::Tx;

/// Default delay of a throttled or snoozed run (API.md: `retry_after_ms` default 1 s).
pub(crate) const DEFAULT_RETRY_AFTER_MS: i64 = 1_000;

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
struct RunRow {
    state: i16,
    lease: Option<i64>,
    deadline: Option<i64>,
    cancel_requested: bool,
    attempt: i64,
    max_attempts: i64,
    queue: String,
    grp: Option<String>,
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
        .query(
            "SELECT id, state, lease, deadline, cancel_requested, attempt, max_attempts, queue, grp \
             FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?
    {
        let id: i64 = r.try_get(0)?;
        runs.insert(
            id,
            RunRow {
                state: r.try_get(1)?,
                lease: r.try_get(2)?,
                deadline: r.try_get(3)?,
                cancel_requested: r.try_get(4)?,
                attempt: r.try_get(5)?,
                max_attempts: r.try_get(6)?,
                queue: r.try_get(7)?,
                grp: r.try_get(8)?,
            },
        );
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
            let job = end_other(tx, f, run).await?;
            after_run(tx, &job);
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
            after_run(tx, &job);
            out[i] = Some(Ok(job));
        }
    }
    let queues: Vec<String> = out.iter().flatten().flatten().map(|j| j.queue.clone()).collect();
    wake_pool_mates(tx, &queues).await?;
    Ok(out.into_iter().map(|r| r.expect("every entry answered")).collect())
}

/// Ends one run that did not complete (failed or released); its checks have passed.
async fn end_other(tx: &mut Tx<'_>, f: &Finish, run: &RunRow) -> Result<Job, TxError> {
    let now = tx.now;
    match &f.outcome {
        Outcome::Complete { .. } => {
            Err(StoreError::Internal("completions are written together".into()).into())
        }
        Outcome::Release if run.cancel_requested => end_cancelled(tx, f.id, None).await,
        Outcome::Release => {
            update_returning(
                tx,
                &format!(
                    "UPDATE jobs SET state = 1, run_at = $2, finished_at = $2, free_run = true, {END_RUN} \
                     WHERE id = $1 RETURNING {JOB_COLS}"
                ),
                &[&f.id.0, &now.0],
            )
            .await
        }
        Outcome::Fail { kind, message, retry_after_ms } => {
            let error_kind = match kind {
                FailKind::Retryable | FailKind::Snooze => ErrorKind::Retryable,
                FailKind::Permanent => ErrorKind::Permanent,
                FailKind::Throttled => ErrorKind::Throttled,
            };
            let message = pg_text(message);
            if run.cancel_requested {
                return end_cancelled(tx, f.id, Some((error_kind, &message))).await;
            }
            match kind {
                FailKind::Permanent => end_failed(tx, f.id, error_kind, &message).await,
                FailKind::Retryable => {
                    retry_or_fail(
                        tx,
                        f.id,
                        &run.queue,
                        (run.attempt, run.max_attempts),
                        (error_kind, &message),
                    )
                    .await
                }
                FailKind::Throttled => {
                    let delay = retry_after_ms.unwrap_or(DEFAULT_RETRY_AFTER_MS);
                    hold_scope(tx, run, now.plus_ms(delay)).await?;
                    requeue_free(tx, f.id, delay, Some((ErrorKind::Throttled, &message))).await
                }
                FailKind::Snooze => {
                    let delay = retry_after_ms.unwrap_or(DEFAULT_RETRY_AFTER_MS);
                    requeue_free(tx, f.id, delay, None).await
                }
            }
        }
    }
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

pub(crate) fn after_run(tx: &mut Tx<'_>, job: &Job) {
    tx.moved(&job.queue, Some(JobState::Running), Some(job.state));
    if let Some(g) = &job.group {
        tx.touch_group(&job.queue, g);
    }
    // A freed slot (or a requeued job) may let a waiting claimer through.
    tx.ready(&job.queue);
    tx.changed(job);
}

/// Throttled: holds the group (under `group_rate`) or the queue until the retry time.
async fn hold_scope(tx: &mut Tx<'_>, run: &RunRow, until: Millis) -> Result<(), TxError> {
    let q = tx.queue(&run.queue).await?;
    match (q.config.group_rate, &run.grp) {
        (Some(_), Some(g)) => tx.hold_group(&run.queue, g, until),
        _ => tx.hold_queue(&run.queue, until),
    }
    Ok(())
}

/// A run ended and the job goes back to wait `delay_ms` without using an attempt.
async fn requeue_free(
    tx: &Tx<'_>,
    id: JobId,
    delay_ms: i64,
    error: Option<(ErrorKind, &str)>,
) -> Result<Job, TxError> {
    let now = tx.now;
    let state = if delay_ms > 0 { JobState::Scheduled } else { JobState::Queued };
    update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = $3, run_at = $4, finished_at = $2, free_run = true, \
             error_kind = coalesce($5, error_kind), error_message = coalesce($6, error_message), \
             error_at = CASE WHEN $5::smallint IS NULL THEN error_at ELSE $2 END, {END_RUN} \
             WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[
            &id.0,
            &now.0,
            &(state.code() as i16),
            &now.plus_ms(delay_ms).0,
            &error.map(|e| e.0.code() as i16),
            &error.map(|e| e.1),
        ],
    )
    .await
}

/// A run that used an attempt failed: back off and retry while attempts remain, else fail.
pub(crate) async fn retry_or_fail(
    tx: &mut Tx<'_>,
    id: JobId,
    queue: &str,
    (attempt, max_attempts): (i64, i64),
    (kind, message): (ErrorKind, &str),
) -> Result<Job, TxError> {
    if attempt >= max_attempts {
        return end_failed(tx, id, kind, message).await;
    }
    let now = tx.now;
    let backoff = tx.queue(queue).await?.config.backoff();
    let delay = retry_delay_ms(backoff, attempt, fastrand::f64());
    let state = if delay > 0 { JobState::Scheduled } else { JobState::Queued };
    update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = $3, run_at = $4, finished_at = $2, error_kind = $5, \
             error_message = $6, error_at = $2, {END_RUN} WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&id.0, &now.0, &(state.code() as i16), &now.plus_ms(delay).0, &(kind.code() as i16), &message],
    )
    .await
}

pub(crate) async fn end_failed(
    tx: &Tx<'_>,
    id: JobId,
    kind: ErrorKind,
    message: &str,
) -> Result<Job, TxError> {
    update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = 4, finished_at = $2, error_kind = $3, error_message = $4, \
             error_at = $2, {END_RUN} WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&id.0, &tx.now.0, &(kind.code() as i16), &message],
    )
    .await
}

/// A cancel-requested run ended without completing: the job is cancelled.
pub(crate) async fn end_cancelled(
    tx: &Tx<'_>,
    id: JobId,
    error: Option<(ErrorKind, &str)>,
) -> Result<Job, TxError> {
    update_returning(
        tx,
        &format!(
            "UPDATE jobs SET state = 5, finished_at = $2, \
             error_kind = coalesce($3, error_kind), error_message = coalesce($4, error_message), \
             error_at = CASE WHEN $3::smallint IS NULL THEN error_at ELSE $2 END, {END_RUN} \
             WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&id.0, &tx.now.0, &error.map(|e| e.0.code() as i16), &error.map(|e| e.1)],
    )
    .await
}

pub(crate) async fn cancel(tx: &mut Tx<'_>, id: JobId) -> Result<Job, TxError> {
    let Some(job) = load_job_locked(tx, id).await? else {
        return Err(StoreError::job_not_found(id).into());
    };
    match job.state {
        JobState::Scheduled | JobState::Queued => {
            let done = update_returning(
                tx,
                &format!("UPDATE jobs SET state = 5, finished_at = $2 WHERE id = $1 RETURNING {JOB_COLS}"),
                &[&id.0, &tx.now.0],
            )
            .await?;
            tx.moved(&done.queue, Some(job.state), Some(JobState::Cancelled));
            if let Some(g) = &done.group {
                tx.touch_group(&done.queue, g);
            }
            tx.changed(&done);
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
    if let Some(g) = &queued.group {
        tx.touch_group(&queued.queue, g);
    }
    tx.ready(&queued.queue);
    tx.changed(&queued);
    Ok(queued)
}
