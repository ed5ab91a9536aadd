//! The derived state of groups (the `groups` table), recomputed from the jobs table.
//!
//! Recomputing instead of adjusting counters means no transition can leave a group's row
//! wrong: whatever happened to its jobs, the row is re-derived with two index lookups.

use drove_core::Millis;
use drove_store::StoreError;
use rusqlite::{OptionalExtension, params};

use crate::row::db_err;
use crate::writer::Tx;

/// Re-derives one group's head, running count and `open` flag.
pub(crate) fn refresh_group(tx: &mut Tx<'_>, queue: &str, grp: &str, now: Millis) -> Result<(), StoreError> {
    let cap = tx.queue(queue, now)?.config.group_concurrency;
    let head: Option<(i64, i64)> = tx
        .conn
        .prepare_cached(
            "SELECT priority, id FROM jobs WHERE queue = ?1 AND grp = ?2 AND state = 1 \
             ORDER BY priority DESC, id LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![queue, grp], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_err)?;
    // Running jobs only matter against a cap, and never need counting past it.
    let running: i64 = match cap {
        Some(cap) => tx
            .conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = ?1 AND grp = ?2 \
                 AND state = 2 LIMIT ?3)",
            )
            .and_then(|mut s| s.query_row(params![queue, grp, cap], |r| r.get(0)))
            .map_err(db_err)?,
        None => 0,
    };
    let open = head.is_some() && cap.is_none_or(|c| running < c);
    if head.is_none() && running == 0 {
        // Keep the row only while it holds rate state still in force.
        let deleted = tx
            .conn
            .prepare_cached(
                "DELETE FROM groups WHERE queue = ?1 AND grp = ?2 \
                 AND (tat IS NULL OR tat <= ?3) AND (held_until IS NULL OR held_until <= ?4)",
            )
            .and_then(|mut s| s.execute(params![queue, grp, now.0.saturating_mul(1_000), now.0]))
            .map_err(db_err)?;
        if deleted > 0 {
            return Ok(());
        }
    }
    tx.conn
        .prepare_cached(
            "INSERT INTO groups (queue, grp, head_priority, head_id, running, open) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (queue, grp) DO UPDATE SET \
             head_priority = excluded.head_priority, head_id = excluded.head_id, \
             running = excluded.running, open = excluded.open",
        )
        .and_then(|mut s| s.execute(params![queue, grp, head.map(|h| h.0), head.map(|h| h.1), running, open]))
        .map_err(db_err)?;
    Ok(())
}

/// Re-derives every group of a queue (after its group limit changed).
pub(crate) fn refresh_all_groups(tx: &mut Tx<'_>, queue: &str, now: Millis) -> Result<(), StoreError> {
    let groups: Vec<String> = tx
        .conn
        .prepare_cached("SELECT grp FROM groups WHERE queue = ?1")
        .and_then(|mut s| s.query_map([queue], |r| r.get(0))?.collect())
        .map_err(db_err)?;
    for g in groups {
        refresh_group(tx, queue, &g, now)?;
    }
    Ok(())
}

/// Holds a group until `until` (a throttled outcome): no job of it starts before then.
pub(crate) fn hold_group(tx: &Tx<'_>, queue: &str, grp: &str, until: Millis) -> Result<(), StoreError> {
    tx.conn
        .prepare_cached(
            "INSERT INTO groups (queue, grp, held_until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, grp) DO UPDATE SET held_until = max(coalesce(held_until, 0), excluded.held_until)",
        )
        .and_then(|mut s| s.execute(params![queue, grp, until.0]))
        .map_err(db_err)?;
    Ok(())
}
