//! `drove worker`

use std::time::Duration;

use drove_worker::WorkerConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Drove server.
    #[arg(long, env = "DROVE_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    #[arg(long, env = "DROVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also trust these certificates (PEM) for an https:// server (besides the system's roots).
    #[arg(long, env = "DROVE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// The queue to work.
    #[arg(long)]
    pub queue: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Lease to ask for (default: the queue's, 10 s).
    #[arg(long)]
    pub lease_ms: Option<i64>,
    /// On SIGTERM, how long running jobs may take to finish before they are stopped and
    /// released.
    #[arg(long, default_value_t = 30_000)]
    pub grace_ms: u64,
    /// Between SIGTERM and SIGKILL when a child must stop.
    #[arg(long, default_value_t = 5_000)]
    pub kill_grace_ms: u64,
    /// Shown on running jobs (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub otlp: crate::telemetry::OtlpArgs,
    /// The command to run per job, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cfg = WorkerConfig {
        server: args.server,
        token: args.token.filter(|t| !t.is_empty()),
        queue: args.queue,
        concurrency: args.concurrency.max(1),
        command: args.command,
        lease_ms: args.lease_ms,
        grace: Duration::from_millis(args.grace_ms),
        kill_grace: Duration::from_millis(args.kill_grace_ms),
        name: args.name.unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id())),
        supervisor: std::env::current_exe().ok(),
        ca_file: args.ca_file,
    };
    drove_worker::run(cfg, super::shutdown_on_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
