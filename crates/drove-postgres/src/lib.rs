//! `PostgresStore`: Drove's shared store, for many `drove serve` nodes on one PostgreSQL
//! database, with the same semantics as the SQLite store (the conformance suite holds both).
//!
//! Key decision: every invariant that must hold across nodes is enforced inside the database,
//! in one READ COMMITTED transaction per call with `now` taken from the caller: one live job
//! per key is a partial unique index; claims take jobs with `FOR UPDATE SKIP LOCKED`; a queue
//! with a concurrency or rate limit is serialised by locking its row, and a group by locking
//! its row in the derived `groups` table (recomputed, not incremented, after every transition
//! that touches it); ids and lease tokens come from sequences. Locks that are waited for are
//! always taken in one order (jobs, then queues, then groups, each sorted), and the claim,
//! which locks its queue first, takes everything else with SKIP LOCKED, so transitions do not
//! deadlock; should the database still report a deadlock or serialization failure, or a
//! connection drop before COMMIT, the whole transaction runs again after a full-jitter pause,
//! a bounded number of times. A COMMIT that got no answer is never run again blindly: the
//! store asks `pg_xact_status` what became of the transaction and answers accordingly.
//!
//! Counts per queue and state are exact without a hot counter row: each transaction appends
//! its changes to `count_deltas`, readers add the deltas to the compacted `queue_counts` in one
//! statement, and the reaper (which every node runs about once a second) folds deltas into the
//! base with SKIP LOCKED. Counting from the jobs table instead would cost a scan of every
//! finished job kept; a counter row per (queue, state) would make every transition of a queue
//! wait for the previous one's commit.
//!
//! Maintenance (promote, reap, prune, compaction) runs on every node: each takes its rows with
//! SKIP LOCKED and is idempotent, so nodes share the work without a leader to elect or lose.
//! Nodes learn of each other's commits by LISTEN/NOTIFY (see `notify`); the schema is
//! versioned and migrated under an advisory lock at open (see `schema`).
//!
//! This crate must not depend on another PostgreSQL driver, on any SQLite binding, or on SQL
//! checked at compile time against a live database.

mod db;
mod error;
mod notify;
mod ops;
mod read;
mod row;
mod schema;
#[cfg(test)]
mod testdb;
pub mod tls;
mod tx;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use drove_core::queue::{PoolPatch, QueuePatch};
use drove_core::{Job, JobId, Millis, ValidationError};
use drove_store::schedules::{ScheduleInfo, ScheduleSpec};
use drove_store::{
    ClaimOutcome, ClaimRequest, Finish, Heartbeat, HeartbeatAck, Hub, JobFilter, JobPage, LimitScope, NewJob,
    OutcomeCount, PoolInfo, QueueInfo, RunSample, Store, StoreError, Submitted,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::db::{Shared, TxFuture};
use crate::error::{Verdict, db_verdict};
use crate::schema::MigrateError;

/// The schema version this binary migrates to.
pub const SCHEMA_VERSION: i32 = schema::MIGRATIONS[schema::MIGRATIONS.len() - 1].0;

/// The schema every object lives in unless the options name another.
pub const DEFAULT_SCHEMA: &str = "drove";

/// Connections per node when the options do not say: four per core, at least 8 and at most 32.
/// Transitions hold a connection only for their transaction (a few round trips and a commit),
/// so a small pool serves many concurrent callers; on 2 cores, 8 connections did 3,479
/// one-by-one submits/s from 8 producers against 2,820 with 4, and 16 added nothing
/// (W1, median of 3 paired runs).
pub fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 32)
}

#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database` (or the key=value form). TLS is not
    /// supported: `sslmode=require` fails to connect.
    pub url: String,
    /// The schema holding every object of the store: `[a-z_][a-z0-9_]*`, at most 50 bytes.
    pub schema: String,
    /// Pooled connections (each store instance also keeps one for LISTEN/NOTIFY).
    pub pool_size: usize,
    /// The largest payload, result or checkpoint accepted, in bytes.
    pub max_payload: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Apply pending migrations when opening (otherwise run [`migrate`] first).
    pub migrate: bool,
}

/// Shows the options with the URL's password hidden (options end up in logs).
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("max_payload", &self.max_payload)
            .field("connect_timeout", &self.connect_timeout)
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`; other forms are hidden
/// whole when they name a password.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((auth, host)) = rest.rsplit_once('@')
    {
        let user = auth.split_once(':').map_or(auth, |(u, _)| u);
        let hidden = if auth.contains(':') { format!("{user}:***") } else { user.to_owned() };
        return format!("{scheme}://{hidden}@{host}");
    }
    if url.contains("password") { "(hidden: it names a password)".to_owned() } else { url.to_owned() }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: default_pool_size(),
            max_payload: drove_store::request::DEFAULT_MAX_PAYLOAD,
            connect_timeout: Duration::from_secs(5),
            migrate: true,
        }
    }

    pub fn with_schema(mut self, schema: impl Into<String>) -> PostgresOptions {
        self.schema = schema.into();
        self
    }

    /// The driver's configuration for one role of connection (`app`: pool, listener, ...).
    fn pg_config(&self, app: &str) -> Result<tokio_postgres::Config, StoreError> {
        let s = self.schema.as_bytes();
        let schema_ok = !s.is_empty()
            && s.len() <= 50
            && (s[0].is_ascii_lowercase() || s[0] == b'_')
            && s.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !schema_ok {
            return Err(ValidationError::new(
                "schema",
                "must match [a-z_][a-z0-9_]* and be at most 50 bytes",
            )
            .into());
        }
        let settings = tls::split(&self.url).map_err(|m| ValidationError::new("database_url", m))?;
        let mut config: tokio_postgres::Config = settings
            .rest
            .parse()
            .map_err(|e| ValidationError::new("database_url", format!("is not a PostgreSQL URL: {e}")))?;
        config.ssl_mode(settings.mode.ssl_mode());
        // Every connection resolves names in the store's schema, and runs READ COMMITTED
        // whatever the server's default: the locking design relies on each statement seeing
        // what committed before it started (a lock waited for, then a fresh read). A session
        // left idle inside a transaction (its client vanished) is ended by the server rather
        // than holding its locks, and keepalives notice a dead peer within about a minute.
        let mut options = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        options.push_str(&format!(
            "-c search_path={} -c default_transaction_isolation=read\\ committed \
             -c idle_in_transaction_session_timeout=60000",
            self.schema
        ));
        config
            .options(&options)
            .application_name(format!("{app}:{}", self.schema))
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        Ok(config)
    }
}

impl PostgresOptions {
    /// The TLS connector every connection uses, from the URL's `sslmode` and `sslrootcert`
    /// (see [`tls`]).
    fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let settings = tls::split(&self.url).map_err(|m| ValidationError::new("database_url", m))?;
        Ok(tls::connector(&settings).map_err(|m| ValidationError::new("database_url", m))?)
    }
}

fn migrate_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Db(e) => match db_verdict(&e) {
            Verdict::Retry(m) => StoreError::Unavailable(m),
            _ => StoreError::Internal(format!("migration failed: {}", error::describe(&e))),
        },
        other => StoreError::Internal(other.to_string()),
    }
}

/// Brings the schema of `opts` up to date (what `drove migrate` runs). Safe to run from many
/// nodes at once: they take turns under an advisory lock, and each version is applied once.
/// Returns the versions this call applied.
pub async fn migrate(opts: &PostgresOptions) -> Result<Vec<i32>, StoreError> {
    let config = opts.pg_config("drove-migrate")?;
    schema::migrate(&config, opts.connector()?, &opts.schema).await.map_err(migrate_error)
}

/// Drops the schema of `opts` and everything in it (benchmarks and tests use a schema per run).
pub async fn drop_schema(opts: &PostgresOptions) -> Result<(), StoreError> {
    let config = opts.pg_config("drove-drop")?;
    let (client, conn) = config
        .connect(opts.connector()?)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?;
    let task = tokio::spawn(conn);
    let sql = format!("SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE", opts.schema);
    let result = client.batch_execute(&sql).await.map_err(|e| StoreError::Unavailable(e.to_string()));
    drop(client);
    let _ = task.await;
    result
}

pub struct PostgresStore {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects, migrates (unless `opts.migrate` is false), and starts the listener; returns
    /// once the listener is in place, so no commit made after `open` goes unheard.
    pub async fn open(opts: PostgresOptions) -> Result<PostgresStore, StoreError> {
        if opts.migrate {
            migrate(&opts).await?;
        }
        let connector = opts.connector()?;
        let manager = Manager::from_config(
            opts.pg_config("drove")?,
            connector.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(opts.connect_timeout))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { pool, hub: Hub::new(), max_payload: opts.max_payload, outbox });
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = notify::Listener {
            config: opts.pg_config("drove-listener")?,
            tls: connector,
            channel: format!("drove:{}", opts.schema),
            instance: format!("{:016x}", fastrand::u64(..)),
            shared: Arc::clone(&shared),
            outbox: outbox_rx,
            shutdown: shutdown.clone(),
            ready: Some(ready_tx),
        };
        let handle = tokio::spawn(listener.run());
        let store = PostgresStore { shared, shutdown, listener: Mutex::new(Some(handle)) };
        match tokio::time::timeout(opts.connect_timeout + Duration::from_secs(5), ready_rx).await {
            Ok(Ok(())) => Ok(store),
            _ => {
                store.close().await;
                Err(StoreError::Unavailable("the notification listener could not connect".into()))
            }
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.shared.pool.close();
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn max_payload(&self) -> usize {
        self.shared.max_payload
    }

    async fn submit(&self, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Submitted>, StoreError> {
        let jobs = Arc::new(jobs);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let jobs = Arc::clone(&jobs);
                Box::pin(async move { ops::submit::submit(tx, &jobs).await })
            })
            .await
    }

    async fn claim(&self, req: ClaimRequest, now: Millis) -> Result<ClaimOutcome, StoreError> {
        let req = Arc::new(req);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let req = Arc::clone(&req);
                Box::pin(async move { ops::claim::claim(tx, &req).await })
            })
            .await
    }

    async fn heartbeat(&self, hb: Heartbeat, now: Millis) -> Result<HeartbeatAck, StoreError> {
        let hb = Arc::new(hb);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let hb = Arc::clone(&hb);
                Box::pin(async move { ops::finish::heartbeat(tx, &hb).await })
            })
            .await
    }

    async fn finish(
        &self,
        items: Vec<Finish>,
        now: Millis,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let items = Arc::new(items);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let items = Arc::clone(&items);
                Box::pin(async move { ops::finish::finish(tx, &items).await })
            })
            .await
    }

    async fn cancel(&self, id: JobId, now: Millis) -> Result<Job, StoreError> {
        self.shared.write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::finish::cancel(tx, id)) }).await
    }

    async fn retry(&self, id: JobId, now: Millis) -> Result<Job, StoreError> {
        self.shared.write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::finish::retry(tx, id)) }).await
    }

    async fn promote(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::maintain::promote(tx, limit)) })
            .await
    }

    async fn reap(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        let reaped = self
            .shared
            .write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::maintain::reap(tx, limit)) })
            .await?;
        // The reaper runs on every node about once a second: the natural place to fold count
        // deltas. It is housekeeping, so a failure is logged, not returned.
        if let Err(e) = self
            .shared
            .write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::maintain::compact_counts(tx)) })
            .await
        {
            tracing::warn!(error = %e, "cannot compact queue counts");
        }
        if let Err(e) = self
            .shared
            .write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::maintain::compact_outcomes(tx)) })
            .await
        {
            tracing::warn!(error = %e, "cannot compact outcome counts");
        }
        Ok(reaped)
    }

    async fn prune(&self, now: Millis, retention_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                Box::pin(ops::maintain::prune(tx, retention_ms, limit))
            })
            .await
    }

    async fn next_due(&self) -> Result<(Option<Millis>, Option<Millis>), StoreError> {
        self.shared.read(|c| -> TxFuture<'_, _> { Box::pin(read::next_due(c)) }).await
    }

    async fn put_queue(&self, name: &str, patch: QueuePatch, now: Millis) -> Result<QueueInfo, StoreError> {
        let name: Arc<str> = name.into();
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let (name, patch) = (Arc::clone(&name), patch.clone());
                Box::pin(async move { ops::admin::put_queue(tx, &name, patch).await })
            })
            .await
    }

    async fn get_queue(&self, name: &str, now: Millis) -> Result<Option<QueueInfo>, StoreError> {
        if !drove_store::could_be_queue_name(name) {
            return Ok(None);
        }
        let name: Arc<str> = name.into();
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let name = Arc::clone(&name);
                Box::pin(async move { read::get_queue(c, &name, now).await })
            })
            .await
    }

    async fn list_queues(&self, now: Millis) -> Result<Vec<QueueInfo>, StoreError> {
        self.shared.read(move |c| -> TxFuture<'_, _> { Box::pin(read::list_queues(c, now)) }).await
    }

    async fn put_pool(&self, name: &str, patch: PoolPatch, now: Millis) -> Result<PoolInfo, StoreError> {
        let name: Arc<str> = name.into();
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let (name, patch) = (Arc::clone(&name), patch.clone());
                Box::pin(async move { ops::admin::put_pool(tx, &name, patch).await })
            })
            .await
    }

    async fn get_pool(&self, name: &str) -> Result<Option<PoolInfo>, StoreError> {
        if !drove_store::could_be_queue_name(name) {
            return Ok(None);
        }
        let name: Arc<str> = name.into();
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let name = Arc::clone(&name);
                Box::pin(async move { read::get_pool(c, &name).await })
            })
            .await
    }

    async fn set_limit(&self, scope: LimitScope, limit: Option<i64>, now: Millis) -> Result<(), StoreError> {
        let scope = Arc::new(scope);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let scope = Arc::clone(&scope);
                Box::pin(async move { ops::admin::set_limit(tx, &scope, limit).await })
            })
            .await
    }

    async fn set_offline_limit(&self, pool: &str, limit: Option<i64>, now: Millis) -> Result<(), StoreError> {
        let pool: Arc<str> = pool.into();
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let pool = Arc::clone(&pool);
                Box::pin(async move { ops::admin::set_offline_limit(tx, &pool, limit).await })
            })
            .await
    }

    async fn put_schedule(
        &self,
        name: &str,
        spec: ScheduleSpec,
        now: Millis,
    ) -> Result<(ScheduleInfo, bool), StoreError> {
        drove_core::name::check_queue_name("name", name)?;
        spec.validate(self.shared.max_payload)?;
        let name: Arc<str> = name.into();
        let spec = Arc::new(spec);
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let (name, spec) = (Arc::clone(&name), Arc::clone(&spec));
                Box::pin(async move { ops::schedule::put(tx, &name, &spec).await })
            })
            .await
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleInfo>, StoreError> {
        let name: Arc<str> = name.into();
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let name = Arc::clone(&name);
                Box::pin(async move { ops::schedule::get(c, &name).await })
            })
            .await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.shared.read(move |c| -> TxFuture<'_, _> { Box::pin(ops::schedule::list(c)) }).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let name: Arc<str> = name.into();
        self.shared
            .write(drove_core::Millis(0), move |tx| -> TxFuture<'_, _> {
                let name = Arc::clone(&name);
                Box::pin(async move { ops::schedule::delete(tx, &name).await })
            })
            .await
    }

    async fn run_schedule(&self, name: &str, now: Millis) -> Result<Submitted, StoreError> {
        let name: Arc<str> = name.into();
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> {
                let name = Arc::clone(&name);
                Box::pin(async move { ops::schedule::run(tx, &name).await })
            })
            .await
    }

    async fn fire_schedules(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.shared
            .write(now, move |tx| -> TxFuture<'_, _> { Box::pin(ops::schedule::fire(tx, limit)) })
            .await
    }

    async fn next_tick(&self) -> Result<Option<Millis>, StoreError> {
        self.shared.read(move |c| -> TxFuture<'_, _> { Box::pin(ops::schedule::next_tick(c)) }).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.shared.read(move |c| -> TxFuture<'_, _> { Box::pin(read::get_job(c, id)) }).await
    }

    async fn list_jobs(
        &self,
        filter: JobFilter,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<JobPage, StoreError> {
        filter.validate()?;
        let filter = Arc::new(filter);
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let filter = Arc::clone(&filter);
                Box::pin(async move { read::list_jobs(c, &filter, limit, before).await })
            })
            .await
    }

    async fn recent_runs(
        &self,
        queue: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<RunSample>, StoreError> {
        let queue: Arc<str> = queue.into();
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let queue = Arc::clone(&queue);
                Box::pin(async move { read::recent_runs(c, &queue, since, limit).await })
            })
            .await
    }

    async fn outcomes(&self, since: Millis) -> Result<Vec<OutcomeCount>, StoreError> {
        self.shared.read(move |c| -> TxFuture<'_, _> { Box::pin(read::outcomes(c, since)) }).await
    }

    async fn ready(&self, queue: &str, up_to: i64) -> Result<Option<i64>, StoreError> {
        let queue: Arc<str> = queue.into();
        self.shared
            .read(move |c| -> TxFuture<'_, _> {
                let queue = Arc::clone(&queue);
                Box::pin(async move { read::ready(c, &queue, up_to).await })
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.shared.read(|c| -> TxFuture<'_, _> { Box::pin(read::ping(c)) }).await
    }

    async fn close(&self) {
        self.shutdown.cancel();
        let handle = self.listener.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            // The listener sends what committed before the close, then stops.
            let _ = h.await;
        }
        self.shared.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_hide_the_password_and_check_the_schema() {
        let opts = PostgresOptions::new("postgres://drove:s3cret@db:5432/jobs");
        let shown = format!("{opts:?}");
        assert!(shown.contains("postgres://drove:***@db:5432/jobs") && !shown.contains("s3cret"), "{shown}");
        assert!(!format!("{:?}", PostgresOptions::new("host=db password=s3cret")).contains("s3cret"));
        for bad in ["", "Drove", "1abc", "a-b", &"x".repeat(51)] {
            let err = PostgresOptions::new("postgres://db/x").with_schema(bad).pg_config("t").unwrap_err();
            assert!(matches!(err, StoreError::Invalid(ref v) if v.field == "schema"), "{bad}: {err:?}");
        }
        assert!(PostgresOptions::new("postgres://db/x").with_schema("drove_2").pg_config("t").is_ok());
        let err = PostgresOptions::new("postgres://db:notaport/x").pg_config("t").unwrap_err();
        assert!(matches!(err, StoreError::Invalid(ref v) if v.field == "database_url"), "{err:?}");
    }
}
