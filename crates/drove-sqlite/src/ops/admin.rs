//! Queue and pool settings, and the adaptive limit in force.

use drove_core::Millis;
use drove_core::name::check_queue_name;
use drove_core::queue::{PoolPatch, QueuePatch};
use drove_store::limits::INITIAL_ADAPTIVE_LIMIT;
use drove_store::{Counts, LimitScope, PoolInfo, QueueInfo, StoreError};
use rusqlite::params;

use super::group::refresh_all_groups;
use crate::row::db_err;
use crate::writer::{PoolRow, QueueRow, Tx};

pub(crate) fn put_queue(
    tx: &mut Tx<'_>,
    name: &str,
    patch: QueuePatch,
    now: Millis,
) -> Result<QueueInfo, StoreError> {
    check_queue_name("name", name)?;
    patch.validate()?;
    let q = tx.queue(name, now)?;
    let mut row: QueueRow = (*q).clone();
    row.apply(patch);
    let config = serde_json::to_string(&row.config).map_err(|e| StoreError::Internal(e.to_string()))?;
    let learned = row.learned;
    tx.conn
        .prepare_cached(
            "UPDATE queues SET config = ?2, reuse_ms = ?3, limit_now = ?4, tat = ?5, \
             learn_us = ?6, learn_at = ?7, learn_strikes = ?8 WHERE name = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                name,
                config,
                row.config.reuse_for_ms(),
                row.limit_now,
                row.tat,
                learned.map(|l| l.interval_us),
                learned.map(|l| l.at.0),
                learned.map(|l| l.strikes)
            ])
        })
        .map_err(db_err)?;
    let group_limit_changed = row.config.group_concurrency != q.config.group_concurrency;
    tx.cache_queue(name, row);
    if group_limit_changed {
        refresh_all_groups(tx, name, now)?;
    }
    // Unpausing or raising a limit may let waiting claimers through.
    tx.ready(name);
    queue_info(tx, name, now)
}

/// A queue as the writer sees it (including this batch's uncommitted counts).
pub(crate) fn queue_info(tx: &mut Tx<'_>, name: &str, now: Millis) -> Result<QueueInfo, StoreError> {
    let q = tx.queue(name, now)?;
    let mut counts = Counts::default();
    let stored: Vec<(i64, i64)> = tx
        .conn
        .prepare_cached("SELECT state, n FROM queue_counts WHERE queue = ?1")
        .and_then(|mut s| s.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)?;
    for (code, n) in stored.into_iter().chain(tx.pending_counts(name)) {
        counts.add_code(code, n)?;
    }
    Ok(q.info(name, counts, now))
}

pub(crate) fn put_pool(tx: &mut Tx<'_>, name: &str, patch: PoolPatch) -> Result<PoolInfo, StoreError> {
    check_queue_name("name", name)?;
    patch.validate()?;
    let mut row = tx.pool(name)?.map(|p| (*p).clone()).unwrap_or_default();
    row.config.apply(patch);
    row.limit_now =
        row.config.adaptive.map(|a| row.limit_now.unwrap_or(INITIAL_ADAPTIVE_LIMIT).clamp(a.min, a.max));
    let config = serde_json::to_string(&row.config).map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.conn
        .prepare_cached(
            "INSERT INTO pools (name, config, limit_now) VALUES (?1, ?2, ?3) ON CONFLICT (name) \
             DO UPDATE SET config = excluded.config, limit_now = excluded.limit_now",
        )
        .and_then(|mut s| s.execute(params![name, config, row.limit_now]))
        .map_err(db_err)?;
    let info = row.info(name, pool_queues(tx, name)?);
    for q in &info.queues {
        tx.ready(q);
    }
    tx.cache_pool(name, row);
    Ok(info)
}

pub(crate) fn pool_queues(tx: &Tx<'_>, pool: &str) -> Result<Vec<String>, StoreError> {
    tx.conn
        .prepare_cached("SELECT name FROM queues WHERE json_extract(config, '$.pool') = ?1 ORDER BY name")
        .and_then(|mut s| s.query_map([pool], |r| r.get(0))?.collect())
        .map_err(db_err)
}

pub(crate) fn set_limit(
    tx: &mut Tx<'_>,
    scope: LimitScope,
    limit: Option<i64>,
    now: Millis,
) -> Result<(), StoreError> {
    match scope {
        LimitScope::Queue(name) => {
            let q = tx.queue(&name, now)?;
            let mut row = (*q).clone();
            row.limit_now = match (row.config.adaptive, limit) {
                (Some(a), Some(l)) => Some(l.clamp(a.min, a.max)),
                _ => limit,
            };
            tx.conn
                .prepare_cached("UPDATE queues SET limit_now = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, row.limit_now]))
                .map_err(db_err)?;
            tx.cache_queue(&name, row);
            tx.ready(&name);
        }
        LimitScope::Pool(name) => {
            update_pool(tx, &name, "UPDATE pools SET limit_now = ?2 WHERE name = ?1", |row| {
                row.limit_now = match (row.config.adaptive, limit) {
                    (Some(a), Some(l)) => Some(l.clamp(a.min, a.max)),
                    _ => limit,
                };
                row.limit_now
            })?;
        }
    }
    Ok(())
}

pub(crate) fn set_offline_limit(tx: &mut Tx<'_>, pool: &str, limit: Option<i64>) -> Result<(), StoreError> {
    update_pool(tx, pool, "UPDATE pools SET offline_limit = ?2 WHERE name = ?1", |row| {
        row.offline_limit = limit.map(|l| l.max(1));
        row.offline_limit
    })
}

/// Changes one limit of a pool: `change` sets it on the row and returns the value `sql` writes
/// (`?1` the name, `?2` the value); the pool's queues may then claim again.
fn update_pool(
    tx: &mut Tx<'_>,
    name: &str,
    sql: &str,
    change: impl FnOnce(&mut PoolRow) -> Option<i64>,
) -> Result<(), StoreError> {
    let Some(p) = tx.pool(name)? else {
        return Err(StoreError::NotFound(format!("pool {name}")));
    };
    let mut row = (*p).clone();
    let value = change(&mut row);
    tx.conn.prepare_cached(sql).and_then(|mut s| s.execute(params![name, value])).map_err(db_err)?;
    let queues = pool_queues(tx, name)?;
    tx.cache_pool(name, row);
    for q in &queues {
        tx.ready(q);
    }
    Ok(())
}
