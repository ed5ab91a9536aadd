//! The `drove` binary. Arguments are parsed into typed commands here; each command lives in
//! `cmd/` and gets ready-built objects. `anyhow` is used only at this edge.

mod cmd;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "drove", version, about = "Durable jobs: a server, remote workers and a CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API, dashboard, scheduler) on an embedded SQLite file or PostgreSQL.
    Serve(cmd::serve::Args),
    /// Run COMMAND once per job of a queue (payload on stdin; see docs/API.md, "The drove worker
    /// child protocol").
    Worker(cmd::worker::Args),
    /// Submit a job (with --wait: wait for it and print its result).
    Submit(cmd::client::SubmitArgs),
    /// List jobs, newest first.
    Jobs(cmd::client::JobsArgs),
    /// List queues with their counts and limits.
    Queues(cmd::client::QueuesArgs),
    /// Show or change a queue's settings.
    Queue(cmd::client::QueueArgs),
    /// Recurring jobs: set, list, get, pause, resume, run, delete.
    Schedule(cmd::schedule::Args),
    /// Apply pending PostgreSQL migrations (drove serve also applies them on start).
    Migrate(cmd::migrate::Args),
    /// Run the benchmark workloads of docs/BENCHMARKS.md (w1..w6, all, flow).
    Bench(cmd::bench::Args),
    /// An HTTP worker for benchmarks (W5 kills it).
    #[command(hide = true)]
    BenchWorker(cmd::bench::WorkerArgs),
    /// Runs one job's command so that none of its descendants outlives it (used by `drove
    /// worker`).
    #[command(name = "__supervise", hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(clap::Args)]
struct SuperviseArgs {
    /// The worker's pid.
    #[arg(long)]
    parent: i32,
    /// Between SIGTERM and SIGKILL.
    #[arg(long)]
    grace_ms: u64,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Supervise(a) = &cli.command {
        // Synchronous, no runtime and no logging: its stdio is the job's.
        let code = drove_worker::supervise::supervise(
            &a.command,
            a.parent,
            std::time::Duration::from_millis(a.grace_ms),
        );
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let (otlp, service) = match &cli.command {
        Command::Serve(a) => (Some(&a.otlp), "drove"),
        Command::Worker(a) => (Some(&a.otlp), "drove-worker"),
        _ => (None, "drove"),
    };
    let telemetry = match telemetry::init(otlp, service) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("drove: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drove: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => cmd::serve::run(a).await,
            Command::Worker(a) => cmd::worker::run(a).await,
            Command::Submit(a) => cmd::client::submit(a).await,
            Command::Jobs(a) => cmd::client::jobs(a).await,
            Command::Queues(a) => cmd::client::queues(a).await,
            Command::Schedule(a) => cmd::schedule::run(a).await,
            Command::Queue(a) => cmd::client::queue(a).await,
            Command::Migrate(a) => cmd::migrate::run(a).await,
            Command::Bench(a) => cmd::bench::run(a).await,
            Command::BenchWorker(a) => cmd::bench::worker(a).await,
            Command::Supervise(_) => unreachable!("handled before the runtime starts"),
        }
    });
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drove: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
