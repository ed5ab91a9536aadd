//! The writer: one thread that owns the only write connection and folds every write that
//! arrives while it is busy into one transaction, so one fsync is shared by the whole batch
//! (group commit).
//!
//! Each write is a closure run inside its own SAVEPOINT: a write that fails (a stale lease, a
//! rejected key) is rolled back alone and the others in its batch still commit. Replies are sent
//! only after COMMIT returns: an acknowledgement always means committed (and, in durable mode,
//! synced). If COMMIT fails, every write of the batch is answered with the error.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use drove_core::{Job, JobId, JobState, Millis};
use drove_store::{Event, Hub, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::row::{QUEUE_COLS, db_err, queue_from_row};

/// Called once the batch holding a write has committed (or failed to).
pub(crate) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: given the open transaction (or the reason there is none), does its work and
/// returns how to answer once the batch's fate is known.
pub(crate) type WriteFn = Box<dyn FnOnce(Result<&mut Tx<'_>, StoreError>) -> Reply + Send>;

pub(crate) enum Msg {
    Write(WriteFn),
    /// Finish what is queued, then stop.
    Close(oneshot::Sender<()>),
}

/// Count slots per queue: the seven states by code + 1 (waiting, -1, is slot 0), then the
/// partial successes.
pub(crate) const COUNT_SLOTS: usize = 8;
/// The count slot of partial successes.
pub(crate) const PARTIAL_SLOT: usize = 7;

/// A state's count slot.
fn slot(state: JobState) -> usize {
    (state.code() + 1) as usize
}

/// The code a count slot is stored under (a state code, or PARTIAL_COUNT_CODE).
fn slot_code(slot: usize) -> i64 {
    if slot == PARTIAL_SLOT { drove_store::PARTIAL_COUNT_CODE } else { slot as i64 - 1 }
}

/// An ended run's outcome as the `outcomes` table counts it: (queue, minute, state, partial,
/// error kind or -1).
pub(crate) type OutcomeKey = (String, i64, i64, i64, i64);

/// Most writes folded into one transaction.
const MAX_BATCH_WRITES: usize = 2_048;

/// A queue's row (both stores' shape), cached by the writer: the writer is the only
/// process-wide writer of these rows, so the cache is exact; it is dropped whenever a write
/// rolls back.
pub(crate) use drove_store::limits::QueueRow;

pub(crate) use drove_store::limits::PoolRow;

/// What the writer keeps between writes.
pub(crate) struct WriterState {
    pub next_id: i64,
    pub next_lease: i64,
    persisted_id: i64,
    persisted_lease: i64,
    queues: HashMap<String, Arc<QueueRow>>,
    pools: HashMap<String, Arc<PoolRow>>,
    /// Count changes of the open batch, written just before COMMIT.
    counts: HashMap<(String, i64), i64>,
    /// Outcomes of the runs the open batch ended, written just before COMMIT.
    outcomes: HashMap<OutcomeKey, i64>,
}

/// The effects of one write, kept apart until its savepoint is released so that a write
/// rolled back leaves no trace in the batch.
#[derive(Default)]
pub(crate) struct OpCtx {
    /// Count changes per queue, indexed by state code.
    counts: Vec<(String, [i64; COUNT_SLOTS])>,
    ready: Vec<String>,
    finished: Vec<Job>,
    /// Jobs that became terminal with no watcher at the time: one may register before COMMIT
    /// and read the old state, so they are looked at again after it.
    unwatched_ends: Vec<JobId>,
    events: Vec<Event>,
    outcomes: Vec<OutcomeKey>,
    /// Earliest `run_at` of a job this write scheduled.
    scheduled: Option<Millis>,
    /// A schedule was written (the scheduler looks again after commit).
    schedules: bool,
}

impl OpCtx {
    fn merge(&mut self, other: OpCtx) {
        self.scheduled = match (self.scheduled, other.scheduled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (q, delta) in other.counts {
            add_counts(&mut self.counts, &q, &delta);
        }
        self.schedules |= other.schedules;
        self.ready.extend(other.ready);
        self.finished.extend(other.finished);
        self.unwatched_ends.extend(other.unwatched_ends);
        self.events.extend(other.events);
        self.outcomes.extend(other.outcomes);
    }
}

/// The open transaction as a write sees it.
pub(crate) struct Tx<'a> {
    pub conn: &'a Connection,
    pub st: &'a mut WriterState,
    pub hub: &'a Hub,
    ctx: OpCtx,
}

impl Tx<'_> {
    /// Runs `f` inside a savepoint: on error its writes and effects are undone and the error
    /// returned; the enclosing transaction carries on.
    pub fn atomic<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.exec("SAVEPOINT w")?;
        let outer = std::mem::take(&mut self.ctx);
        // A bug in one write (a panic) fails that write alone: its savepoint is rolled back
        // like any other failed write, and the writer thread, which every write needs, lives on.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))).unwrap_or_else(|panic| {
                Err(StoreError::Internal(format!("a write panicked: {}", panic_text(&*panic))))
            });
        let inner = std::mem::replace(&mut self.ctx, outer);
        match &result {
            Ok(_) => {
                self.exec("RELEASE w")?;
                self.ctx.merge(inner);
            }
            Err(_) => {
                self.exec("ROLLBACK TO w")?;
                self.exec("RELEASE w")?;
                // Cached rows may hold values the rollback just undid.
                self.st.queues.clear();
                self.st.pools.clear();
            }
        }
        result
    }

    /// Runs a parameterless statement, prepared once.
    fn exec(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).map_err(db_err)
    }

    /// A job moved between states (`None`: created or deleted), for the per-queue counts.
    pub fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
        let mut delta = [0i64; COUNT_SLOTS];
        if let Some(f) = from {
            delta[slot(f)] -= 1;
        }
        if let Some(t) = to {
            delta[slot(t)] += 1;
        }
        add_counts(&mut self.ctx.counts, queue, &delta);
    }

    /// Several jobs of one queue moved the same way.
    pub fn moved_n(&mut self, queue: &str, from: JobState, to: JobState, n: i64) {
        if n != 0 {
            let mut delta = [0i64; COUNT_SLOTS];
            delta[slot(from)] -= n;
            delta[slot(to)] += n;
            add_counts(&mut self.ctx.counts, queue, &delta);
        }
    }

    /// A job reached a terminal state: its outcome is counted (per minute, for the operations
    /// view's windows), and a partial success in the queue's partial count.
    pub fn ended(&mut self, job: &Job) {
        let partial = job.state == JobState::Succeeded && job.partial;
        let kind = match job.state {
            JobState::Succeeded => -1,
            _ => job.error.as_ref().map_or(-1, |e| e.kind.code()),
        };
        let minute = job.finished_at.unwrap_or(job.run_at).0.div_euclid(60_000);
        self.ctx.outcomes.push((job.queue.clone(), minute, job.state.code(), i64::from(partial), kind));
        if partial {
            let mut delta = [0i64; COUNT_SLOTS];
            delta[PARTIAL_SLOT] = 1;
            add_counts(&mut self.ctx.counts, &job.queue, &delta);
        }
    }

    /// Partial successes of `queue` left the store (pruned).
    pub fn partial_gone(&mut self, queue: &str, n: i64) {
        if n != 0 {
            let mut delta = [0i64; COUNT_SLOTS];
            delta[PARTIAL_SLOT] = -n;
            add_counts(&mut self.ctx.counts, queue, &delta);
        }
    }

    /// Jobs of `queue` may be claimable (or capacity was freed) once this commits.
    pub fn ready(&mut self, queue: &str) {
        if !self.ctx.ready.iter().any(|q| q == queue) {
            self.ctx.ready.push(queue.to_owned());
        }
    }

    /// A schedule was written: the scheduler hears of it after commit.
    pub fn schedule_written(&mut self) {
        self.ctx.schedules = true;
    }

    /// A job now waits for `run_at` (the promoter hears of it after commit).
    pub fn scheduled(&mut self, run_at: Millis) {
        self.ctx.scheduled = Some(self.ctx.scheduled.map_or(run_at, |s| s.min(run_at)));
    }

    /// A job changed; `job` is its new state. Watchers and subscribers hear of it after commit.
    pub fn changed(&mut self, job: &Job) {
        if job.state == JobState::Scheduled {
            self.scheduled(job.run_at);
        }
        if job.state.is_terminal() {
            if self.hub.is_watched(job.id) {
                self.ctx.finished.push(job.clone());
            } else {
                self.ctx.unwatched_ends.push(job.id);
            }
        }
        if self.hub.has_subscribers() {
            self.ctx.events.push(Event { id: job.id, queue: job.queue.as_str().into(), state: job.state });
        }
    }

    /// A job changed without its document at hand (bulk moves): subscribers only.
    pub fn changed_light(&mut self, id: JobId, queue: &str, state: JobState) {
        if self.hub.has_subscribers() {
            self.ctx.events.push(Event { id, queue: queue.into(), state });
        }
    }

    pub fn alloc_id(&mut self) -> i64 {
        let id = self.st.next_id;
        self.st.next_id += 1;
        id
    }

    pub fn alloc_lease(&mut self) -> i64 {
        let t = self.st.next_lease;
        self.st.next_lease += 1;
        t
    }

    /// The queue's row, created (with no settings) when the queue is new.
    pub fn queue(&mut self, name: &str, now: Millis) -> Result<Arc<QueueRow>, StoreError> {
        if let Some(q) = self.st.queues.get(name) {
            return Ok(Arc::clone(q));
        }
        let found = self
            .conn
            .prepare_cached(sql!("SELECT {QUEUE_COLS} FROM queues WHERE name = ?1"))
            .and_then(|mut s| s.query_row([name], |r| queue_from_row(name, r, 0)).optional())
            .map_err(db_err)?;
        let row = match found {
            Some(row) => row,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO queues (name, config, created_at) VALUES (?1, '{}', ?2)")
                    .and_then(|mut s| s.execute(params![name, now.0]))
                    .map_err(db_err)?;
                QueueRow::default()
            }
        };
        let row = Arc::new(row);
        self.st.queues.insert(name.to_owned(), Arc::clone(&row));
        Ok(row)
    }

    /// Replaces the cached row after writing it.
    pub fn cache_queue(&mut self, name: &str, row: QueueRow) {
        self.st.queues.insert(name.to_owned(), Arc::new(row));
    }

    pub fn pool(&mut self, name: &str) -> Result<Option<Arc<PoolRow>>, StoreError> {
        if let Some(p) = self.st.pools.get(name) {
            return Ok(Some(Arc::clone(p)));
        }
        let found = self
            .conn
            .prepare_cached("SELECT config, limit_now, offline_limit FROM pools WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))).optional()
            })
            .map_err(db_err)?;
        let Some((config, limit_now, offline_limit)) = found else {
            return Ok(None);
        };
        let row = Arc::new(PoolRow {
            config: serde_json::from_str(&config)
                .map_err(|e| StoreError::Internal(format!("pool {name} config: {e}")))?,
            limit_now,
            offline_limit,
        });
        self.st.pools.insert(name.to_owned(), Arc::clone(&row));
        Ok(Some(row))
    }

    pub fn cache_pool(&mut self, name: &str, row: PoolRow) {
        self.st.pools.insert(name.to_owned(), Arc::new(row));
    }

    /// Count changes of this batch not yet written, for one queue (reads inside the writer).
    pub fn pending_counts(&self, queue: &str) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> =
            self.st.counts.iter().filter(|((q, _), _)| q == queue).map(|((_, s), n)| (*s, *n)).collect();
        for (q, delta) in &self.ctx.counts {
            if q == queue {
                out.extend(delta.iter().enumerate().map(|(s, n)| (slot_code(s), *n)));
            }
        }
        out
    }
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn add_counts(counts: &mut Vec<(String, [i64; COUNT_SLOTS])>, queue: &str, delta: &[i64; COUNT_SLOTS]) {
    match counts.iter_mut().find(|(q, _)| q == queue) {
        Some((_, d)) => d.iter_mut().zip(delta).for_each(|(a, b)| *a += b),
        None => counts.push((queue.to_owned(), *delta)),
    }
}

/// The handle the store keeps: a channel to the writer thread.
pub(crate) struct Writer {
    /// Unbounded: every write has a caller awaiting its reply, so the queue is bounded by the
    /// callers in flight. A std channel, so the writer thread can wait with a timeout.
    tx: std_mpsc::Sender<Msg>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    pub fn start(conn: Connection, hub: Arc<Hub>) -> Result<Writer, StoreError> {
        let (next_id, next_lease) = load_counters(&conn).map_err(db_err)?;
        let st = WriterState {
            next_id,
            next_lease,
            persisted_id: next_id,
            persisted_lease: next_lease,
            queues: HashMap::new(),
            pools: HashMap::new(),
            counts: HashMap::new(),
            outcomes: HashMap::new(),
        };
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("drove-sqlite-writer".into())
            .spawn(move || run(conn, rx, hub, st))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { tx, thread: std::sync::Mutex::new(Some(thread)) })
    }

    /// Runs `f` in the writer's next batch and returns its result once that batch committed.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let op: WriteFn = Box::new(move |tx| {
            let result = match tx {
                Ok(tx) => tx.atomic(f),
                Err(e) => Err(e),
            };
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply_tx.send(commit.and(result));
            })
        });
        self.tx.send(Msg::Write(op)).map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        reply_rx.await.map_err(|_| StoreError::Unavailable("the store closed before answering".into()))?
    }

    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            // The thread has answered Close, so it is exiting: joining is immediate.
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn load_counters(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let meta = |k: &str| -> rusqlite::Result<i64> {
        conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
    };
    let max_id: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM jobs", [], |r| r.get(0))?;
    let max_lease: i64 = conn.query_row("SELECT coalesce(max(lease), 0) FROM jobs", [], |r| r.get(0))?;
    Ok((meta("next_id")?.max(max_id + 1), meta("next_lease")?.max(max_lease + 1)))
}

/// The longest the writer waits for more writes before starting a batch.
const GATHER_MAX: Duration = Duration::from_micros(250);

fn run(conn: Connection, rx: std_mpsc::Receiver<Msg>, hub: Arc<Hub>, mut st: WriterState) {
    let mut batch: Vec<WriteFn> = Vec::with_capacity(MAX_BATCH_WRITES);
    let mut closing: Option<oneshot::Sender<()>> = None;
    // How many writers are about (the largest recent batch, forgotten one by one) and how long
    // the last commit took: writers answered by a commit usually come straight back, a few
    // microseconds apart.
    let mut expected = 0usize;
    let mut last_commit = Duration::ZERO;
    while closing.is_none() {
        let Ok(first) = rx.recv() else {
            break;
        };
        let mut push = |m: Msg, batch: &mut Vec<WriteFn>| match m {
            Msg::Write(f) => batch.push(f),
            Msg::Close(done) => closing = Some(done),
        };
        push(first, &mut batch);
        // Group commit's gather window (PostgreSQL's commit_delay): right after a commit the
        // first writer back would otherwise get a commit (an fsync) of its own while the
        // others arrive microseconds later; batches would alternate one and many. Waiting a
        // fraction of the last commit's time for as many writers as last time halves the
        // commits of concurrent one-by-one writers; a lone writer never waits.
        let gather_until = Instant::now() + (last_commit / 4).min(GATHER_MAX);
        while batch.len() < MAX_BATCH_WRITES {
            let next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) if batch.len() < expected => {
                    // Park (no spinning: the writers to wait for need the CPU) until one comes.
                    let left = gather_until.saturating_duration_since(Instant::now());
                    if left.is_zero() { None } else { rx.recv_timeout(left).ok() }
                }
                Err(_) => None,
            };
            match next {
                Some(m) => push(m, &mut batch),
                None => break,
            }
        }
        if !batch.is_empty() {
            expected = batch.len().max(expected.saturating_sub(1));
            let started = Instant::now();
            run_batch_guarded(&conn, &hub, &mut st, &mut batch);
            last_commit = started.elapsed();
        }
    }
    // Writes that raced the close are answered, not dropped.
    while let Ok(m) = rx.try_recv() {
        if let Msg::Write(f) = m {
            batch.push(f);
        }
    }
    if !batch.is_empty() {
        run_batch_guarded(&conn, &hub, &mut st, &mut batch);
    }
    let _ = conn.execute_batch("PRAGMA optimize");
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Runs a batch; should anything outside the writes themselves panic, the open transaction is
/// rolled back, the caches dropped and the writer carries on with the next batch (the callers
/// of the lost batch see the store as unavailable and may retry).
fn run_batch_guarded(conn: &Connection, hub: &Hub, st: &mut WriterState, batch: &mut Vec<WriteFn>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_batch(conn, hub, st, batch)));
    if let Err(panic) = outcome {
        tracing::error!(panic = %panic_text(&*panic), "the writer panicked in a batch; rolled back, carrying on");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        batch.clear();
        st.queues.clear();
        st.pools.clear();
        st.counts.clear();
        st.outcomes.clear();
    }
}

fn run_batch(conn: &Connection, hub: &Hub, st: &mut WriterState, batch: &mut Vec<WriteFn>) {
    let t0 = Instant::now();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = db_err(e);
        for f in batch.drain(..) {
            f(Err(err.clone()))(Err(err.clone()));
        }
        return;
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut effects = OpCtx::default();
    for f in batch.drain(..) {
        let mut tx = Tx { conn, st: &mut *st, hub, ctx: OpCtx::default() };
        replies.push(f(Ok(&mut tx)));
        let mut ctx = tx.ctx;
        for (q, delta) in ctx.counts.drain(..) {
            for (s, n) in delta.iter().enumerate() {
                if *n != 0 {
                    *st.counts.entry((q.clone(), slot_code(s))).or_insert(0) += n;
                }
            }
        }
        for o in ctx.outcomes.drain(..) {
            *st.outcomes.entry(o).or_insert(0) += 1;
        }
        effects.merge(ctx);
    }
    let t1 = Instant::now();
    let commit = flush(conn, st).and_then(|()| conn.execute_batch("COMMIT").map_err(db_err));
    metrics::histogram!("drove_store_batch_writes", "store" => "sqlite").record(replies.len() as f64);
    metrics::histogram!("drove_store_work_seconds", "store" => "sqlite").record((t1 - t0).as_secs_f64());
    metrics::histogram!("drove_store_commit_seconds", "store" => "sqlite").record(t1.elapsed().as_secs_f64());
    match commit {
        Ok(()) => {
            st.persisted_id = st.next_id;
            st.persisted_lease = st.next_lease;
            for q in &effects.ready {
                hub.queue_ready(q);
            }
            if let Some(at) = effects.scheduled {
                hub.scheduled(at);
            }
            if effects.schedules {
                hub.schedule_written();
            }
            for job in effects.finished {
                hub.job_finished(Arc::new(job));
            }
            for id in effects.unwatched_ends {
                if hub.is_watched(id) {
                    hub.poke_job(id);
                }
            }
            for e in effects.events {
                hub.publish(e);
            }
            for r in replies {
                r(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = replies.len(), "commit failed; the batch is answered with the error");
            let _ = conn.execute_batch("ROLLBACK");
            st.queues.clear();
            st.pools.clear();
            st.counts.clear();
            st.outcomes.clear();
            for r in replies {
                r(Err(e.clone()));
            }
        }
    }
}

/// Writes the batch's count changes and id counters, inside the batch's transaction.
fn flush(conn: &Connection, st: &mut WriterState) -> Result<(), StoreError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(db_err)?;
    for ((q, s), n) in st.counts.drain() {
        if n != 0 {
            upsert.execute(params![q, s, n]).map_err(db_err)?;
        }
    }
    if !st.outcomes.is_empty() {
        let mut outcome = conn
            .prepare_cached(
                "INSERT INTO outcomes (queue, minute, state, partial, kind, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (queue, minute, state, partial, kind) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(db_err)?;
        for ((q, minute, state, partial, kind), n) in st.outcomes.drain() {
            outcome.execute(params![q, minute, state, partial, kind, n]).map_err(db_err)?;
        }
    }
    if st.next_id != st.persisted_id {
        conn.prepare_cached("UPDATE meta SET v = ?1 WHERE k = 'next_id'")
            .and_then(|mut s| s.execute([st.next_id]))
            .map_err(db_err)?;
    }
    if st.next_lease != st.persisted_lease {
        conn.prepare_cached("UPDATE meta SET v = ?1 WHERE k = 'next_lease'")
            .and_then(|mut s| s.execute([st.next_lease]))
            .map_err(db_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        Writer::start(conn, Hub::new()).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
        let w = writer();
        let boom = w.write(|_| -> Result<(), StoreError> { panic!("boom") }).await;
        assert!(matches!(&boom, Err(StoreError::Internal(m)) if m.contains("boom")), "{boom:?}");
        // The writer still commits, and the panicking write left nothing behind.
        let n = w
            .write(|tx| {
                tx.conn.execute("INSERT INTO meta (k, v) VALUES ('probe', 1)", []).map_err(db_err)?;
                Ok(7)
            })
            .await;
        assert_eq!(n.unwrap(), 7);
        w.close().await;
    }

    #[tokio::test]
    async fn a_panic_rolls_back_what_the_write_did() {
        let w = writer();
        let boom = w
            .write(|tx| -> Result<(), StoreError> {
                tx.conn.execute("INSERT INTO meta (k, v) VALUES ('half', 1)", []).map_err(db_err)?;
                panic!("after a write")
            })
            .await;
        assert!(boom.is_err());
        let left: i64 = w
            .write(|tx| {
                tx.conn
                    .query_row("SELECT count(*) FROM meta WHERE k = 'half'", [], |r| r.get(0))
                    .map_err(db_err)
            })
            .await
            .unwrap();
        assert_eq!(left, 0);
        w.close().await;
    }
}
