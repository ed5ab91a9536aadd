//! The open transaction as a transition sees it: statements (prepared once per connection),
//! the rows of queues it read, and the effects it leaves for after COMMIT.
//!
//! Effects that take locks on shared rows (throttled holds on queues, group rows) are not
//! applied where a transition decides on them but collected and applied by [`Tx::finalize`],
//! queues then groups, each in sorted order. With job rows always locked first, every
//! transaction takes its waiting locks in one global order (jobs, queues, groups), so two
//! transitions cannot deadlock on them; the claim, which locks a queue row before job and
//! group rows, takes those with SKIP LOCKED and so never waits while holding its queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use drove_core::{Job, JobId, JobState, Millis};
use drove_store::{Event, StoreError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::db::Shared;
use crate::error::TxError;

pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A queue's row as a transition reads it (both stores' shape).
pub(crate) use drove_store::limits::QueueRow;

pub(crate) const QUEUE_COLS: &str = "config, tat, held_until, limit_now, learn_us, learn_at, learn_strikes";
/// How many columns `QUEUE_COLS` names (a statement may return more after them).
pub(crate) const QUEUE_COL_COUNT: usize = 7;

pub(crate) fn queue_from_row(name: &str, row: &Row) -> Result<QueueRow, TxError> {
    let config: String = row.try_get(0)?;
    Ok(QueueRow {
        config: serde_json::from_str(&config)
            .map_err(|e| StoreError::Internal(format!("queue {name} config: {e}")))?,
        tat: row.try_get(1)?,
        held_until: row.try_get(2)?,
        limit_now: row.try_get(3)?,
        learned: drove_store::admission::RateState::learned_from(
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
        ),
    })
}

pub(crate) use drove_store::limits::PoolRow;

/// What a transition asks of a group's row, applied when the transaction ends.
#[derive(Debug, Default, Clone, Copy)]
struct GroupChange {
    hold: Option<i64>,
    tat: Option<i64>,
    learned: Option<drove_core::learned::Learned>,
}

/// What a committed transaction tells the hubs (this node's at once, the others' by NOTIFY).
#[derive(Default)]
pub(crate) struct Effects {
    /// Count changes per (queue, state), written as delta rows before COMMIT.
    deltas: BTreeMap<(String, i16), i64>,
    pub ready: Vec<String>,
    /// Earliest `run_at` of a job this transaction scheduled.
    pub scheduled: Option<Millis>,
    /// A schedule was written: this node's scheduler looks again (others within a second).
    pub schedules: bool,
    /// Jobs that reached a terminal state and are watched on this node.
    pub finished: Vec<Job>,
    /// Jobs that reached a terminal state while nobody here watched them.
    pub unwatched: Vec<i64>,
    /// Events for this node's subscribers.
    pub events: Vec<Event>,
    /// State changes for other nodes: (queue, state) -> job ids.
    pub announce: BTreeMap<(String, i16), Vec<i64>>,
    groups: BTreeMap<(String, String), GroupChange>,
    queue_holds: BTreeMap<String, i64>,
    /// Learned rates cut by throttled outcomes, written with the holds.
    queue_learned: BTreeMap<String, drove_core::learned::Learned>,
    /// Runs ended, by (queue, minute, state, partial, error kind or -1), written as delta rows.
    outcomes: BTreeMap<(String, i64, i16, bool, i16), i64>,
}

/// The commit marker of a transaction that wrote: its transaction id and the server process
/// running it, which is what a lost COMMIT is reconciled by.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub xid: String,
    pub pid: i32,
}

pub(crate) struct Tx<'a> {
    db: deadpool_postgres::Transaction<'a>,
    pub shared: &'a Shared,
    /// The caller's time.
    pub now: Millis,
    pub fx: Effects,
    queues: HashMap<String, Arc<QueueRow>>,
}

impl<'a> Tx<'a> {
    pub fn new(db: deadpool_postgres::Transaction<'a>, shared: &'a Shared, now: Millis) -> Tx<'a> {
        Tx { db, shared, now, fx: Effects::default(), queues: HashMap::new() }
    }

    pub fn into_parts(self) -> (deadpool_postgres::Transaction<'a>, Effects) {
        (self.db, self.fx)
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, TxError> {
        let st = self.db.prepare_cached(sql).await?;
        Ok(self.db.query(&st, params).await?)
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, TxError> {
        let st = self.db.prepare_cached(sql).await?;
        Ok(self.db.query_opt(&st, params).await?)
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, TxError> {
        let st = self.db.prepare_cached(sql).await?;
        Ok(self.db.query_one(&st, params).await?)
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, TxError> {
        let st = self.db.prepare_cached(sql).await?;
        Ok(self.db.execute(&st, params).await?)
    }

    // ---- queues and pools -------------------------------------------------------------------

    /// The queue's row, created (with no settings) when the queue is new. Read without a lock:
    /// for settings a transition only reads (defaults, backoff).
    pub async fn queue(&mut self, name: &str) -> Result<Arc<QueueRow>, TxError> {
        if let Some(q) = self.queues.get(name) {
            return Ok(Arc::clone(q));
        }
        let sql = format!("SELECT {QUEUE_COLS} FROM queues WHERE name = $1");
        self.load_queue(name, &sql).await
    }

    /// The queue's row, locked until the transaction ends (created when new): for transitions
    /// that change it or enforce its limits.
    pub async fn queue_locked(&mut self, name: &str) -> Result<Arc<QueueRow>, TxError> {
        let sql = format!("SELECT {QUEUE_COLS} FROM queues WHERE name = $1 FOR UPDATE");
        self.load_queue(name, &sql).await
    }

    async fn load_queue(&mut self, name: &str, sql: &str) -> Result<Arc<QueueRow>, TxError> {
        let row = match self.query_opt(sql, &[&name]).await? {
            Some(row) => row,
            None => {
                self.execute(
                    "INSERT INTO queues (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &self.now.0],
                )
                .await?;
                self.query_one(sql, &[&name]).await?
            }
        };
        let q = Arc::new(queue_from_row(name, &row)?);
        self.queues.insert(name.to_owned(), Arc::clone(&q));
        Ok(q)
    }

    /// Replaces the row this transaction remembers after writing it.
    pub fn cache_queue(&mut self, name: &str, row: QueueRow) {
        self.queues.insert(name.to_owned(), Arc::new(row));
    }

    pub async fn pool(&self, name: &str, lock: bool) -> Result<Option<PoolRow>, TxError> {
        let sql = if lock {
            "SELECT config, limit_now, offline_limit FROM pools WHERE name = $1 FOR UPDATE"
        } else {
            "SELECT config, limit_now, offline_limit FROM pools WHERE name = $1"
        };
        let Some(row) = self.query_opt(sql, &[&name]).await? else {
            return Ok(None);
        };
        let config: String = row.try_get(0)?;
        Ok(Some(PoolRow {
            config: serde_json::from_str(&config)
                .map_err(|e| StoreError::Internal(format!("pool {name} config: {e}")))?,
            limit_now: row.try_get(1)?,
            offline_limit: row.try_get(2)?,
        }))
    }

    // ---- effects ----------------------------------------------------------------------------

    /// A job moved between states (`None`: created or deleted), for the per-queue counts.
    pub fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
        if let Some(f) = from {
            *self.fx.deltas.entry((queue.to_owned(), f.code() as i16)).or_insert(0) -= 1;
        }
        if let Some(t) = to {
            *self.fx.deltas.entry((queue.to_owned(), t.code() as i16)).or_insert(0) += 1;
        }
    }

    /// Several jobs of one queue moved the same way.
    pub fn moved_n(&mut self, queue: &str, from: JobState, to: JobState, n: i64) {
        if n != 0 {
            *self.fx.deltas.entry((queue.to_owned(), from.code() as i16)).or_insert(0) -= n;
            *self.fx.deltas.entry((queue.to_owned(), to.code() as i16)).or_insert(0) += n;
        }
    }

    /// This transaction's count changes for one queue not yet written (reads inside it).
    pub fn pending_counts(&self, queue: &str) -> Vec<(i16, i64)> {
        self.fx.deltas.iter().filter(|((q, _), _)| q == queue).map(|((_, s), n)| (*s, *n)).collect()
    }

    /// A job reached a terminal state: its outcome is counted (per minute, for the operations
    /// view's windows), and a partial success in the queue's partial count.
    pub fn ended(&mut self, job: &Job) {
        let partial = job.state == JobState::Succeeded && job.partial;
        let kind = match job.state {
            JobState::Succeeded => -1,
            _ => job.error.as_ref().map_or(-1, |e| e.kind.code() as i16),
        };
        let minute = job.finished_at.unwrap_or(job.run_at).0.div_euclid(60_000);
        *self
            .fx
            .outcomes
            .entry((job.queue.clone(), minute, job.state.code() as i16, partial, kind))
            .or_insert(0) += 1;
        if partial {
            *self
                .fx
                .deltas
                .entry((job.queue.clone(), drove_store::PARTIAL_COUNT_CODE as i16))
                .or_insert(0) += 1;
        }
    }

    /// Partial successes of `queue` left the store (pruned).
    pub fn partial_gone(&mut self, queue: &str, n: i64) {
        if n != 0 {
            *self.fx.deltas.entry((queue.to_owned(), drove_store::PARTIAL_COUNT_CODE as i16)).or_insert(0) -=
                n;
        }
    }

    /// Jobs of `queue` may be claimable (or capacity was freed) once this commits.
    pub fn ready(&mut self, queue: &str) {
        if !self.fx.ready.iter().any(|q| q == queue) {
            self.fx.ready.push(queue.to_owned());
        }
    }

    /// A schedule was written: this node's scheduler hears of it after commit.
    pub fn schedule_written(&mut self) {
        self.fx.schedules = true;
    }

    /// A job now waits for `run_at` (promoters hear of it after commit).
    pub fn scheduled(&mut self, run_at: Millis) {
        self.fx.scheduled = Some(self.fx.scheduled.map_or(run_at, |s| s.min(run_at)));
    }

    /// A job changed; `job` is its new state. Watchers and subscribers hear of it after commit.
    pub fn changed(&mut self, job: &Job) {
        if job.state == JobState::Scheduled {
            self.scheduled(job.run_at);
        }
        if job.state.is_terminal() {
            if self.shared.hub.is_watched(job.id) {
                self.fx.finished.push(job.clone());
            } else {
                self.fx.unwatched.push(job.id.0);
            }
        }
        self.changed_light(job.id, &job.queue, job.state);
    }

    /// A job's state changed without its document at hand (bulk moves).
    pub fn changed_light(&mut self, id: JobId, queue: &str, state: JobState) {
        if self.shared.hub.has_subscribers() {
            self.fx.events.push(Event { id, queue: queue.into(), state });
        }
        self.fx.announce.entry((queue.to_owned(), state.code() as i16)).or_default().push(id.0);
    }

    /// A job changed without changing state (a heartbeat): this node's subscribers only, as
    /// other nodes are told of state changes alone.
    pub fn touched(&mut self, id: JobId, queue: &str, state: JobState) {
        if self.shared.hub.has_subscribers() {
            self.fx.events.push(Event { id, queue: queue.into(), state });
        }
    }

    /// A transition changed jobs of this group: its row is re-derived before commit.
    pub fn touch_group(&mut self, queue: &str, grp: &str) {
        self.fx.groups.entry((queue.to_owned(), grp.to_owned())).or_default();
    }

    /// Holds a group until `until` (a throttled outcome): no job of it starts before then.
    pub fn hold_group(&mut self, queue: &str, grp: &str, until: Millis) {
        let c = self.fx.groups.entry((queue.to_owned(), grp.to_owned())).or_default();
        c.hold = Some(c.hold.map_or(until.0, |h| h.max(until.0)));
    }

    /// The group's new GCRA time after a claim took from it.
    pub fn set_group_tat(&mut self, queue: &str, grp: &str, tat_us: i64) {
        self.fx.groups.entry((queue.to_owned(), grp.to_owned())).or_default().tat = Some(tat_us);
    }

    /// The group's learned rate after a cut or at its first use.
    pub fn set_group_learned(&mut self, queue: &str, grp: &str, learned: drove_core::learned::Learned) {
        self.fx.groups.entry((queue.to_owned(), grp.to_owned())).or_default().learned = Some(learned);
    }

    /// Holds a whole queue until `until` (a throttled outcome without group rates).
    pub fn hold_queue(&mut self, queue: &str, until: Millis) {
        let h = self.fx.queue_holds.entry(queue.to_owned()).or_insert(until.0);
        *h = (*h).max(until.0);
    }

    /// The queue's learned rate after a cut (written with the holds, in queue order).
    pub fn learn_queue(&mut self, queue: &str, learned: drove_core::learned::Learned) {
        self.fx.queue_learned.insert(queue.to_owned(), learned);
    }

    /// Applies the deferred writes (queue holds, then group rows, each in sorted order), writes
    /// the count deltas, and returns the marker a lost COMMIT is reconciled by (`None` when
    /// the transaction wrote nothing).
    pub async fn finalize(&mut self) -> Result<Option<Marker>, TxError> {
        let holds = std::mem::take(&mut self.fx.queue_holds);
        let mut learned = std::mem::take(&mut self.fx.queue_learned);
        let mut names: Vec<String> = holds.keys().chain(learned.keys()).cloned().collect();
        names.sort_unstable();
        names.dedup();
        for queue in names {
            let until = holds.get(&queue).copied();
            let l = learned.remove(&queue);
            self.execute(
                "UPDATE queues SET held_until = CASE WHEN $2::bigint IS NULL THEN held_until \
                   ELSE greatest(coalesce(held_until, 0), $2) END, \
                 learn_us = coalesce($3, learn_us), learn_at = coalesce($4, learn_at), \
                 learn_strikes = coalesce($5, learn_strikes) WHERE name = $1",
                &[&queue, &until, &l.map(|l| l.interval_us), &l.map(|l| l.at.0), &l.map(|l| l.strikes)],
            )
            .await?;
        }
        if !self.fx.groups.is_empty() {
            let groups = std::mem::take(&mut self.fx.groups);
            let mut queues = Vec::with_capacity(groups.len());
            let mut grps = Vec::with_capacity(groups.len());
            let mut holds = Vec::with_capacity(groups.len());
            let mut tats = Vec::with_capacity(groups.len());
            let mut learned = Vec::new();
            for ((q, g), c) in groups {
                if let Some(l) = c.learned {
                    learned.push((q.clone(), g.clone(), l));
                }
                queues.push(q);
                grps.push(g);
                holds.push(c.hold);
                tats.push(c.tat);
            }
            self.execute(
                "SELECT refresh_groups($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5)",
                &[&queues, &grps, &holds, &tats, &self.now.0],
            )
            .await?;
            // In (queue, group) order, like every lock on group rows.
            for (q, g, l) in learned {
                self.execute(
                    "UPDATE groups SET learn_us = $3, learn_at = $4, learn_strikes = $5 WHERE queue = $1 AND grp = $2",
                    &[&q, &g, &l.interval_us, &l.at.0, &l.strikes],
                )
                .await?;
            }
        }
        let (mut queues, mut states, mut ns) = (Vec::new(), Vec::new(), Vec::new());
        for ((q, s), n) in &self.fx.deltas {
            if *n != 0 {
                queues.push(q.as_str());
                states.push(*s);
                ns.push(*n);
            }
        }
        if !queues.is_empty() {
            self.execute(
                "INSERT INTO count_deltas (queue, state, n) \
                 SELECT * FROM unnest($1::text[], $2::smallint[], $3::bigint[])",
                &[&queues, &states, &ns],
            )
            .await?;
        }
        if !self.fx.outcomes.is_empty() {
            let outcomes = std::mem::take(&mut self.fx.outcomes);
            let (mut qs, mut minutes, mut states, mut partials, mut kinds, mut ns) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((q, minute, state, partial, kind), n) in outcomes {
                qs.push(q);
                minutes.push(minute);
                states.push(state);
                partials.push(partial);
                kinds.push(kind);
                ns.push(n);
            }
            self.execute(
                "INSERT INTO outcome_deltas (queue, minute, state, partial, kind, n) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::bool[], $5::smallint[], $6::bigint[])",
                &[&qs, &minutes, &states, &partials, &kinds, &ns],
            )
            .await?;
        }
        let row =
            self.query_one("SELECT pg_current_xact_id_if_assigned()::text, pg_backend_pid()", &[]).await?;
        let xid: Option<String> = row.try_get(0)?;
        Ok(xid.map(|xid| Marker { xid, pid: row.get(1) }))
    }
}
