//! Queue and pool settings, and the adaptive limit in force.

use drove_core::name::check_queue_name;
use drove_core::queue::{PoolPatch, QueuePatch};
use drove_store::limits::INITIAL_ADAPTIVE_LIMIT;
use drove_store::{Counts, LimitScope, PoolInfo, QueueInfo, StoreError};

use crate::error::TxError;
use crate::tx::{QueueRow, Tx};

/// Counts of a queue: the compacted base plus the deltas not yet folded into it, read by one
/// statement (one snapshot), so they are exact.
pub(crate) const COUNTS_SQL: &str = "SELECT state, sum(n)::bigint FROM (\
    SELECT state, n FROM queue_counts WHERE queue = $1 \
    UNION ALL SELECT state, n FROM count_deltas WHERE queue = $1) c GROUP BY state";

pub(crate) fn add_count(counts: &mut Counts, code: i16, n: i64) -> Result<(), TxError> {
    counts.add_code(i64::from(code), n)?;
    Ok(())
}

pub(crate) async fn put_queue(tx: &mut Tx<'_>, name: &str, patch: QueuePatch) -> Result<QueueInfo, TxError> {
    check_queue_name("name", name).map_err(StoreError::from)?;
    patch.validate().map_err(StoreError::from)?;
    let q = tx.queue_locked(name).await?;
    let mut row: QueueRow = (*q).clone();
    row.apply(patch);
    let config = serde_json::to_string(&row.config).map_err(|e| StoreError::Internal(e.to_string()))?;
    let learned = row.learned;
    tx.execute(
        "UPDATE queues SET config = $2, reuse_ms = $3, limit_now = $4, tat = $5, pool = $6, group_cap = $7, \
         learn_us = $8, learn_at = $9, learn_strikes = $10 WHERE name = $1",
        &[
            &name,
            &config,
            &row.config.reuse_for_ms(),
            &row.limit_now,
            &row.tat,
            &row.config.pool,
            &row.config.group_concurrency,
            &learned.map(|l| l.interval_us),
            &learned.map(|l| l.at.0),
            &learned.map(|l| l.strikes),
        ],
    )
    .await?;
    let group_limit_changed = row.config.group_concurrency != q.config.group_concurrency;
    tx.cache_queue(name, row);
    if group_limit_changed {
        // Every group's `open` depends on the limit: re-derive them all before commit.
        for g in tx.query("SELECT grp FROM groups WHERE queue = $1", &[&name]).await? {
            let grp: String = g.try_get(0)?;
            tx.touch_group(name, &grp);
        }
    }
    // Unpausing or raising a limit may let waiting claimers through.
    tx.ready(name);
    queue_info(tx, name).await
}

/// A queue as this transaction sees it (including its own uncommitted count changes).
pub(crate) async fn queue_info(tx: &mut Tx<'_>, name: &str) -> Result<QueueInfo, TxError> {
    let q = tx.queue(name).await?;
    let mut counts = Counts::default();
    for r in tx.query(COUNTS_SQL, &[&name]).await? {
        add_count(&mut counts, r.try_get(0)?, r.try_get::<_, Option<i64>>(1)?.unwrap_or(0))?;
    }
    for (state, n) in tx.pending_counts(name) {
        add_count(&mut counts, state, n)?;
    }
    Ok(q.info(name, counts, tx.now))
}

pub(crate) async fn put_pool(tx: &mut Tx<'_>, name: &str, patch: PoolPatch) -> Result<PoolInfo, TxError> {
    check_queue_name("name", name).map_err(StoreError::from)?;
    patch.validate().map_err(StoreError::from)?;
    // Two nodes creating one pool at once: the loser's insert waits, then updates.
    tx.execute("INSERT INTO pools (name, config) VALUES ($1, '{}') ON CONFLICT (name) DO NOTHING", &[&name])
        .await?;
    let mut row = tx.pool(name, true).await?.unwrap_or_default();
    row.config.apply(patch);
    row.limit_now =
        row.config.adaptive.map(|a| row.limit_now.unwrap_or(INITIAL_ADAPTIVE_LIMIT).clamp(a.min, a.max));
    let config = serde_json::to_string(&row.config).map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.execute(
        "UPDATE pools SET config = $2, limit_now = $3 WHERE name = $1",
        &[&name, &config, &row.limit_now],
    )
    .await?;
    let info = row.info(name, pool_queues(tx, name).await?);
    for q in &info.queues {
        tx.ready(q);
    }
    Ok(info)
}

pub(crate) async fn pool_queues(tx: &Tx<'_>, pool: &str) -> Result<Vec<String>, TxError> {
    tx.query("SELECT name FROM queues WHERE pool = $1 ORDER BY name", &[&pool])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

pub(crate) async fn set_limit(
    tx: &mut Tx<'_>,
    scope: &LimitScope,
    limit: Option<i64>,
) -> Result<(), TxError> {
    match scope {
        LimitScope::Queue(name) => {
            let q = tx.queue_locked(name).await?;
            let mut row = (*q).clone();
            row.limit_now = match (row.config.adaptive, limit) {
                (Some(a), Some(l)) => Some(l.clamp(a.min, a.max)),
                _ => limit,
            };
            tx.execute("UPDATE queues SET limit_now = $2 WHERE name = $1", &[name, &row.limit_now]).await?;
            tx.cache_queue(name, row);
            tx.ready(name);
        }
        LimitScope::Pool(name) => {
            let row = tx.pool(name, true).await?;
            let Some(row) = row else { return Err(StoreError::NotFound(format!("pool {name}")).into()) };
            let limit_now = match (row.config.adaptive, limit) {
                (Some(a), Some(l)) => Some(l.clamp(a.min, a.max)),
                _ => limit,
            };
            update_pool(tx, name, "UPDATE pools SET limit_now = $2 WHERE name = $1", limit_now).await?;
        }
    }
    Ok(())
}

pub(crate) async fn set_offline_limit(
    tx: &mut Tx<'_>,
    pool: &str,
    limit: Option<i64>,
) -> Result<(), TxError> {
    if tx.pool(pool, true).await?.is_none() {
        return Err(StoreError::NotFound(format!("pool {pool}")).into());
    }
    let limit = limit.map(|l| l.max(1));
    update_pool(tx, pool, "UPDATE pools SET offline_limit = $2 WHERE name = $1", limit).await
}

/// Writes one limit of a (locked) pool with `sql` (`$1` the name, `$2` the value); the pool's
/// queues may then claim again.
async fn update_pool(tx: &mut Tx<'_>, name: &str, sql: &str, value: Option<i64>) -> Result<(), TxError> {
    tx.execute(sql, &[&name, &value]).await?;
    for q in pool_queues(tx, name).await? {
        tx.ready(&q);
    }
    Ok(())
}
