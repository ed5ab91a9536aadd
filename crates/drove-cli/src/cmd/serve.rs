//! `drove serve`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drove_engine::{Engine, EngineConfig};
use drove_http::{AppState, HttpConfig};
use drove_sqlite::{Durability, SqliteOptions, SqliteStore};
use drove_store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The embedded SQLite database file.
    #[arg(long, env = "DROVE_DB", default_value = "drove.db")]
    pub db: PathBuf,
    /// Use PostgreSQL instead of SQLite (postgres://...): many nodes may share it.
    #[arg(long, env = "DROVE_DATABASE_URL", conflicts_with = "db")]
    pub database_url: Option<String>,
    /// PostgreSQL: the schema holding Drove's tables.
    #[arg(long, env = "DROVE_SCHEMA", default_value = drove_postgres::DEFAULT_SCHEMA)]
    pub schema: String,
    /// PostgreSQL: pooled connections (default: 4 per core, 8 to 32).
    #[arg(long)]
    pub pool_size: Option<usize>,
    /// Address to listen on (loopback by default).
    #[arg(long, env = "DROVE_BIND", default_value = "127.0.0.1:7070")]
    pub bind: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every endpoint but /healthz and /readyz.
    #[arg(long, env = "DROVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest payload, result or checkpoint, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_payload: usize,
    /// SQLite only: acknowledge writes before they are fsynced (synchronous=NORMAL). Survives
    /// any process crash, but a power loss or kernel crash may lose the last moments of
    /// acknowledged jobs.
    #[arg(long)]
    pub relaxed_durability: bool,
    /// SQLite only: the writer's page cache, MiB (taken as pages are read, up to this bound).
    #[arg(long, default_value_t = 64)]
    pub sqlite_cache_mib: u64,
    /// Delete finished jobs this many days after they ended.
    #[arg(long, default_value_t = 7.0)]
    pub retention_days: f64,
}

pub async fn open_store(args: &Args) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &args.database_url {
        let mut opts = drove_postgres::PostgresOptions::new(url).with_schema(&args.schema);
        opts.max_payload = args.max_payload;
        if let Some(n) = args.pool_size {
            opts.pool_size = n.max(1);
        }
        let store =
            drove_postgres::PostgresStore::open(opts).await.context("opening the PostgreSQL store")?;
        return Ok(Arc::new(store));
    }
    let mut opts = SqliteOptions::new(&args.db);
    opts.max_payload = args.max_payload;
    opts.cache_mib = args.sqlite_cache_mib;
    if args.relaxed_durability {
        opts.durability = Durability::Relaxed;
    }
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(opts))
        .await?
        .with_context(|| format!("opening {}", args.db.display()))?;
    Ok(Arc::new(store))
}

pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = open_store(&args).await?;
    let config = EngineConfig {
        retention: Duration::from_secs_f64(args.retention_days.max(0.0) * 86_400.0),
        ..Default::default()
    };
    let engine = Engine::start(Arc::clone(&store), config);
    let mut http = HttpConfig::for_payload(args.max_payload);
    http.token = args.token.clone().filter(|t| !t.is_empty());
    let app = drove_http::app(AppState::new(engine.clone(), http));
    let listener =
        tokio::net::TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = store.backend(), "listening");
    // One line on stdout for scripts and tests that start the server on port 0.
    println!("drove listening on http://{addr}");

    let stop = super::shutdown_on_signal();
    let engine_stop = engine.clone();
    let stop2 = stop.clone();
    // On the signal, long polls answer at once (202 / empty claims) so in-flight requests end.
    tokio::spawn(async move {
        stop2.cancelled().await;
        engine_stop.shutdown_token().cancel();
    });
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await?;
    engine.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(std::process::ExitCode::SUCCESS)
}
