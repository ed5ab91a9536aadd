//! Claiming: lease the best ready jobs of a queue within all of its limits.
//!
//! Order is priority then FIFO (id) across the whole queue. Jobs without a group come from the
//! `jobs_ready` index; grouped jobs come through the `groups` table, which lists each group
//! with a ready head and room under `group_concurrency` in head order. The two sources are
//! merged, so a busy group is skipped in one step instead of holding back other groups, and
//! the cost is bounded by the jobs handed out plus the groups skipped, never by the backlog.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use drove_core::{JobState, Lane, LeaseToken, Millis, QueueConfig};
use drove_store::admission::{self, GroupView, RateState};
use drove_store::limits::{PoolLoad, earliest};
use drove_store::{ClaimOutcome, ClaimRequest, Claimed, StoreError};
use rusqlite::params;

use super::admin::pool_queues;
use super::group::refresh_group;
use super::{id_list, load_jobs};
use crate::row::db_err;
use crate::writer::{QueueRow, Tx};

/// One open group as the claim sees it.
struct GroupRow {
    grp: String,
    head_priority: i64,
    head_id: i64,
    view: GroupView,
}

/// What a claim took from one group, to settle its rate state and derived row.
struct Taken {
    grp: String,
    rate: RateState,
    n: i64,
}

fn count_running(tx: &Tx<'_>, queue: &str, cap: i64) -> Result<i64, StoreError> {
    tx.conn
        .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 2 LIMIT ?2)")
        .and_then(|mut s| s.query_row(params![queue, cap], |r| r.get(0)))
        .map_err(db_err)
}

/// The queue's concurrency limit in force.
pub(crate) fn queue_cap(q: &QueueRow) -> Option<i64> {
    drove_store::limits::queue_cap(&q.config, q.limit_now)
}

/// How many more jobs a queue of `pool` may start now (docs/API.md "Pools and lanes"): the pool's
/// limit is shared by its queues; online queues get permits first; offline queues get what is
/// left below the offline limit while no online job is ready, and never less than their
/// minimum share ([`drove_store::limits::pool_room`]).
fn pool_room(tx: &mut Tx<'_>, pool: &str, lane: Lane, now: Millis) -> Result<i64, StoreError> {
    let Some(row) = tx.pool(pool)? else { return Ok(i64::MAX) };
    let Some(cap) = row.cap() else { return Ok(i64::MAX) };
    let mut running_total = 0;
    let mut running_offline = 0;
    let mut online_ready = false;
    for q in pool_queues(tx, pool)? {
        let running = count_running(tx, &q, cap)?;
        running_total += running;
        if tx.queue(&q, now)?.config.lane() == Lane::Offline {
            running_offline += running;
        } else if !online_ready {
            online_ready = tx
                .conn
                .prepare_cached("SELECT 1 FROM jobs WHERE queue = ?1 AND state = 1 LIMIT 1")
                .and_then(|mut s| s.exists([&q]))
                .map_err(db_err)?;
        }
    }
    let load = PoolLoad { running_total, running_offline, online_ready };
    Ok(row.room(load, lane))
}

pub(crate) fn claim(tx: &mut Tx<'_>, req: ClaimRequest, now: Millis) -> Result<ClaimOutcome, StoreError> {
    req.validate()?;
    let q = tx.queue(&req.queue, now)?;
    let cfg = &q.config;
    if let Some(retry_at) = admission::gate(cfg, q.held_until, now) {
        return Ok(ClaimOutcome { jobs: Vec::new(), retry_at });
    }
    let mut want = req.max;
    if let Some(cap) = queue_cap(&q) {
        want = want.min(cap - count_running(tx, &req.queue, cap)?);
        if want <= 0 {
            return Ok(ClaimOutcome::default());
        }
    }
    if let Some(pool) = cfg.pool.clone() {
        want = want.min(pool_room(tx, &pool, cfg.lane(), now)?);
        if want <= 0 {
            return Ok(ClaimOutcome::default());
        }
    }
    // The rate's own "come back at": kept only if the rate, not a lack of ready jobs, held
    // jobs back (an idle rated queue must not wake its claimers every interval).
    let mut rate_retry = None;
    let mut retry_at = None;
    if let Some(rate) = &cfg.rate {
        let (granted, retry) = admission::rate_grant(rate, &q.rate_state(), now, want);
        rate_retry = retry;
        want = granted;
        if want == 0 {
            // Only a queue with work waiting needs to come back when the rate allows.
            let waiting = tx
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 1)")
                .and_then(|mut s| s.query_row([&req.queue], |r| r.get::<_, bool>(0)))
                .map_err(db_err)?;
            return Ok(ClaimOutcome { jobs: Vec::new(), retry_at: rate_retry.filter(|_| waiting) });
        }
    }
    let (ids, taken) = pick(tx, &req.queue, cfg, want, now, &mut retry_at)?;
    if ids.len() as i64 == want
        && let Some(r) = rate_retry
    {
        retry_at = earliest(retry_at, r);
    }

    let lease_ms = req.lease_ms.unwrap_or_else(|| cfg.lease_ms());
    let token = tx.alloc_lease();
    let expires = now.plus_ms(lease_ms);
    // One statement leases every picked job, one reads them back.
    let changed = tx
        .conn
        .prepare_cached(
            "UPDATE jobs SET state = 2, attempt = attempt + 1 - free_run, free_run = 0, \
             started_at = ?2, finished_at = NULL, lease = ?3, lease_ms = ?4, lease_expires_at = ?5, \
             deadline = CASE WHEN timeout_ms IS NULL THEN NULL ELSE ?2 + timeout_ms END, \
             reap_at = CASE WHEN timeout_ms IS NULL THEN ?5 ELSE min(?5, ?2 + timeout_ms) END, \
             worker = ?6 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 1",
        )
        .and_then(|mut s| s.execute(params![id_list(&ids), now.0, token, lease_ms, expires.0, req.worker]))
        .map_err(db_err)?;
    if changed != ids.len() {
        return Err(StoreError::Internal(format!("claimed {changed} of {} picked jobs", ids.len())));
    }
    let mut jobs = Vec::with_capacity(ids.len());
    for job in load_jobs(tx, &ids)? {
        tx.changed(&job);
        jobs.push(Claimed { job, lease: LeaseToken(token), lease_expires_at: expires });
    }
    let n = jobs.len() as i64;
    tx.moved_n(&req.queue, JobState::Queued, JobState::Running, n);

    if n > 0
        && let Some(rate) = &cfg.rate
    {
        let st = q.rate_state();
        let tat = admission::rate_taken(rate, &st, now, n);
        let learned = admission::first_use(rate, &st, now).or(st.learned);
        tx.conn
            .prepare_cached(
                "UPDATE queues SET tat = ?2, learn_us = ?3, learn_at = ?4, learn_strikes = ?5 WHERE name = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    req.queue,
                    tat,
                    learned.map(|l| l.interval_us),
                    learned.map(|l| l.at.0),
                    learned.map(|l| l.strikes)
                ])
            })
            .map_err(db_err)?;
        let mut row = (*q).clone();
        row.tat = Some(tat);
        row.learned = learned;
        tx.cache_queue(&req.queue, row);
    }
    for t in taken {
        if let Some(rate) = &cfg.group_rate {
            let tat = admission::rate_taken(rate, &t.rate, now, t.n);
            let learned = admission::first_use(rate, &t.rate, now).or(t.rate.learned);
            tx.conn
                .prepare_cached(
                    "UPDATE groups SET tat = ?3, learn_us = ?4, learn_at = ?5, learn_strikes = ?6 \
                     WHERE queue = ?1 AND grp = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        req.queue,
                        t.grp,
                        tat,
                        learned.map(|l| l.interval_us),
                        learned.map(|l| l.at.0),
                        learned.map(|l| l.strikes)
                    ])
                })
                .map_err(db_err)?;
        }
        refresh_group(tx, &req.queue, &t.grp, now)?;
    }
    Ok(ClaimOutcome { jobs, retry_at })
}

/// A candidate job: ordered best-first as (priority, then lower id).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Cand {
    priority: i64,
    id: Reverse<i64>,
    /// Index into the opened groups, `None` for a job without a group.
    group: Option<usize>,
}

/// Chooses up to `want` job ids in priority-then-FIFO order within group limits.
fn pick(
    tx: &Tx<'_>,
    queue: &str,
    cfg: &QueueConfig,
    want: i64,
    now: Millis,
    retry_at: &mut Option<Millis>,
) -> Result<(Vec<i64>, Vec<Taken>), StoreError> {
    let mut heap: BinaryHeap<Cand> = BinaryHeap::new();
    tx.conn
        .prepare_cached(
            "SELECT priority, id FROM jobs WHERE queue = ?1 AND state = 1 AND grp IS NULL \
             ORDER BY priority DESC, id LIMIT ?2",
        )
        .and_then(|mut s| {
            for row in s.query_map(params![queue, want], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (priority, id): (i64, i64) = row?;
                heap.push(Cand { priority, id: Reverse(id), group: None });
            }
            Ok(())
        })
        .map_err(db_err)?;

    let mut groups = OpenGroups { queue, page: Vec::new(), after: None, done: false, page_size: want };
    let mut opened: Vec<Taken> = Vec::new();
    let mut ids = Vec::with_capacity(want as usize);
    while (ids.len() as i64) < want {
        let next_group = groups.peek(tx)?;
        let best_job = heap.peek().map(|c| (c.priority, c.id));
        let group_first = match (&next_group, best_job) {
            (Some(g), Some(j)) => (g.head_priority, Reverse(g.head_id)) > j,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if !group_first {
            let c = heap.pop().expect("peeked");
            ids.push(c.id.0);
            if let Some(g) = c.group {
                opened[g].n += 1;
            }
            continue;
        }
        // Open the group whose head is the best remaining candidate.
        let g = groups.pop().expect("peeked");
        let allowance = admission::group_allowance(cfg, &g.view, want - ids.len() as i64, now, retry_at);
        if allowance <= 0 {
            continue;
        }
        let index = opened.len();
        tx.conn
            .prepare_cached(
                "SELECT priority, id FROM jobs WHERE queue = ?1 AND grp = ?2 AND state = 1 \
                 ORDER BY priority DESC, id LIMIT ?3",
            )
            .and_then(|mut s| {
                for row in s.query_map(params![queue, g.grp, allowance], |r| Ok((r.get(0)?, r.get(1)?)))? {
                    let (priority, id): (i64, i64) = row?;
                    heap.push(Cand { priority, id: Reverse(id), group: Some(index) });
                }
                Ok(())
            })
            .map_err(db_err)?;
        opened.push(Taken { grp: g.grp, rate: g.view.rate, n: 0 });
    }
    // Groups opened but not taken from still get their row re-derived (cheap, and harmless).
    opened.retain(|t| t.n > 0);
    Ok((ids, opened))
}

/// Open groups of a queue in head order, read a page at a time.
struct OpenGroups<'q> {
    queue: &'q str,
    page: Vec<GroupRow>,
    after: Option<(i64, i64)>,
    done: bool,
    page_size: i64,
}

impl OpenGroups<'_> {
    fn peek(&mut self, tx: &Tx<'_>) -> Result<Option<&GroupRow>, StoreError> {
        if self.page.is_empty() && !self.done {
            self.fetch(tx)?;
        }
        Ok(self.page.last())
    }

    fn pop(&mut self) -> Option<GroupRow> {
        self.page.pop()
    }

    fn fetch(&mut self, tx: &Tx<'_>) -> Result<(), StoreError> {
        let (p, i) = self.after.unwrap_or((i64::MAX, i64::MIN));
        let mut rows: Vec<GroupRow> = tx
            .conn
            .prepare_cached(
                "SELECT grp, head_priority, head_id, running, tat, held_until, learn_us, learn_at, \
                 learn_strikes FROM groups WHERE queue = ?1 AND open = 1 \
                 AND (head_priority < ?2 OR (head_priority = ?2 AND head_id > ?3)) \
                 ORDER BY head_priority DESC, head_id LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![self.queue, p, i, self.page_size.max(16)], |r| {
                    Ok(GroupRow {
                        grp: r.get(0)?,
                        head_priority: r.get(1)?,
                        head_id: r.get(2)?,
                        view: GroupView {
                            running: r.get(3)?,
                            held_until: r.get(5)?,
                            rate: RateState {
                                tat: r.get(4)?,
                                learned: RateState::learned_from(r.get(6)?, r.get(7)?, r.get(8)?),
                            },
                        },
                    })
                })?
                .collect()
            })
            .map_err(db_err)?;
        if (rows.len() as i64) < self.page_size.max(16) {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.after = Some((last.head_priority, last.head_id));
        }
        rows.reverse(); // pop() from the end yields the best first
        self.page = rows;
        Ok(())
    }
}
