//! A run's life after the claim: heartbeats, its end (complete, fail, release), and the
//! cancellation and redrive of jobs. Every call on a run is fenced by its lease token.

use drove_core::{Job, JobId, JobState, Millis};
use drove_store::admission::{self, RateState};
use drove_store::transition::{Ending, Hold, RunEnd, RunFacts, end_of_run};
use drove_store::{Finish, Heartbeat, HeartbeatAck, Outcome, StoreError};
use rusqlite::{OptionalExtension, params};

use super::group::{hold_group, refresh_group};
use super::lineage::{child_moved, end_unrun, on_ended};
use super::{END_RUN, find_live, load_job, update_returning};
use crate::row::db_err;
use crate::writer::Tx;
use drove_store::lineage::ChildEnd;

/// Extends a run's lease (`hb` validated by the caller).
pub(crate) fn heartbeat(tx: &mut Tx<'_>, hb: Heartbeat, now: Millis) -> Result<HeartbeatAck, StoreError> {
    let progress = hb
        .progress
        .as_ref()
        .map(|p| serde_json::to_string(p).map_err(|e| StoreError::Internal(e.to_string())))
        .transpose()?;
    let changed = tx
        .conn
        .prepare_cached(
            "UPDATE jobs SET lease_ms = coalesce(?4, lease_ms), \
             lease_expires_at = ?3 + coalesce(?4, lease_ms), \
             reap_at = CASE WHEN deadline IS NULL THEN ?3 + coalesce(?4, lease_ms) \
                            ELSE min(deadline, ?3 + coalesce(?4, lease_ms)) END, \
             progress = coalesce(?5, progress), checkpoint = coalesce(?6, checkpoint) \
             WHERE id = ?1 AND state = 2 AND lease = ?2 AND (deadline IS NULL OR deadline > ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                hb.id.0,
                hb.lease.0,
                now.0,
                hb.lease_ms,
                progress,
                hb.checkpoint.as_ref().map(|c| c.get())
            ])
        })
        .map_err(db_err)?;
    let row: Option<(i64, i64, String)> = if changed == 1 {
        tx.conn
            .prepare_cached("SELECT lease_expires_at, cancel_requested, queue FROM jobs WHERE id = ?1")
            .and_then(|mut s| s.query_row([hb.id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
            .map_err(db_err)?
    } else {
        None
    };
    match row {
        Some((expires, cancel, queue)) => {
            tx.changed_light(hb.id, &queue, JobState::Running);
            Ok(HeartbeatAck { lease_expires_at: Millis(expires), cancel_requested: cancel != 0 })
        }
        None => Err(stale_or_missing(tx, hb.id)?),
    }
}

fn stale_or_missing(tx: &Tx<'_>, id: JobId) -> Result<StoreError, StoreError> {
    let exists = tx
        .conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut s| s.exists([id.0]))
        .map_err(db_err)?;
    Ok(if exists { StoreError::StaleLease } else { StoreError::job_not_found(id) })
}

/// The facts about a job a run's end depends on.
pub(crate) struct RunRow {
    state: i64,
    lease: Option<i64>,
    deadline: Option<i64>,
    pub facts: RunFacts,
    pub queue: String,
}

/// The columns [`run_row_from`] reads.
pub(crate) const RUN_COLS: &str = "state, lease, deadline, cancel_requested, attempt, max_attempts, queue, grp, \
    transient_streak, children_total - children_succeeded - children_failed - children_cancelled";

/// Reads [`RUN_COLS`] from `r`, starting at column `at`.
pub(crate) fn run_row_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        state: r.get(at)?,
        lease: r.get(at + 1)?,
        deadline: r.get(at + 2)?,
        facts: RunFacts {
            cancel_requested: r.get::<_, i64>(at + 3)? != 0,
            attempt: r.get(at + 4)?,
            max_attempts: r.get(at + 5)?,
            grouped: r.get::<_, Option<String>>(at + 7)?.is_some(),
            transient_streak: r.get(at + 8)?,
            children_pending: r.get(at + 9)?,
        },
        queue: r.get(at + 6)?,
    })
}

impl RunRow {
    pub fn deadline(&self) -> Option<i64> {
        self.deadline
    }
}

fn run_row(tx: &Tx<'_>, id: JobId) -> Result<Option<RunRow>, StoreError> {
    tx.conn
        .prepare_cached(sql!("SELECT {RUN_COLS} FROM jobs WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.0], |r| run_row_from(r, 0)).optional())
        .map_err(db_err)
}

/// Ends many runs. Completions (the common case) are done with one statement for all of them
/// and one read; other outcomes one by one. Each entry fails alone on its own checks (an entry
/// the caller's validation refused, stale lease, unknown job); a database error fails the
/// whole call.
pub(crate) fn finish_many(
    tx: &mut Tx<'_>,
    items: Vec<Result<Finish, StoreError>>,
    now: Millis,
) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
    let mut out: Vec<Option<Result<Job, StoreError>>> = (0..items.len()).map(|_| None).collect();
    let mut bulk: Vec<(usize, i64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut list = String::from("[");
    let mut valid = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(f) => valid.push((i, f)),
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    for (i, f) in &valid {
        let i = *i;
        if let Outcome::Complete { result, partial } = &f.outcome
            && seen.insert(f.id)
        {
            if !bulk.is_empty() {
                list.push(',');
            }
            let (has, text) = match result {
                Some(r) => (1, r.get()),
                None => (0, "null"),
            };
            use std::fmt::Write;
            let _ = write!(list, "[{},{},{},{},{}]", f.id.0, f.lease.0, text, i32::from(*partial), has);
            bulk.push((i, f.id.0));
        }
    }
    list.push(']');
    if !bulk.is_empty() {
        let done: std::collections::HashSet<i64> = tx
            .conn
            .prepare_cached(sql!(
                "UPDATE jobs SET state = 3, finished_at = ?1, \
                 result = CASE WHEN j.has = 1 THEN j.result END, partial = j.partial, {END_RUN} \
                 FROM (SELECT value ->> 0 AS id, value ->> 1 AS lease, value -> 2 AS result, \
                       value ->> 3 AS partial, value ->> 4 AS has FROM json_each(?2)) AS j \
                 WHERE jobs.id = j.id AND jobs.state = 2 AND jobs.lease = j.lease \
                   AND (jobs.deadline IS NULL OR jobs.deadline > ?1) \
                 RETURNING jobs.id"
            ))
            .and_then(|mut s| s.query_map(params![now.0, list], |r| r.get(0))?.collect())
            .map_err(db_err)?;
        let done_ids: Vec<i64> = bulk.iter().map(|(_, id)| *id).filter(|id| done.contains(id)).collect();
        let mut jobs: std::collections::HashMap<i64, Job> =
            super::load_jobs(tx, &done_ids)?.into_iter().map(|j| (j.id.0, j)).collect();
        for (i, id) in &bulk {
            out[*i] = Some(match jobs.remove(id) {
                Some(job) => {
                    after_run(tx, &job, now)?;
                    Ok(job)
                }
                None => Err(stale_or_missing(tx, JobId(*id))?),
            });
        }
    }
    let mut rest: std::collections::HashMap<usize, Finish> = valid.into_iter().collect();
    let mut result = Vec::with_capacity(out.len());
    for (i, slot) in out.into_iter().enumerate() {
        result.push(match slot {
            Some(r) => r,
            None => {
                let f =
                    rest.remove(&i).ok_or_else(|| StoreError::Internal(format!("finish entry {i} lost")))?;
                match finish_one(tx, f, now) {
                    Ok(job) => Ok(job),
                    Err(e @ (StoreError::StaleLease | StoreError::NotFound(_) | StoreError::Invalid(_))) => {
                        Err(e)
                    }
                    Err(e) => return Err(e),
                }
            }
        });
    }
    Ok(result)
}

/// Ends one run. The lease must be the job's current one and the job within its deadline.
pub(crate) fn finish_one(tx: &mut Tx<'_>, f: Finish, now: Millis) -> Result<Job, StoreError> {
    let Some(run) = run_row(tx, f.id)? else {
        return Err(StoreError::job_not_found(f.id));
    };
    if run.state != JobState::Running.code()
        || run.lease != Some(f.lease.0)
        || run.deadline.is_some_and(|d| d <= now.0)
    {
        return Err(StoreError::StaleLease);
    }
    end_run(tx, f.id, &run, Ending::Worker(&f.outcome), now)
}

/// Ends a run the way [`end_of_run`] decides (the worker's outcome, or the reaper's lost lease or
/// timeout), and does the bookkeeping of every run's end.
pub(crate) fn end_run(
    tx: &mut Tx<'_>,
    id: JobId,
    run: &RunRow,
    ending: Ending<'_>,
    now: Millis,
) -> Result<Job, StoreError> {
    let queue = tx.queue(&run.queue, now)?;
    let end = end_of_run(&run.facts, ending, &queue.config, now, fastrand::f64());
    let job = apply_end(tx, id, &end, now)?;
    match end.hold {
        // The rate learns from the throttle first; the hold then lasts what the rate says.
        Some(Hold::Group(until)) => {
            if let Some(g) = &job.group {
                let until = match &queue.config.group_rate {
                    Some(rate) => admission::throttle_hold(
                        rate,
                        &learn_group(tx, &job.queue, g, rate, now)?,
                        until,
                        now,
                    ),
                    None => until,
                };
                hold_group(tx, &job.queue, g, until)?;
            }
        }
        Some(Hold::Queue(until)) => {
            let until = match &queue.config.rate {
                Some(rate) => {
                    admission::throttle_hold(rate, &learn_queue(tx, &job.queue, rate, now)?, until, now)
                }
                None => until,
            };
            hold_queue(tx, &job.queue, until, now)?;
        }
        None => {}
    }
    after_run(tx, &job, now)?;
    Ok(job)
}

/// Successes of a queue (or one of its groups) over the second before `now`: what the
/// provider accepted, for a learned rate's cut.
fn accepted_1s(tx: &Tx<'_>, queue: &str, grp: Option<&str>, now: Millis) -> Result<i64, StoreError> {
    tx.conn
        .prepare_cached(
            "SELECT count(*) FROM jobs INDEXED BY jobs_finished WHERE queue = ?1 AND state >= 3 \
             AND finished_at >= ?2 AND state = 3 AND (?3 IS NULL OR grp = ?3)",
        )
        .and_then(|mut s| s.query_row(params![queue, now.0 - 1_000, grp], |r| r.get(0)))
        .map_err(db_err)
}

/// A throttled outcome under the queue's `rate`: the rate in force is cut (drove_core::learned).
/// Returns the queue's rate state after it.
fn learn_queue(
    tx: &mut Tx<'_>,
    queue: &str,
    rate: &drove_core::RateLimit,
    now: Millis,
) -> Result<RateState, StoreError> {
    let q = tx.queue(queue, now)?;
    let Some(learned) = admission::cut(rate, &q.rate_state(), now, accepted_1s(tx, queue, None, now)?) else {
        return Ok(q.rate_state());
    };
    tx.conn
        .prepare_cached("UPDATE queues SET learn_us = ?2, learn_at = ?3, learn_strikes = ?4 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![queue, learned.interval_us, learned.at.0, learned.strikes]))
        .map_err(db_err)?;
    let mut row = (*q).clone();
    row.learned = Some(learned);
    let state = row.rate_state();
    tx.cache_queue(queue, row);
    Ok(state)
}

/// A throttled outcome under the queue's `group_rate`: the group's rate in force is cut.
/// Returns the group's rate state after it.
fn learn_group(
    tx: &mut Tx<'_>,
    queue: &str,
    grp: &str,
    rate: &drove_core::RateLimit,
    now: Millis,
) -> Result<RateState, StoreError> {
    let state: Option<RateState> = tx
        .conn
        .prepare_cached(
            "SELECT tat, learn_us, learn_at, learn_strikes FROM groups WHERE queue = ?1 AND grp = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![queue, grp], |r| {
                Ok(RateState {
                    tat: r.get(0)?,
                    learned: RateState::learned_from(r.get(1)?, r.get(2)?, r.get(3)?),
                })
            })
            .optional()
        })
        .map_err(db_err)?;
    let Some(state) = state else { return Ok(RateState::default()) };
    let Some(learned) = admission::cut(rate, &state, now, accepted_1s(tx, queue, Some(grp), now)?) else {
        return Ok(state);
    };
    tx.conn
        .prepare_cached(
            "UPDATE groups SET learn_us = ?3, learn_at = ?4, learn_strikes = ?5 WHERE queue = ?1 AND grp = ?2",
        )
        .and_then(|mut s| s.execute(params![queue, grp, learned.interval_us, learned.at.0, learned.strikes]))
        .map_err(db_err)?;
    Ok(RateState { learned: Some(learned), ..state })
}

/// Writes a decided run end in one statement and reads the job back.
fn apply_end(tx: &Tx<'_>, id: JobId, end: &RunEnd, now: Millis) -> Result<Job, StoreError> {
    let (is_success, result, partial) = match &end.success {
        Some((result, partial)) => (true, result.as_ref().map(|r| r.get()), *partial),
        None => (false, None, false),
    };
    let (error_kind, error_message) = match &end.error {
        Some((k, m)) => (Some(k.code()), Some(m.as_str())),
        None => (None, None),
    };
    update_returning(
        tx,
        sql!(
            "UPDATE jobs SET state = ?2, run_at = coalesce(?3, run_at), finished_at = ?4, free_run = ?5, \
             result = CASE WHEN ?6 THEN ?7 ELSE result END, partial = CASE WHEN ?6 THEN ?8 ELSE partial END, \
             error_kind = coalesce(?9, error_kind), error_message = coalesce(?10, error_message), \
             error_at = CASE WHEN ?9 IS NULL THEN error_at ELSE ?4 END, \
             transient_streak = ?11, transient_retries = transient_retries + ?12, wait_for = ?13, \
             fan_in = fan_in | ?14, {END_RUN} \
             WHERE id = ?1"
        ),
        params![
            id.0,
            end.state.code(),
            end.run_at.map(|t| t.0),
            now.0,
            end.free_run,
            is_success,
            result,
            partial,
            error_kind,
            error_message,
            end.transient_streak,
            i64::from(end.transient),
            end.wait_for.map(|w| w.code()),
            i64::from(end.fan_in),
        ],
        id.0,
    )
}

/// Bookkeeping once a run ended (by its worker or the reaper).
pub(crate) fn after_run(tx: &mut Tx<'_>, job: &Job, now: Millis) -> Result<(), StoreError> {
    tx.moved(&job.queue, Some(JobState::Running), Some(job.state));
    if job.state.is_terminal() {
        tx.ended(job);
        on_ended(tx, job, now)?;
    }
    if let Some(g) = &job.group {
        refresh_group(tx, &job.queue, g, now)?;
    }
    // A freed slot (or a requeued job) may let a waiting claimer through: of this queue, or,
    // when it shares a pool, of any queue of the pool.
    tx.ready(&job.queue);
    if let Some(pool) = tx.queue(&job.queue, now)?.config.pool.clone() {
        for q in super::admin::pool_queues(tx, &pool)? {
            tx.ready(&q);
        }
    }
    tx.changed(job);
    Ok(())
}

/// Holds the queue until `until` (a throttled outcome under its `rate`).
fn hold_queue(tx: &mut Tx<'_>, queue: &str, until: Millis, now: Millis) -> Result<(), StoreError> {
    let q = tx.queue(queue, now)?;
    let held = q.held_until.unwrap_or(0).max(until.0);
    tx.conn
        .prepare_cached("UPDATE queues SET held_until = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![queue, held]))
        .map_err(db_err)?;
    let mut row = (*q).clone();
    row.held_until = Some(held);
    tx.cache_queue(queue, row);
    Ok(())
}

pub(crate) fn cancel(tx: &mut Tx<'_>, id: JobId, now: Millis) -> Result<Job, StoreError> {
    let Some(job) = load_job(tx, id)? else {
        return Err(StoreError::job_not_found(id));
    };
    match job.state {
        JobState::Waiting | JobState::Scheduled | JobState::Queued => {
            let done = end_unrun(tx, id, job.state, JobState::Cancelled, None, now)?;
            on_ended(tx, &done, now)?;
            Ok(done)
        }
        JobState::Running if job.cancel_requested => Ok(job),
        JobState::Running => {
            let marked = update_returning(
                tx,
                sql!("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1"),
                params![id.0],
                id.0,
            )?;
            tx.changed(&marked);
            Ok(marked)
        }
        state => Err(StoreError::WrongState { job: id, state, action: "cancel" }),
    }
}

pub(crate) fn retry(tx: &mut Tx<'_>, id: JobId, now: Millis) -> Result<Job, StoreError> {
    let Some(job) = load_job(tx, id)? else {
        return Err(StoreError::job_not_found(id));
    };
    if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
        return Err(StoreError::WrongState { job: id, state: job.state, action: "retry" });
    }
    if let Some(key) = &job.key
        && let Some(live) = find_live(tx, &job.queue, key)?
    {
        return Err(StoreError::KeyConflict { key: key.clone(), job: live.id });
    }
    let queued = update_returning(
        tx,
        sql!(
            "UPDATE jobs SET state = 1, attempt = 0, free_run = 0, run_at = ?2, finished_at = NULL, \
             cancel_requested = 0, result = NULL, partial = 0 WHERE id = ?1"
        ),
        params![id.0, now.0],
        id.0,
    )?;
    tx.moved(&queued.queue, Some(job.state), Some(JobState::Queued));
    if let Some(parent) = queued.parent {
        // Its end is taken back: the parent counts it pending again.
        child_moved(tx, parent, ChildEnd::of(job.state, job.partial, -1), now)?;
    }
    if let Some(g) = &queued.group {
        refresh_group(tx, &queued.queue, g, now)?;
    }
    tx.ready(&queued.queue);
    tx.changed(&queued);
    Ok(queued)
}
