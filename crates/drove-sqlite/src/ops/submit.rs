//! Submitting: create, or join / reuse / replace by key (docs/API.md "Keys").

use drove_core::{Job, JobId, JobState, Millis, OnConflict};
use drove_store::{NewJob, StoreError, Submitted};
use rusqlite::{OptionalExtension, params};

use super::{find_live, group::refresh_group, update_returning};
use crate::row::{JOB_COLS, db_err, job_from_row};
use crate::writer::Tx;

/// Submits jobs already validated by the caller (outside the writer thread, which should not
/// spend its time walking payloads).
pub(crate) fn submit(tx: &mut Tx<'_>, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Submitted>, StoreError> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(submit_one(tx, job, now)?);
    }
    Ok(out)
}

fn submit_one(tx: &mut Tx<'_>, new: NewJob, now: Millis) -> Result<Submitted, StoreError> {
    let queue = tx.queue(&new.queue, now)?;
    if let Some(key) = &new.key {
        if let Some(live) = find_live(tx, &new.queue, key)? {
            return match new.on_conflict {
                OnConflict::Join => Ok(Submitted { job: live, created: false }),
                OnConflict::Reject => Err(StoreError::KeyConflict { key: key.clone(), job: live.id }),
                OnConflict::Replace => replace(tx, live, new, now),
            };
        }
        let reuse = new.reuse_for_ms.unwrap_or_else(|| queue.config.reuse_for_ms());
        if reuse > 0
            && let Some(done) = find_reusable(tx, &new.queue, key, now.minus_ms(reuse))?
        {
            return Ok(Submitted { job: done, created: false });
        }
    }

    let job = new.into_job(JobId(tx.alloc_id()), &queue.config, now);
    tx.conn
        .prepare_cached(
            "INSERT INTO jobs (id, queue, kind, payload, key, grp, priority, state, max_attempts, \
             run_at, created_at, timeout_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.id.0,
                job.queue,
                job.kind,
                job.payload.get(),
                job.key,
                job.group,
                job.priority,
                job.state.code(),
                job.max_attempts,
                job.run_at.0,
                now.0,
                job.timeout_ms
            ])
        })
        .map_err(db_err)?;
    let state = job.state;
    tx.moved(&job.queue, None, Some(state));
    if state == JobState::Queued {
        if let Some(g) = &job.group {
            refresh_group(tx, &job.queue, g, now)?;
        }
        tx.ready(&job.queue);
    }
    tx.changed(&job);
    Ok(Submitted { job, created: true })
}

/// `on_conflict: replace`: a scheduled or queued job takes the new payload, run_at and
/// priority; a running one is joined unchanged.
fn replace(tx: &mut Tx<'_>, live: Job, new: NewJob, now: Millis) -> Result<Submitted, StoreError> {
    if !matches!(live.state, JobState::Scheduled | JobState::Queued) {
        return Ok(Submitted { job: live, created: false });
    }
    let run_at = new.run_at.unwrap_or(now);
    let state = if run_at <= now { JobState::Queued } else { JobState::Scheduled };
    let job = update_returning(
        tx,
        sql!(
            "UPDATE jobs SET payload = ?2, run_at = ?3, priority = ?4, state = ?5, \
             kind = coalesce(?6, kind) WHERE id = ?1"
        ),
        params![live.id.0, new.payload.get(), run_at.0, new.priority, state.code(), new.kind],
        live.id.0,
    )?;
    if live.state != state {
        tx.moved(&job.queue, Some(live.state), Some(state));
    }
    if let Some(g) = &job.group {
        refresh_group(tx, &job.queue, g, now)?;
    }
    if state == JobState::Queued {
        tx.ready(&job.queue);
    }
    tx.changed(&job);
    Ok(Submitted { job, created: false })
}

/// The newest job with `key` that succeeded at or after `since`.
fn find_reusable(tx: &Tx<'_>, queue: &str, key: &str, since: Millis) -> Result<Option<Job>, StoreError> {
    tx.conn
        .prepare_cached(sql!(
            "SELECT {JOB_COLS} FROM jobs WHERE key = ?2 AND queue = ?1 AND state = 3 \
             AND finished_at >= ?3 ORDER BY id DESC LIMIT 1"
        ))
        .and_then(|mut s| s.query_row(params![queue, key, since.0], job_from_row).optional())
        .map_err(db_err)
}
