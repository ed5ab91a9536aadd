//! Claiming: lease the best ready jobs of a queue within all of its limits, on any node.
//!
//! Order is priority then FIFO (id) across the whole queue, as in the SQLite store: jobs without
//! a group come from the `jobs_ready` index, grouped jobs through the `groups` table, which
//! lists each group with a ready head and room under `group_concurrency` in head order; the two
//! are merged, so a busy group is skipped in one step and never holds back the others.
//!
//! What makes the limits hold across nodes:
//! - a queue with a concurrency limit (fixed or adaptive) or a rate locks its row first
//!   (`FOR UPDATE`), so its claims take turns and each counts running jobs after the last one
//!   committed; claims on an unlimited queue do not lock it and run side by side;
//! - a group is opened only after locking its row (`FOR UPDATE SKIP LOCKED`), whose running
//!   count and GCRA time every transition touching the group keeps current under the same
//!   lock; a group another claim holds is skipped, not waited for;
//! - jobs are taken with `FOR UPDATE SKIP LOCKED`, so two claims never get the same job.
//!
//! Having taken its queue's lock, a claim takes every other lock with SKIP LOCKED: it never
//! waits while holding a lock, so it cannot be part of a deadlock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use drove_core::{JobState, Lane, LeaseToken, Millis, QueueConfig};
use drove_store::admission::{self, GroupView, RateState};
use drove_store::limits::{PoolLoad, earliest};
use drove_store::{ClaimOutcome, ClaimRequest, Claimed, StoreError};

use crate::error::TxError;
use crate::row::{JOB_COL_COUNT, JOB_COLS, job_from_row};
use crate::tx::{QueueRow, Tx};

/// The queue's concurrency limit in force.
pub(crate) fn queue_cap(q: &QueueRow) -> Option<i64> {
    drove_store::limits::queue_cap(&q.config, q.limit_now)
}

/// How many more jobs a queue of `pool` may start now (docs/API.md "Pools and lanes"): the pool's
/// limit is shared by its queues; online queues get permits first; offline queues get what is
/// left below the offline limit while no online job is ready, and never less than their
/// minimum share ([`drove_store::limits::pool_room`]).
///
/// A pool with a limit has its row locked (after the queue's, the order every path keeps), so
/// claims of the pool's queues take turns on every node and each counts after the last one
/// committed.
async fn pool_room(tx: &mut Tx<'_>, pool: &str, lane: Lane) -> Result<i64, TxError> {
    let Some(row) = tx.pool(pool, false).await? else { return Ok(i64::MAX) };
    if row.cap().is_none() {
        return Ok(i64::MAX);
    }
    let Some(row) = tx.pool(pool, true).await? else { return Ok(i64::MAX) };
    let Some(cap) = row.cap() else { return Ok(i64::MAX) };
    let rows = tx
        .query(
            "SELECT q.config, \
               (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.queue = q.name AND j.state = 2 LIMIT $2) r), \
               EXISTS (SELECT 1 FROM jobs j WHERE j.queue = q.name AND j.state = 1) \
             FROM queues q WHERE q.pool = $1",
            &[&pool, &cap],
        )
        .await?;
    let (mut running_total, mut running_offline, mut online_ready) = (0i64, 0i64, false);
    for r in &rows {
        let config: String = r.try_get(0)?;
        let config: QueueConfig =
            serde_json::from_str(&config).map_err(|e| StoreError::Internal(format!("queue config: {e}")))?;
        let running: i64 = r.try_get(1)?;
        let ready: bool = r.try_get(2)?;
        running_total += running;
        if config.lane() == Lane::Offline {
            running_offline += running;
        } else {
            online_ready |= ready;
        }
    }
    let load = PoolLoad { running_total, running_offline, online_ready };
    Ok(row.room(load, lane))
}

/// What a claim took from one group, to settle its rate state and derived row.
struct Taken {
    grp: String,
    rate: RateState,
    n: i64,
}

pub(crate) async fn claim(tx: &mut Tx<'_>, req: &ClaimRequest) -> Result<ClaimOutcome, TxError> {
    req.validate().map_err(StoreError::from)?;
    let now = tx.now;
    let mut q = tx.queue(&req.queue).await?;
    if q.config.is_paused() {
        return Ok(ClaimOutcome::default());
    }
    let limited = queue_cap(&q).is_some() || q.config.rate.is_some();
    if limited {
        q = tx.queue_locked(&req.queue).await?;
        if q.config.is_paused() {
            return Ok(ClaimOutcome::default());
        }
    }
    let cfg = q.config.clone();
    if let Some(retry_at) = admission::gate(&cfg, q.held_until, now) {
        return Ok(ClaimOutcome { jobs: Vec::new(), retry_at });
    }
    let mut want = req.max;
    if let Some(cap) = queue_cap(&q) {
        let running: i64 = tx
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = $1 AND state = 2 LIMIT $2) r",
                &[&req.queue, &cap],
            )
            .await?
            .try_get(0)?;
        want = want.min(cap - running);
        if want <= 0 {
            return Ok(ClaimOutcome::default());
        }
    }
    if let Some(pool) = cfg.pool.as_deref() {
        want = want.min(pool_room(tx, pool, cfg.lane()).await?);
        if want <= 0 {
            return Ok(ClaimOutcome::default());
        }
    }
    // The rate's own "come back at": kept only if the rate, not a lack of ready jobs, held
    // jobs back (an idle rated queue must not wake its claimers every interval).
    let mut retry_at = None;
    let mut rate_retry = None;
    if let Some(rate) = &cfg.rate {
        let (granted, retry) = admission::rate_grant(rate, &q.rate_state(), now, want);
        rate_retry = retry;
        want = granted;
        if want == 0 {
            // Only a queue with work waiting needs to come back when the rate allows.
            let waiting: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND state = 1)", &[&req.queue])
                .await?
                .try_get(0)?;
            return Ok(ClaimOutcome { jobs: Vec::new(), retry_at: rate_retry.filter(|_| waiting) });
        }
    }

    let picked = pick(tx, &req.queue, &cfg, want, now, &mut retry_at).await?;
    if picked.ids.len() as i64 == want
        && let Some(r) = rate_retry
    {
        retry_at = earliest(retry_at, r);
    }
    if picked.held_back && !picked.ids.is_empty() {
        // Rows this claim locked but did not take were invisible to concurrent claims: tell
        // them to look again. (Only when it took jobs, so a claimer never wakes itself in a
        // loop of empty claims.)
        tx.ready(&req.queue);
    }
    if picked.ids.is_empty() {
        return Ok(ClaimOutcome { jobs: Vec::new(), retry_at });
    }

    let lease_ms = req.lease_ms.unwrap_or_else(|| cfg.lease_ms());
    let expires = now.plus_ms(lease_ms);
    let sql = format!(
        "WITH t AS (SELECT nextval('lease_tokens') AS token) \
         UPDATE jobs SET state = 2, attempt = attempt + 1 - free_run::int, free_run = false, \
         started_at = $2, finished_at = NULL, lease = t.token, lease_ms = $3, lease_expires_at = $4, \
         deadline = CASE WHEN timeout_ms IS NULL THEN NULL ELSE $2 + timeout_ms END, \
         reap_at = CASE WHEN timeout_ms IS NULL THEN $4 ELSE least($4, $2 + timeout_ms) END, \
         worker = $5 FROM t WHERE id = ANY($1) AND state = 1 RETURNING {JOB_COLS}, t.token"
    );
    let rows = tx.query(&sql, &[&picked.ids, &now.0, &lease_ms, &expires.0, &req.worker]).await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = job_from_row(row)?;
        let token: i64 = row.try_get(JOB_COL_COUNT)?;
        jobs.push(Claimed { job, lease: LeaseToken(token), lease_expires_at: expires });
    }
    // The claim order, which RETURNING does not keep.
    jobs.sort_by_key(|c| picked.ids.iter().position(|id| *id == c.job.id.0));
    for c in &jobs {
        tx.changed(&c.job);
    }
    let n = jobs.len() as i64;
    tx.moved_n(&req.queue, JobState::Queued, JobState::Running, n);

    if n > 0
        && let Some(rate) = &cfg.rate
    {
        let st = q.rate_state();
        let tat = admission::rate_taken(rate, &st, now, n);
        let learned = admission::first_use(rate, &st, now).or(st.learned);
        tx.execute(
            "UPDATE queues SET tat = $2, learn_us = $3, learn_at = $4, learn_strikes = $5 WHERE name = $1",
            &[
                &req.queue,
                &tat,
                &learned.map(|l| l.interval_us),
                &learned.map(|l| l.at.0),
                &learned.map(|l| l.strikes),
            ],
        )
        .await?;
        let mut row = (*q).clone();
        row.tat = Some(tat);
        row.learned = learned;
        tx.cache_queue(&req.queue, row);
    }
    for t in picked.taken {
        if let Some(rate) = &cfg.group_rate {
            tx.set_group_tat(&req.queue, &t.grp, admission::rate_taken(rate, &t.rate, now, t.n));
            if let Some(l) = admission::first_use(rate, &t.rate, now) {
                tx.set_group_learned(&req.queue, &t.grp, l);
            }
        }
        tx.touch_group(&req.queue, &t.grp);
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

/// One open group as the page read (without a lock) shows it.
struct GroupHead {
    grp: String,
    head_priority: i64,
    head_id: i64,
}

/// The jobs chosen, the groups they came from, and whether rows were locked but left.
struct Picked {
    ids: Vec<i64>,
    taken: Vec<Taken>,
    held_back: bool,
}

/// Chooses (and locks) up to `want` jobs in priority-then-FIFO order within group limits.
async fn pick(
    tx: &Tx<'_>,
    queue: &str,
    cfg: &QueueConfig,
    want: i64,
    now: Millis,
    retry_at: &mut Option<Millis>,
) -> Result<Picked, TxError> {
    let mut heap: BinaryHeap<Cand> = BinaryHeap::new();
    for row in tx
        .query(
            "SELECT priority, id FROM jobs WHERE queue = $1 AND state = 1 AND grp IS NULL \
             ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&queue, &want],
        )
        .await?
    {
        heap.push(Cand { priority: row.try_get(0)?, id: Reverse(row.try_get(1)?), group: None });
    }

    let mut groups =
        OpenGroups { queue, page: Vec::new(), after: None, done: false, page_size: want.max(16) };
    let mut opened: Vec<Taken> = Vec::new();
    let mut ids = Vec::with_capacity(want as usize);
    let mut held_back = false;
    while (ids.len() as i64) < want {
        let next_group = groups.peek(tx).await?;
        let best_job = heap.peek().map(|c| (c.priority, c.id));
        let group_first = match (next_group, best_job) {
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
        // Open the group whose head is the best remaining candidate, if no other claim holds
        // it and it is still open now that it is locked.
        let g = groups.pop().expect("peeked");
        let Some(row) = tx
            .query_opt(
                "SELECT running, tat, held_until, learn_us, learn_at, learn_strikes FROM groups \
                 WHERE queue = $1 AND grp = $2 AND open FOR UPDATE SKIP LOCKED",
                &[&queue, &g.grp],
            )
            .await?
        else {
            continue;
        };
        let view = GroupView {
            running: row.try_get(0)?,
            held_until: row.try_get(2)?,
            rate: RateState {
                tat: row.try_get(1)?,
                learned: RateState::learned_from(row.try_get(3)?, row.try_get(4)?, row.try_get(5)?),
            },
        };
        let allowance = admission::group_allowance(cfg, &view, want - ids.len() as i64, now, retry_at);
        if allowance <= 0 {
            continue;
        }
        let index = opened.len();
        for row in tx
            .query(
                "SELECT priority, id FROM jobs WHERE queue = $1 AND grp = $2 AND state = 1 \
                 ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&queue, &g.grp, &allowance],
            )
            .await?
        {
            heap.push(Cand { priority: row.try_get(0)?, id: Reverse(row.try_get(1)?), group: Some(index) });
        }
        opened.push(Taken { grp: g.grp, rate: view.rate, n: 0 });
    }
    if !heap.is_empty() || opened.iter().any(|t| t.n == 0) {
        held_back = true;
    }
    opened.retain(|t| t.n > 0);
    Ok(Picked { ids, taken: opened, held_back })
}

/// Open groups of a queue in head order, read a page at a time.
struct OpenGroups<'q> {
    queue: &'q str,
    page: Vec<GroupHead>,
    after: Option<(i64, i64)>,
    done: bool,
    page_size: i64,
}

impl OpenGroups<'_> {
    async fn peek(&mut self, tx: &Tx<'_>) -> Result<Option<&GroupHead>, TxError> {
        if self.page.is_empty() && !self.done {
            self.fetch(tx).await?;
        }
        Ok(self.page.last())
    }

    fn pop(&mut self) -> Option<GroupHead> {
        self.page.pop()
    }

    async fn fetch(&mut self, tx: &Tx<'_>) -> Result<(), TxError> {
        let (p, i) = self.after.unwrap_or((i64::MAX, i64::MIN));
        let rows = tx
            .query(
                "SELECT grp, head_priority, head_id FROM groups \
                 WHERE queue = $1 AND open \
                 AND (head_priority < $2 OR (head_priority = $2 AND head_id > $3)) \
                 ORDER BY head_priority DESC, head_id LIMIT $4",
                &[&self.queue, &p, &i, &self.page_size],
            )
            .await?;
        if (rows.len() as i64) < self.page_size {
            self.done = true;
        }
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            page.push(GroupHead { grp: r.try_get(0)?, head_priority: r.try_get(1)?, head_id: r.try_get(2)? });
        }
        if let Some(last) = page.last() {
            self.after = Some((last.head_priority, last.head_id));
        }
        page.reverse(); // pop() from the end yields the best first
        self.page = page;
        Ok(())
    }
}
