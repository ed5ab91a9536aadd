//! Submitting: create, or join / reuse / replace / follow up by key (docs/API.md "Keys"), with
//! a parent and dependencies (drove_store::lineage decides; this applies it).

use drove_core::ValidationError;
use drove_core::{Job, JobId, JobState, Links, Millis, WaitingFor};
use drove_store::lineage::{self, KeyAction, KeyWindows};
use drove_store::{MAX_CHILDREN, MAX_DEPTH, NewJob, StoreError, Submitted};
use rusqlite::{OptionalExtension, params};

use super::{find_live, group::refresh_group, lineage::on_ended, update_returning};
use crate::row::{JOB_COLS, db_err, job_from_row};
use crate::writer::Tx;

/// Submits jobs already validated by the caller (outside the writer thread, which should not
/// spend its time walking payloads).
pub(crate) fn submit(tx: &mut Tx<'_>, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Submitted>, StoreError> {
    let many = jobs.len() > 1;
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        out.push(submit_one(tx, job, now).map_err(|e| match e {
            StoreError::Invalid(v) if many => StoreError::Invalid(v.within(&format!("jobs[{i}]"))),
            e => e,
        })?);
    }
    Ok(out)
}

pub(crate) fn submit_one(tx: &mut Tx<'_>, new: NewJob, now: Millis) -> Result<Submitted, StoreError> {
    let queue = tx.queue(&new.queue, now)?;
    let Some(key) = new.key.clone() else {
        return create(tx, new, now).map(Submitted::created);
    };
    let live = find_live(tx, &new.queue, &key)?;
    let windows = KeyWindows {
        reuse_ms: new.reuse_for_ms.unwrap_or_else(|| queue.config.reuse_for_ms()),
        stale_ms: new.stale_for_ms.unwrap_or(0),
    };
    let recent = match windows.since(now) {
        Some(since) => find_recent_success(tx, &new.queue, &key, since)?,
        None => None,
    };
    match lineage::key_action(&new, live, recent, windows, now) {
        KeyAction::Join(live) => Ok(Submitted::existing(live)),
        KeyAction::Reject(live) => Err(StoreError::KeyConflict { key, job: live.id }),
        KeyAction::Replace(live) => replace(tx, live, new, now),
        KeyAction::FollowUp { holder } => follow_up(tx, holder, new, &key, now),
        KeyAction::Reuse(done) => Ok(Submitted::existing(done)),
        KeyAction::Stale { done, live } => {
            let refresh = match live {
                Some(live) => live,
                None => create(tx, new, now)?.id,
            };
            Ok(Submitted { job: done, created: false, refresh: Some(refresh) })
        }
        KeyAction::Create => create(tx, new, now).map(Submitted::created),
    }
}

/// Creates a job: under its parent, waiting for its dependencies, or ready.
fn create(tx: &mut Tx<'_>, new: NewJob, now: Millis) -> Result<Job, StoreError> {
    let queue = tx.queue(&new.queue, now)?;
    let depth = match new.parent {
        Some(p) => adopt(tx, p, now)?,
        None => 0,
    };
    let deps = dependencies(tx, &new)?;
    let mut job = new.into_job(JobId(tx.alloc_id()), &queue.config, now);
    let pending = lineage::start_after(&mut job, &deps, now);
    insert(tx, &job, depth, pending, None)?;
    for (dep, state) in &deps {
        if pending > 0 && !state.is_terminal() {
            tx.conn
                .prepare_cached("INSERT OR IGNORE INTO job_deps (dep_id, job_id) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![dep.0, job.id.0]))
                .map_err(db_err)?;
            tx.conn
                .prepare_cached("UPDATE jobs SET links = links | ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![dep.0, Links::DEPENDENTS]))
                .map_err(db_err)?;
        }
    }
    // Read back what the row holds (the error history a terminal start records, the key).
    let job =
        super::load_job(tx, job.id)?.ok_or_else(|| StoreError::Internal("submitted job vanished".into()))?;
    created(tx, &job, now)?;
    Ok(job)
}

/// A new child of `parent`: counted by it (locked first, so its end and this count are in one
/// order); returns the child's depth.
fn adopt(tx: &mut Tx<'_>, parent: JobId, _now: Millis) -> Result<i64, StoreError> {
    let row: Option<(i64, i64, i64)> = tx
        .conn
        .prepare_cached("SELECT state, depth, children_total FROM jobs WHERE id = ?1")
        .and_then(|mut s| s.query_row([parent.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(db_err)?;
    let Some((state, depth, total)) = row else {
        return Err(ValidationError::new("parent", format!("no job {parent}")).into());
    };
    let state = drove_store::row::state_from_code(state)?;
    if state.is_terminal() {
        return Err(StoreError::WrongState { job: parent, state, action: "add children to" });
    }
    if depth + 1 > MAX_DEPTH {
        return Err(ValidationError::new("parent", format!("children nest at most {MAX_DEPTH} deep")).into());
    }
    if total >= MAX_CHILDREN {
        return Err(
            ValidationError::new("parent", format!("a job has at most {MAX_CHILDREN} children")).into()
        );
    }
    tx.conn
        .prepare_cached("UPDATE jobs SET children_total = children_total + 1 WHERE id = ?1")
        .and_then(|mut s| s.execute([parent.0]))
        .map_err(db_err)?;
    Ok(depth + 1)
}

/// The jobs `new` depends on, with their states (each must exist).
fn dependencies(tx: &Tx<'_>, new: &NewJob) -> Result<Vec<(JobId, JobState)>, StoreError> {
    let mut deps = Vec::with_capacity(new.depends_on.len());
    for (i, id) in new.depends_on.iter().enumerate() {
        if deps.iter().any(|(d, _)| d == id) {
            continue;
        }
        let state: Option<i64> = tx
            .conn
            .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.0], |r| r.get(0)).optional())
            .map_err(db_err)?;
        let Some(state) = state else {
            return Err(ValidationError::new(format!("depends_on[{i}]"), format!("no job {id}")).into());
        };
        deps.push((*id, drove_store::row::state_from_code(state)?));
    }
    Ok(deps)
}

fn insert(
    tx: &mut Tx<'_>,
    job: &Job,
    depth: i64,
    deps_pending: i64,
    follow_key: Option<&str>,
) -> Result<(), StoreError> {
    let deps = (!job.depends_on.is_empty()).then(|| {
        let ids: Vec<i64> = job.depends_on.iter().map(|d| d.0).collect();
        super::id_list(&ids)
    });
    let (error_kind, error_message, error_at) = match &job.error {
        Some(e) => (Some(e.kind.code()), Some(e.message.as_str()), Some(e.at.0)),
        None => (None, None, None),
    };
    tx.conn
        .prepare_cached(
            "INSERT INTO jobs (id, queue, kind, payload, key, grp, priority, state, max_attempts, \
             run_at, created_at, timeout_ms, parent_id, depth, deps, deps_pending, dep_failure, wait_for, \
             follow_key, finished_at, error_kind, error_message, error_at, traceparent, tracestate) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
             ?20, ?21, ?22, ?23, ?24, ?25)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.id.0,
                job.queue,
                job.kind,
                job.payload.get(),
                if follow_key.is_some() { None } else { job.key.as_deref() },
                job.group,
                job.priority,
                job.state.code(),
                job.max_attempts,
                job.run_at.0,
                job.created_at.0,
                job.timeout_ms,
                job.parent.map(|p| p.0),
                depth,
                deps,
                deps_pending,
                job.on_dependency_failure.code(),
                job.waiting_for.map(|w| w.code()),
                follow_key,
                job.finished_at.map(|t| t.0),
                error_kind,
                error_message,
                error_at,
                job.trace.as_ref().map(|t| t.traceparent.as_str()),
                job.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
            ])
        })
        .map_err(db_err)?;
    Ok(())
}

/// Bookkeeping for a created job.
fn created(tx: &mut Tx<'_>, job: &Job, now: Millis) -> Result<(), StoreError> {
    tx.moved(&job.queue, None, Some(job.state));
    if job.state == JobState::Queued {
        if let Some(g) = &job.group {
            refresh_group(tx, &job.queue, g, now)?;
        }
        tx.ready(&job.queue);
    }
    tx.changed(job);
    if job.state.is_terminal() {
        // Born ended (a dependency had failed): counted, and its parent told.
        tx.ended(job);
        on_ended(tx, job, now)?;
    }
    Ok(())
}

/// `on_conflict: replace` (and a follow-up of a job not yet started): a scheduled or queued job
/// takes the new payload, run_at and priority; any other is joined unchanged.
fn replace(tx: &mut Tx<'_>, live: Job, new: NewJob, now: Millis) -> Result<Submitted, StoreError> {
    if !matches!(live.state, JobState::Scheduled | JobState::Queued) {
        return Ok(Submitted::existing(live));
    }
    let run_at = new.run_at.unwrap_or(now);
    let state = lineage::ready_state(run_at, now);
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
    Ok(Submitted::existing(job))
}

/// `on_conflict: follow_up` while the key's job runs: the one follow-up behind it takes the
/// newest payload, or is created.
fn follow_up(
    tx: &mut Tx<'_>,
    holder: Job,
    new: NewJob,
    key: &str,
    now: Millis,
) -> Result<Submitted, StoreError> {
    if let Some(next) = find_follow_up(tx, &new.queue, key)? {
        let job = update_returning(
            tx,
            sql!("UPDATE jobs SET payload = ?2, priority = ?3, kind = coalesce(?4, kind) WHERE id = ?1"),
            params![next.id.0, new.payload.get(), new.priority, new.kind],
            next.id.0,
        )?;
        tx.changed(&job);
        return Ok(Submitted::existing(job));
    }
    let queue = tx.queue(&new.queue, now)?;
    let depth = match new.parent {
        Some(p) => adopt(tx, p, now)?,
        None => 0,
    };
    let mut job = new.into_job(JobId(tx.alloc_id()), &queue.config, now);
    job.state = JobState::Waiting;
    job.waiting_for = Some(WaitingFor::Key);
    insert(tx, &job, depth, 0, Some(key))?;
    tx.conn
        .prepare_cached("UPDATE jobs SET links = links | ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![holder.id.0, Links::FOLLOW_UP]))
        .map_err(db_err)?;
    let job =
        super::load_job(tx, job.id)?.ok_or_else(|| StoreError::Internal("follow-up vanished".into()))?;
    created(tx, &job, now)?;
    Ok(Submitted::created(job))
}

/// The follow-up waiting behind `key`'s running job (at most one, by index).
pub(crate) fn find_follow_up(tx: &Tx<'_>, queue: &str, key: &str) -> Result<Option<Job>, StoreError> {
    tx.conn
        .prepare_cached(sql!(
            "SELECT {JOB_COLS} FROM jobs WHERE queue = ?1 AND follow_key = ?2 AND state = -1"
        ))
        .and_then(|mut s| s.query_row(params![queue, key], job_from_row).optional())
        .map_err(db_err)
}

/// The newest job with `key` that succeeded at or after `since`.
fn find_recent_success(
    tx: &Tx<'_>,
    queue: &str,
    key: &str,
    since: Millis,
) -> Result<Option<Job>, StoreError> {
    tx.conn
        .prepare_cached(sql!(
            "SELECT {JOB_COLS} FROM jobs WHERE key = ?2 AND queue = ?1 AND state = 3 \
             AND finished_at >= ?3 ORDER BY id DESC LIMIT 1"
        ))
        .and_then(|mut s| s.query_row(params![queue, key, since.0], job_from_row).optional())
        .map_err(db_err)
}
