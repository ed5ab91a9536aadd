//! Submitting: create, or join / reuse / replace by key (docs/API.md "Keys").
//!
//! One live job per (queue, key) is the partial unique index `jobs_key_live`. A keyed entry
//! first looks for the live job; when there is none it inserts with `ON CONFLICT DO NOTHING`,
//! which waits for a concurrent insert of the same key and, if that one committed, inserts
//! nothing: the entry then looks again and joins the job that won. Keyed entries are handled
//! in (queue, key) order so that two batches racing on the same keys wait for each other in
//! one order instead of deadlocking; ids are drawn up front so they still follow the batch.

use drove_core::{Job, JobId, JobState, Millis, OnConflict};
use drove_store::{NewJob, StoreError, Submitted};

use super::{find_live, update_returning};
use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row, state_of};
use crate::tx::Tx;

/// How often a keyed entry looks again after losing an insert race before giving up.
const KEY_RACE_ROUNDS: usize = 5;

/// Unkeyed jobs of the batch, inserted together by one statement.
#[derive(Default)]
struct Rows<'j> {
    id: Vec<i64>,
    queue: Vec<&'j str>,
    kind: Vec<Option<&'j str>>,
    payload: Vec<&'j str>,
    grp: Vec<Option<&'j str>>,
    priority: Vec<i64>,
    state: Vec<i16>,
    max_attempts: Vec<i64>,
    run_at: Vec<i64>,
    timeout_ms: Vec<Option<i64>>,
}

pub(crate) async fn submit(tx: &mut Tx<'_>, jobs: &[NewJob]) -> Result<Vec<Submitted>, TxError> {
    drove_store::validate_submit(jobs, tx.shared.max_payload).map_err(StoreError::Invalid)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    // New queues are created in name order, for the same reason keys are taken in order.
    let mut names: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        tx.queue(name).await?;
    }
    let mut ids: Vec<i64> = tx
        .query("SELECT nextval('job_ids') FROM generate_series(1, $1::int)", &[&(jobs.len() as i32)])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();

    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        let k = |i: usize| jobs[i].key.as_ref().map(|k| (jobs[i].queue.as_str(), k.as_str()));
        k(a).cmp(&k(b))
    });
    let mut out: Vec<Option<Submitted>> = vec![None; jobs.len()];
    let mut rows = Rows::default();
    for i in order {
        let new = &jobs[i];
        out[i] = Some(match &new.key {
            Some(key) => submit_keyed(tx, new, key, ids[i]).await?,
            None => {
                let job = prepare(tx, new, ids[i]).await?;
                rows.add(new, &job);
                created(tx, &job);
                Submitted { job, created: true }
            }
        });
    }
    if !rows.id.is_empty() {
        tx.execute(
            "INSERT INTO jobs (id, queue, kind, payload, grp, priority, state, max_attempts, run_at, \
             created_at, timeout_ms) \
             SELECT id, queue, kind, payload, grp, priority, state, max_attempts, run_at, $11, timeout_ms \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
             $7::smallint[], $8::bigint[], $9::bigint[], $10::bigint[]) \
             AS u(id, queue, kind, payload, grp, priority, state, max_attempts, run_at, timeout_ms)",
            &[
                &rows.id,
                &rows.queue,
                &rows.kind,
                &rows.payload,
                &rows.grp,
                &rows.priority,
                &rows.state,
                &rows.max_attempts,
                &rows.run_at,
                &rows.timeout_ms,
                &tx.now.0,
            ],
        )
        .await?;
    }
    Ok(out.into_iter().map(|s| s.expect("every entry answered")).collect())
}

impl<'j> Rows<'j> {
    fn add(&mut self, new: &'j NewJob, job: &Job) {
        self.id.push(job.id.0);
        self.queue.push(&new.queue);
        self.kind.push(new.kind.as_deref());
        self.payload.push(new.payload.get());
        self.grp.push(new.group.as_deref());
        self.priority.push(new.priority);
        self.state.push(job.state.code() as i16);
        self.max_attempts.push(job.max_attempts);
        self.run_at.push(job.run_at.0);
        self.timeout_ms.push(job.timeout_ms);
    }
}

/// The job a submit creates, with the queue's defaults applied (not yet inserted).
async fn prepare(tx: &mut Tx<'_>, new: &NewJob, id: i64) -> Result<Job, TxError> {
    let queue = tx.queue(&new.queue).await?;
    Ok(new.clone().into_job(JobId(id), &queue.config, tx.now))
}

/// Bookkeeping for a created job.
fn created(tx: &mut Tx<'_>, job: &Job) {
    tx.moved(&job.queue, None, Some(job.state));
    if job.state == JobState::Queued {
        if let Some(g) = &job.group {
            tx.touch_group(&job.queue, g);
        }
        tx.ready(&job.queue);
    }
    tx.changed(job);
}

async fn submit_keyed(tx: &mut Tx<'_>, new: &NewJob, key: &str, id: i64) -> Result<Submitted, TxError> {
    let now = tx.now;
    for _ in 0..KEY_RACE_ROUNDS {
        if let Some(live) = find_live(tx, &new.queue, key).await? {
            match new.on_conflict {
                OnConflict::Join => return Ok(Submitted { job: live, created: false }),
                OnConflict::Reject => {
                    return Err(StoreError::KeyConflict { key: key.to_owned(), job: live.id }.into());
                }
                OnConflict::Replace => match replace(tx, live, new).await? {
                    Some(done) => return Ok(done),
                    // The job started or ended meanwhile: look again.
                    None => continue,
                },
            }
        }
        let queue = tx.queue(&new.queue).await?;
        let reuse = new.reuse_for_ms.unwrap_or_else(|| queue.config.reuse_for_ms());
        if reuse > 0
            && let Some(done) = find_reusable(tx, &new.queue, key, now.minus_ms(reuse)).await?
        {
            return Ok(Submitted { job: done, created: false });
        }
        let job = prepare(tx, new, id).await?;
        let inserted = tx
            .query_opt(
                "INSERT INTO jobs (id, queue, kind, payload, key, grp, priority, state, max_attempts, \
                 run_at, created_at, timeout_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (queue, key) WHERE key IS NOT NULL AND state < 3 AND NOT cancel_requested \
                 DO NOTHING RETURNING id",
                &[
                    &job.id.0,
                    &job.queue,
                    &job.kind,
                    &new.payload.get(),
                    &job.key,
                    &job.group,
                    &job.priority,
                    &(job.state.code() as i16),
                    &job.max_attempts,
                    &job.run_at.0,
                    &now.0,
                    &job.timeout_ms,
                ],
            )
            .await?;
        if inserted.is_some() {
            created(tx, &job);
            return Ok(Submitted { job, created: true });
        }
        // A concurrent submit of this key committed first: join (or reject, or replace) it.
    }
    Err(StoreError::Unavailable(format!("key {key:?} kept changing hands; try again")).into())
}

/// `on_conflict: replace`: a scheduled or queued job takes the new payload, run_at and
/// priority; a running one is joined unchanged. `None`: the job left scheduled/queued between
/// the look-up and the lock.
async fn replace(tx: &mut Tx<'_>, live: Job, new: &NewJob) -> Result<Option<Submitted>, TxError> {
    if !matches!(live.state, JobState::Scheduled | JobState::Queued) {
        return Ok(Some(Submitted { job: live, created: false }));
    }
    let Some(row) = tx
        .query_opt(
            "SELECT state FROM jobs WHERE id = $1 AND state IN (0, 1) AND NOT cancel_requested FOR UPDATE",
            &[&live.id.0],
        )
        .await?
    else {
        return Ok(None);
    };
    let before = state_of(row.try_get(0)?)?;
    let now = tx.now;
    let run_at = new.run_at.unwrap_or(now);
    let state = if run_at <= now { JobState::Queued } else { JobState::Scheduled };
    let job = update_returning(
        tx,
        &format!(
            "UPDATE jobs SET payload = $2, run_at = $3, priority = $4, state = $5, \
             kind = coalesce($6, kind) WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&live.id.0, &new.payload.get(), &run_at.0, &new.priority, &(state.code() as i16), &new.kind],
    )
    .await?;
    if before != state {
        tx.moved(&job.queue, Some(before), Some(state));
    }
    if let Some(g) = &job.group {
        tx.touch_group(&job.queue, g);
    }
    if state == JobState::Queued {
        tx.ready(&job.queue);
    }
    tx.changed(&job);
    Ok(Some(Submitted { job, created: false }))
}

/// The newest job with `key` that succeeded at or after `since`.
async fn find_reusable(tx: &Tx<'_>, queue: &str, key: &str, since: Millis) -> Result<Option<Job>, TxError> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE key = $2 AND queue = $1 AND state = 3 \
         AND finished_at >= $3 ORDER BY id DESC LIMIT 1"
    );
    tx.query_opt(&sql, &[&queue, &key, &since.0]).await?.as_ref().map(job_from_row).transpose()
}
