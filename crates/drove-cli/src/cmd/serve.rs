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
    /// Address to listen on (loopback by default). Beyond loopback a token is required (or
    /// --insecure-no-token).
    #[arg(long, env = "DROVE_BIND", default_value = "127.0.0.1:7070")]
    pub bind: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every endpoint but /healthz and /readyz.
    #[arg(long, env = "DROVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen beyond loopback without a token: anyone who reaches the port may submit, read and
    /// cancel jobs and change queues. For networks where something in front does that checking.
    #[arg(long)]
    pub insecure_no_token: bool,
    /// Without a token, also answer requests addressed to this host name (repeatable; loopback
    /// names and the addresses listened on are always answered). Guards against DNS rebinding.
    #[arg(long = "allowed-host", env = "DROVE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// The longest any long poll is held, in ms (at most 60,000, the API's maximum): lower it
    /// behind a proxy that cuts idle requests sooner.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub max_wait_ms: u64,
    /// How long a connection may take to send a request's head and how long an idle keep-alive
    /// connection is kept, in ms; a request body may stall this long too, at most 30 s.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub idle_timeout_ms: u64,
    /// Most connections open at once (default: from the open-file limit, at most 100,000);
    /// past it new connections wait until one closes.
    #[arg(long)]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    pub otlp: crate::telemetry::OtlpArgs,
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
    /// Serve HTTPS: the certificate chain, PEM (the server's certificate first). Needs --tls-key.
    #[arg(long, env = "DROVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the certificate's private key, PEM. Needs --tls-cert.
    #[arg(long, env = "DROVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// How long in-flight requests may take to finish after SIGTERM (long polls answer at once).
const SHUTDOWN_HTTP_GRACE: Duration = Duration::from_secs(5);
/// How long the services and the store may take to stop after that.
const SHUTDOWN_STORE_GRACE: Duration = Duration::from_secs(3);

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

/// Checks the token and the address together: refuses what would expose a server to anyone
/// by mistake.
fn check_exposure(args: &Args) -> anyhow::Result<Option<String>> {
    let token = match args.token.as_deref() {
        Some("") => anyhow::bail!(
            "the token is empty (--token or DROVE_TOKEN): an empty token would turn authentication off; \
             unset it to run without a token on loopback, or give a real one"
        ),
        Some(t) => Some(t.to_owned()),
        None => None,
    };
    if token.is_none() && !args.bind.ip().is_loopback() {
        if !args.insecure_no_token {
            anyhow::bail!(
                "refusing to listen on {} without a token: anyone who reaches it could submit, read and \
                 cancel jobs. Give --token (or DROVE_TOKEN), bind to loopback, or say --insecure-no-token",
                args.bind
            );
        }
        tracing::warn!(bind = %args.bind, "listening beyond loopback WITHOUT a token (--insecure-no-token)");
    }
    Ok(token)
}

/// Raises the soft open-file limit to the hard one (the common soft limit, 1,024, is reached by
/// a few hundred idle clients), and returns the limit in force.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            1_024
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let token = check_exposure(&args)?;
    let nofile = raise_nofile();
    // Files besides sockets: the database and its WAL, readers, the PostgreSQL pool, logs.
    let max_connections = args
        .max_connections
        .unwrap_or_else(|| usize::try_from(nofile.saturating_sub(256).clamp(64, 100_000)).unwrap_or(100_000));
    let store = open_store(&args).await?;
    let config = EngineConfig {
        retention: Duration::from_secs_f64(args.retention_days.max(0.0) * 86_400.0),
        ..Default::default()
    };
    let engine = Engine::start(Arc::clone(&store), config);
    let mut http = HttpConfig::for_payload(args.max_payload);
    http.token = token;
    http.max_wait = Duration::from_millis(args.max_wait_ms);
    http.body_stall = Duration::from_millis(args.idle_timeout_ms.min(30_000));
    http.hosts = drove_http::HostPolicy {
        names: args.allowed_hosts.iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect(),
        any_ip: args.bind.ip().is_unspecified(),
        ips: vec![args.bind.ip()],
    };
    let app = drove_http::app(AppState::new(engine.clone(), http));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(drove_http::tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = listen(args.bind).with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = store.backend(), max_connections, "listening");
    // One line on stdout for scripts and tests that start the server on port 0.
    println!("drove listening on {scheme}://{addr}");

    let stop = super::shutdown_on_signal();
    let engine_stop = engine.clone();
    let stop2 = stop.clone();
    // On the signal, long polls answer at once (202 / empty claims) so in-flight requests end.
    tokio::spawn(async move {
        stop2.cancelled().await;
        engine_stop.shutdown_token().cancel();
    });
    let serve = drove_http::server::ServeConfig {
        max_connections,
        shutdown_grace: SHUTDOWN_HTTP_GRACE,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        tls,
    };
    drove_http::server::serve(listener, app, serve, stop.clone()).await;
    // Everything after the signal is bounded: a store that is down or hung must not keep the
    // node from exiting (acknowledged work is already committed; nothing is lost by leaving).
    let close = async {
        engine.shutdown().await;
        store.close().await;
    };
    if tokio::time::timeout(SHUTDOWN_STORE_GRACE, close).await.is_err() {
        tracing::warn!("the store did not close in time; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Binds with a listen backlog of 4,096 (the kernel caps it at `net.core.somaxconn`). Tokio's
/// `TcpListener::bind` asks for 1,024 on some platforms and 128 on others; at 128, a thousand
/// clients connecting at once overflowed the queue here and some of their connections were
/// never accepted, with no error on either side (bench/connections).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4_096)
}
