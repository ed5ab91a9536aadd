//! `SqliteStore`: Drove's embedded store, one SQLite file in WAL mode.
//!
//! Key decision: a single writer thread owns the only write connection and commits every write
//! that arrived while it was busy in one transaction (group commit), each write in its own
//! savepoint; reads run on separate read-only connections and never wait for it. With
//! `synchronous=FULL` (the default) an acknowledged write has been fsynced.
//!
//! One process owns a database file at a time: `open` takes an exclusive lock on `PATH-lock`
//! and fails if another Drove process holds it. This crate must not depend on tokio beyond
//! channels and `spawn_blocking`, nor on any other SQLite binding.

/// A SQL string built once per call site from constants (`JOB_COLS`, `END_RUN`): hot paths
/// neither format nor allocate it per call.
macro_rules! sql {
    ($($arg:tt)*) => {{
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SQL.get_or_init(|| format!($($arg)*)).as_str()
    }};
}

mod ops;
mod read;
mod row;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use drove_core::queue::{PoolPatch, QueuePatch};
use drove_core::{Job, JobId, Millis};
use drove_store::schedules::{ScheduleInfo, ScheduleSpec};
use drove_store::{
    ClaimOutcome, ClaimRequest, Finish, Heartbeat, HeartbeatAck, Hub, JobFilter, JobPage, LimitScope, NewJob,
    OutcomeCount, PoolInfo, QueueInfo, RunSample, Store, StoreError, Submitted,
};
use rusqlite::Connection;

use crate::read::Readers;
use crate::row::db_err;
use crate::writer::Writer;

/// What an acknowledgement promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every acknowledged write has been fsynced; it survives a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: acknowledged writes survive a crash of any process, but the last
    /// transactions before a power loss or kernel crash may be lost. Much faster one-by-one.
    Relaxed,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    pub max_payload: usize,
    /// The write connection's page cache, MiB (default 64). Memory is taken as pages are
    /// read, up to this bound.
    pub cache_mib: u64,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions {
            path: path.into(),
            durability: Durability::Full,
            max_payload: drove_store::request::DEFAULT_MAX_PAYLOAD,
            cache_mib: 64,
        }
    }
}

pub struct SqliteStore {
    hub: Arc<Hub>,
    writer: Writer,
    readers: Arc<Readers>,
    max_payload: usize,
    /// Held for the store's life: the exclusive claim on the database file.
    _lock: File,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-lock");
    PathBuf::from(p)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `opts.path` and starts its writer.
    pub fn open(opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(&opts.path))
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", opts.path.display())))?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!("{} is in use by another Drove process", opts.path.display()))
        })?;
        let mut conn = Connection::open(&opts.path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        let sync = match opts.durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(db_err)?;
        // Every write runs in a SAVEPOINT; its sub-journal belongs in memory, not in a temp
        // file written page by page (measured: the largest cost of a write otherwise).
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(db_err)?;
        // The writer's page cache (SQLite's default is 2 MiB). Claims, completions and inserts
        // walk the same index pages over and over; with the default those pages fall out and
        // come back by `pread` (measured: W2 in process +13%, median of 6 paired runs).
        let cache_kib = i64::try_from(opts.cache_mib.saturating_mul(1024)).unwrap_or(i64::MAX);
        conn.pragma_update(None, "cache_size", -cache_kib).map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(128);
        schema::migrate(&mut conn).map_err(db_err)?;
        // Statistics for the planner, refreshed only where they are missing or stale.
        conn.execute_batch("PRAGMA optimize = 0x10002").map_err(db_err)?;
        let hub = Hub::new();
        let writer = Writer::start(conn, Arc::clone(&hub))?;
        Ok(SqliteStore {
            hub,
            writer,
            readers: Readers::new(opts.path.clone(), 4),
            max_payload: opts.max_payload,
            _lock: lock,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    async fn submit(&self, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Submitted>, StoreError> {
        drove_store::validate_submit(&jobs, self.max_payload)?;
        self.writer.write(move |tx| ops::submit::submit(tx, jobs, now)).await
    }

    async fn claim(&self, req: ClaimRequest, now: Millis) -> Result<ClaimOutcome, StoreError> {
        self.writer.write(move |tx| ops::claim::claim(tx, req, now)).await
    }

    async fn ready(&self, queue: &str, up_to: i64) -> Result<Option<i64>, StoreError> {
        let queue = queue.to_owned();
        self.readers.with(move |c| read::ready(c, &queue, up_to)).await
    }

    async fn heartbeat(&self, hb: Heartbeat, now: Millis) -> Result<HeartbeatAck, StoreError> {
        hb.validate(self.max_payload)?;
        self.writer.write(move |tx| ops::finish::heartbeat(tx, hb, now)).await
    }

    async fn finish(
        &self,
        items: Vec<Finish>,
        now: Millis,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        // Checked here, on the caller's task: the writer thread only applies them.
        let max = self.max_payload;
        let items: Vec<Result<Finish, StoreError>> =
            items.into_iter().map(|f| f.validate(max).map(|()| f).map_err(StoreError::from)).collect();
        self.writer.write(move |tx| ops::finish::finish_many(tx, items, now)).await
    }

    async fn cancel(&self, id: JobId, now: Millis) -> Result<Job, StoreError> {
        self.writer.write(move |tx| ops::finish::cancel(tx, id, now)).await
    }

    async fn retry(&self, id: JobId, now: Millis) -> Result<Job, StoreError> {
        self.writer.write(move |tx| ops::finish::retry(tx, id, now)).await
    }

    async fn promote(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.writer.write(move |tx| ops::maintain::promote(tx, now, limit)).await
    }

    async fn reap(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.writer.write(move |tx| ops::maintain::reap(tx, now, limit)).await
    }

    async fn prune(&self, now: Millis, retention_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.writer.write(move |tx| ops::maintain::prune(tx, now, retention_ms, limit)).await
    }

    async fn next_due(&self) -> Result<(Option<Millis>, Option<Millis>), StoreError> {
        self.readers.with(read::next_due).await
    }

    async fn put_queue(&self, name: &str, patch: QueuePatch, now: Millis) -> Result<QueueInfo, StoreError> {
        let name = name.to_owned();
        self.writer.write(move |tx| ops::admin::put_queue(tx, &name, patch, now)).await
    }

    async fn get_queue(&self, name: &str, now: Millis) -> Result<Option<QueueInfo>, StoreError> {
        if !drove_store::could_be_queue_name(name) {
            return Ok(None);
        }
        let name = name.to_owned();
        self.readers.with(move |c| read::get_queue(c, &name, now)).await
    }

    async fn list_queues(&self, now: Millis) -> Result<Vec<QueueInfo>, StoreError> {
        self.readers.with(move |c| read::list_queues(c, now)).await
    }

    async fn put_pool(&self, name: &str, patch: PoolPatch, _now: Millis) -> Result<PoolInfo, StoreError> {
        let name = name.to_owned();
        self.writer.write(move |tx| ops::admin::put_pool(tx, &name, patch)).await
    }

    async fn get_pool(&self, name: &str) -> Result<Option<PoolInfo>, StoreError> {
        if !drove_store::could_be_queue_name(name) {
            return Ok(None);
        }
        let name = name.to_owned();
        self.readers.with(move |c| read::get_pool(c, &name)).await
    }

    async fn set_limit(&self, scope: LimitScope, limit: Option<i64>, now: Millis) -> Result<(), StoreError> {
        self.writer.write(move |tx| ops::admin::set_limit(tx, scope, limit, now)).await
    }

    async fn set_offline_limit(
        &self,
        pool: &str,
        limit: Option<i64>,
        _now: Millis,
    ) -> Result<(), StoreError> {
        let pool = pool.to_owned();
        self.writer.write(move |tx| ops::admin::set_offline_limit(tx, &pool, limit)).await
    }

    async fn put_schedule(
        &self,
        name: &str,
        spec: ScheduleSpec,
        now: Millis,
    ) -> Result<(ScheduleInfo, bool), StoreError> {
        drove_core::name::check_queue_name("name", name)?;
        spec.validate(self.max_payload)?;
        let name = name.to_owned();
        self.writer.write(move |tx| ops::schedule::put(tx, &name, spec, now)).await
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleInfo>, StoreError> {
        let name = name.to_owned();
        self.readers.with(move |c| ops::schedule::get(c, &name)).await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.readers.with(ops::schedule::list).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer.write(move |tx| ops::schedule::delete(tx, &name)).await
    }

    async fn run_schedule(&self, name: &str, now: Millis) -> Result<Submitted, StoreError> {
        let name = name.to_owned();
        self.writer.write(move |tx| ops::schedule::run(tx, &name, now)).await
    }

    async fn fire_schedules(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.writer.write(move |tx| ops::schedule::fire(tx, now, limit)).await
    }

    async fn next_tick(&self) -> Result<Option<Millis>, StoreError> {
        self.readers.with(ops::schedule::next_tick).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.readers.with(move |c| read::get_job(c, id)).await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<JobPage, StoreError> {
        filter.validate()?;
        self.readers.with(move |c| read::list_jobs(c, &filter, limit, before)).await
    }

    async fn recent_runs(
        &self,
        queue: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<RunSample>, StoreError> {
        let queue = queue.to_owned();
        self.readers.with(move |c| read::recent_runs(c, &queue, since, limit)).await
    }

    /// Reads, and proves the writer thread is alive and can commit: a write that changes
    /// nothing goes through a whole batch (no fsync, as nothing is written).
    async fn outcomes(&self, since: Millis) -> Result<Vec<OutcomeCount>, StoreError> {
        self.readers.with(move |c| read::outcomes(c, since)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers.with(read::ping).await?;
        self.writer.write(|_| Ok(())).await
    }

    async fn close(&self) {
        self.writer.close().await;
    }
}
