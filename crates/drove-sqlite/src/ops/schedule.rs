//! Schedules (SQLite): written, read, and fired by the writer (drove_store::schedules decides
//! which ticks; the single writer makes each pass exact).

use drove_core::ValidationError;
use drove_core::{JobId, Millis};
use drove_store::schedules::{self, MAX_SCHEDULES, ScheduleInfo, ScheduleSpec};
use drove_store::{StoreError, Submitted};
use rusqlite::{Connection, OptionalExtension, params};

use super::submit::submit_one;
use crate::row::db_err;
use crate::writer::Tx;

/// The columns [`schedule_from_row`] reads.
pub(crate) const SCHEDULE_COLS: &str = "s.name, s.spec, s.paused, s.next_at, s.last_tick, s.last_job, \
    s.created_at, s.updated_at, j.state";

const FROM: &str = "FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job";

fn schedule_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ScheduleInfo, StoreError>> {
    let name: String = r.get(0)?;
    let spec: String = r.get(1)?;
    let state: Option<i64> = r.get(8)?;
    Ok((|| {
        let mut spec: ScheduleSpec = serde_json::from_str(&spec)
            .map_err(|e| StoreError::Internal(format!("schedule {name}: unreadable settings: {e}")))?;
        spec.paused = r.get::<_, i64>(2).map_err(db_err)? != 0;
        Ok(ScheduleInfo {
            spec,
            next_at: r.get::<_, Option<i64>>(3).map_err(db_err)?.map(Millis),
            last_tick_at: r.get::<_, Option<i64>>(4).map_err(db_err)?.map(Millis),
            last_job: r.get::<_, Option<i64>>(5).map_err(db_err)?.map(JobId),
            last_job_state: state.map(drove_store::row::state_from_code).transpose()?,
            created_at: Millis(r.get(6).map_err(db_err)?),
            updated_at: Millis(r.get(7).map_err(db_err)?),
            name,
        })
    })())
}

pub(crate) fn get(conn: &Connection, name: &str) -> Result<Option<ScheduleInfo>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SCHEDULE_COLS} {FROM} WHERE s.name = ?1"))
        .and_then(|mut s| s.query_row([name], schedule_from_row).optional())
        .map_err(db_err)?
        .transpose()
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ScheduleInfo>, StoreError> {
    let rows: Vec<Result<ScheduleInfo, StoreError>> = conn
        .prepare_cached(&format!("SELECT {SCHEDULE_COLS} {FROM} ORDER BY s.name"))
        .and_then(|mut s| s.query_map([], schedule_from_row)?.collect())
        .map_err(db_err)?;
    rows.into_iter().collect()
}

pub(crate) fn next_tick(conn: &Connection) -> Result<Option<Millis>, StoreError> {
    conn.query_row("SELECT min(next_at) FROM schedules WHERE paused = 0", [], |r| r.get::<_, Option<i64>>(0))
        .map(|t| t.map(Millis))
        .map_err(db_err)
}

/// Creates or replaces a schedule (validated by the caller).
pub(crate) fn put(
    tx: &mut Tx<'_>,
    name: &str,
    spec: ScheduleSpec,
    now: Millis,
) -> Result<(ScheduleInfo, bool), StoreError> {
    let parsed = spec.validate(usize::MAX)?;
    let old = get(tx.conn, name)?;
    let exists = old.is_some();
    if !exists {
        let n: i64 = tx.conn.query_row("SELECT count(*) FROM schedules", [], |r| r.get(0)).map_err(db_err)?;
        if n >= MAX_SCHEDULES {
            return Err(ValidationError::new("name", format!("at most {MAX_SCHEDULES} schedules")).into());
        }
    }
    let next_at = schedules::next_at_after_put(old.as_ref(), &spec, &parsed, now);
    let text = serde_json::to_string(&ScheduleSpec { paused: false, ..spec.clone() })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.conn
        .prepare_cached(
            "INSERT INTO schedules (name, spec, paused, next_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused, \
             next_at = excluded.next_at, updated_at = excluded.updated_at",
        )
        .and_then(|mut s| s.execute(params![name, text, i64::from(spec.paused), next_at.map(|t| t.0), now.0]))
        .map_err(db_err)?;
    tx.schedule_written();
    let info = get(tx.conn, name)?.ok_or_else(|| StoreError::Internal("schedule vanished".into()))?;
    Ok((info, !exists))
}

pub(crate) fn delete(tx: &mut Tx<'_>, name: &str) -> Result<bool, StoreError> {
    let n = tx
        .conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map_err(db_err)?;
    Ok(n > 0)
}

/// "Run now": the schedule's job, enqueued at once; its ticks are unchanged.
pub(crate) fn run(tx: &mut Tx<'_>, name: &str, now: Millis) -> Result<Submitted, StoreError> {
    let Some(info) = get(tx.conn, name)? else {
        return Err(StoreError::NotFound(format!("schedule {name}")));
    };
    let sub = submit_one(tx, info.spec.job(now), now)?;
    tx.conn
        .prepare_cached("UPDATE schedules SET last_job = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, sub.job.id.0]))
        .map_err(db_err)?;
    Ok(sub)
}

/// One scheduler pass: the due ticks of up to `limit` schedules, each schedule moved past `now`
/// in the same transaction as its jobs.
pub(crate) fn fire(tx: &mut Tx<'_>, now: Millis, limit: usize) -> Result<usize, StoreError> {
    let due: Vec<(String, String, i64)> = tx
        .conn
        .prepare_cached(
            "SELECT name, spec, next_at FROM schedules WHERE paused = 0 AND next_at <= ?1 \
             ORDER BY next_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now.0, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
        })
        .map_err(db_err)?;
    let mut submitted = 0;
    for (name, spec, next_at) in due {
        let spec: ScheduleSpec = serde_json::from_str(&spec)
            .map_err(|e| StoreError::Internal(format!("schedule {name}: unreadable settings: {e}")))?;
        let plan = schedules::plan(&spec, Millis(next_at), now);
        let mut last_job = None;
        for job in plan.jobs {
            // A tick whose job cannot be made (its queue's key rejects it, say) is skipped: the
            // schedule moves on rather than jamming on it.
            match submit_one(tx, job, now) {
                Ok(s) => {
                    last_job = Some(s.job.id.0);
                    submitted += 1;
                }
                Err(
                    e @ (StoreError::Invalid(_)
                    | StoreError::KeyConflict { .. }
                    | StoreError::WrongState { .. }),
                ) => {
                    tracing::warn!(schedule = %name, error = %e, "a scheduled tick enqueued nothing");
                }
                Err(e) => return Err(e),
            }
        }
        tx.conn
            .prepare_cached(
                "UPDATE schedules SET next_at = ?3, last_tick = coalesce(?4, last_tick), \
                 last_job = coalesce(?5, last_job) WHERE name = ?1 AND next_at = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name,
                    next_at,
                    plan.next_at.map(|t| t.0),
                    plan.last_tick.map(|t| t.0),
                    last_job
                ])
            })
            .map_err(db_err)?;
    }
    Ok(submitted)
}
