//! Drove for Rust programs: open an embedded store, start the engine, run handlers in
//! process, submit and await jobs.
//!
//! ```no_run
//! use std::time::Duration;
//! use drove::{Engine, EngineConfig, NewJob, Runtime, WorkerOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = drove::open_sqlite("drove.db")?;
//! let runtime = Runtime::new(engine.clone())
//!     .handle("emails", WorkerOptions::concurrency(8), |ctx: drove::JobContext| async move {
//!         let to: String = ctx.payload()?;
//!         Ok(serde_json::json!({ "sent_to": to }))
//!     })
//!     .start();
//! let payload = serde_json::value::to_raw_value(&"a@example.com")?;
//! let job = engine.submit(vec![NewJob::new("emails", payload).with_key("welcome:42")]).await?;
//! let done = engine.wait_job(job[0].job.id, Duration::from_secs(30)).await?;
//! runtime.shutdown(Duration::from_secs(10)).await;
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

pub use drove_core::{ErrorKind, Job, JobId, JobState, Millis, OnConflict, RawJson};
pub use drove_engine::{Engine, EngineConfig, Fail, JobContext, Runtime, RuntimeHandle, WorkerOptions};
pub use drove_sqlite::{Durability, SqliteOptions, SqliteStore};
pub use drove_store::{NewJob, Store, StoreError};

#[cfg(feature = "postgres")]
pub use drove_postgres::{PostgresOptions, PostgresStore, drop_schema as drop_postgres_schema};

/// Connects to PostgreSQL (`PostgresOptions::new("postgres://user@host/db")`, schema `drove`
/// unless `with_schema` says otherwise), brings Drove's schema up to date and starts the engine.
/// Many processes may open the same database and schema: they share its jobs as the nodes of
/// `drove serve` do. Needs the `postgres` feature.
#[cfg(feature = "postgres")]
pub async fn open_postgres(opts: PostgresOptions) -> Result<Engine, StoreError> {
    let store = PostgresStore::open(opts).await?;
    Ok(Engine::start(Arc::new(store), EngineConfig::default()))
}

/// Opens (or creates) an embedded store at `path` in durable mode and starts its engine.
pub fn open_sqlite(path: impl AsRef<Path>) -> Result<Engine, StoreError> {
    let store = SqliteStore::open(SqliteOptions::new(path.as_ref()))?;
    Ok(Engine::start(Arc::new(store), EngineConfig::default()))
}
