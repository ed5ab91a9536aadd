//! Schedules (PostgreSQL): written, read, and fired exactly once per tick across nodes: a pass
//! locks the due rows `FOR UPDATE SKIP LOCKED` (another node's pass takes other rows, or none)
//! and moves each `next_at` with a compare-and-set in the transaction that creates its jobs.

use deadpool_postgres::Object;
use drove_core::{JobId, Millis, ValidationError};
use drove_store::schedules::{self, MAX_SCHEDULES, ScheduleInfo, ScheduleSpec};
use drove_store::{StoreError, Submitted};
use tokio_postgres::Row;

use crate::error::TxError;
use crate::row::state_of;
use crate::tx::Tx;

const COLS: &str =
    "s.name, s.spec, s.paused, s.next_at, s.last_tick, s.last_job, s.created_at, s.updated_at, j.state";
const FROM: &str = "FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job";

fn schedule_from_row(r: &Row) -> Result<ScheduleInfo, TxError> {
    let name: String = r.try_get(0)?;
    let spec: String = r.try_get(1)?;
    let mut spec: ScheduleSpec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Internal(format!("schedule {name}: unreadable settings: {e}")))?;
    spec.paused = r.try_get(2)?;
    Ok(ScheduleInfo {
        spec,
        next_at: r.try_get::<_, Option<i64>>(3)?.map(Millis),
        last_tick_at: r.try_get::<_, Option<i64>>(4)?.map(Millis),
        last_job: r.try_get::<_, Option<i64>>(5)?.map(JobId),
        last_job_state: r.try_get::<_, Option<i16>>(8)?.map(state_of).transpose()?,
        created_at: Millis(r.try_get(6)?),
        updated_at: Millis(r.try_get(7)?),
        name,
    })
}

pub(crate) async fn get(c: &Object, name: &str) -> Result<Option<ScheduleInfo>, TxError> {
    let st = c.prepare_cached(&format!("SELECT {COLS} {FROM} WHERE s.name = $1")).await?;
    c.query_opt(&st, &[&name]).await?.as_ref().map(schedule_from_row).transpose()
}

pub(crate) async fn list(c: &Object) -> Result<Vec<ScheduleInfo>, TxError> {
    let st = c.prepare_cached(&format!("SELECT {COLS} {FROM} ORDER BY s.name")).await?;
    c.query(&st, &[]).await?.iter().map(schedule_from_row).collect()
}

pub(crate) async fn next_tick(c: &Object) -> Result<Option<Millis>, TxError> {
    let st = c.prepare_cached("SELECT min(next_at) FROM schedules WHERE NOT paused").await?;
    Ok(c.query_one(&st, &[]).await?.try_get::<_, Option<i64>>(0)?.map(Millis))
}

async fn get_locked(tx: &Tx<'_>, name: &str) -> Result<Option<ScheduleInfo>, TxError> {
    let sql = format!("SELECT {COLS} {FROM} WHERE s.name = $1 FOR UPDATE OF s");
    tx.query_opt(&sql, &[&name]).await?.as_ref().map(schedule_from_row).transpose()
}

/// Creates or replaces a schedule (validated by the caller).
pub(crate) async fn put(
    tx: &mut Tx<'_>,
    name: &str,
    spec: &ScheduleSpec,
) -> Result<(ScheduleInfo, bool), TxError> {
    let parsed = spec.validate(usize::MAX).map_err(StoreError::Invalid)?;
    let old = get_locked(tx, name).await?;
    if old.is_none() {
        let n: i64 = tx.query_one("SELECT count(*) FROM schedules", &[]).await?.try_get(0)?;
        if n >= MAX_SCHEDULES {
            let e = ValidationError::new("name", format!("at most {MAX_SCHEDULES} schedules"));
            return Err(StoreError::Invalid(e).into());
        }
    }
    let next_at = schedules::next_at_after_put(old.as_ref(), spec, &parsed, tx.now);
    let text = serde_json::to_string(&ScheduleSpec { paused: false, ..spec.clone() })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.execute(
        "INSERT INTO schedules (name, spec, paused, next_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused, \
         next_at = excluded.next_at, updated_at = excluded.updated_at",
        &[&name, &text, &spec.paused, &next_at.map(|t| t.0), &tx.now.0],
    )
    .await?;
    tx.schedule_written();
    let info = get_locked(tx, name).await?.ok_or_else(|| StoreError::Internal("schedule vanished".into()))?;
    Ok((info, old.is_none()))
}

pub(crate) async fn delete(tx: &mut Tx<'_>, name: &str) -> Result<bool, TxError> {
    Ok(tx.execute("DELETE FROM schedules WHERE name = $1", &[&name]).await? > 0)
}

/// "Run now": the schedule's job, enqueued at once; its ticks are unchanged.
pub(crate) async fn run(tx: &mut Tx<'_>, name: &str) -> Result<Submitted, TxError> {
    let Some(info) = get_locked(tx, name).await? else {
        return Err(StoreError::NotFound(format!("schedule {name}")).into());
    };
    let sub = super::submit::submit(tx, &[info.spec.job(tx.now)])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Internal("no answer".into()))?;
    tx.execute("UPDATE schedules SET last_job = $2 WHERE name = $1", &[&name, &sub.job.id.0]).await?;
    Ok(sub)
}

/// One scheduler pass over up to `limit` due schedules not taken by another node's pass.
pub(crate) async fn fire(tx: &mut Tx<'_>, limit: usize) -> Result<usize, TxError> {
    let rows = tx
        .query(
            "SELECT name, spec, next_at FROM schedules WHERE NOT paused AND next_at <= $1 \
             ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&tx.now.0, &(limit as i64)],
        )
        .await?;
    let mut submitted = 0;
    for r in rows {
        let name: String = r.try_get(0)?;
        let spec: String = r.try_get(1)?;
        let next_at: i64 = r.try_get(2)?;
        let spec: ScheduleSpec = serde_json::from_str(&spec)
            .map_err(|e| StoreError::Internal(format!("schedule {name}: unreadable settings: {e}")))?;
        let plan = schedules::plan(&spec, Millis(next_at), tx.now);
        let mut last_job: Option<i64> = None;
        if !plan.jobs.is_empty() {
            // Each tick's job on its own: one its key rejects is skipped, the others are made.
            for job in plan.jobs {
                match super::submit::submit(tx, std::slice::from_ref(&job)).await {
                    Ok(mut s) => {
                        if let Some(s) = s.pop() {
                            last_job = Some(s.job.id.0);
                            submitted += 1;
                        }
                    }
                    Err(TxError::Store(
                        e @ (StoreError::Invalid(_)
                        | StoreError::KeyConflict { .. }
                        | StoreError::WrongState { .. }),
                    )) => {
                        tracing::warn!(schedule = %name, error = %e, "a scheduled tick enqueued nothing");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let moved = tx
            .execute(
                "UPDATE schedules SET next_at = $3, last_tick = coalesce($4, last_tick), \
                 last_job = coalesce($5, last_job) WHERE name = $1 AND next_at = $2",
                &[&name, &next_at, &plan.next_at.map(|t| t.0), &plan.last_tick.map(|t| t.0), &last_job],
            )
            .await?;
        if moved != 1 {
            // Cannot happen under the row lock; if it ever does, nothing of this pass stands.
            return Err(StoreError::Internal(format!("schedule {name} moved under a pass")).into());
        }
    }
    Ok(submitted)
}
