//! `drove bench`: the workloads of docs/BENCHMARKS.md (W1-W6) against this build, in process or over
//! HTTP, on SQLite (PostgreSQL once built in). One JSON line per run with `--json`, a table
//! otherwise. Every run starts from a fresh database in a temporary directory on the same
//! disk as `--dir` (default: the current directory), so fsync costs what it costs there.

mod claims;
mod target;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

pub use target::{Probe, Work, http_worker};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// w1, w2, w3, w4, w5, w6, all, fanout (one parent, --jobs children, to its fan-in), chain
    /// (20 jobs each depending on the one before), or flow (the flow-control scenarios A, B, C).
    pub workload: String,
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// inproc (Rust handlers in this process) or http (a `drove serve` child, HTTP workers).
    #[arg(long, default_value = "inproc")]
    pub mode: String,
    #[arg(long, env = "DROVE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// One JSON line per run instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Runs per workload; the table shows the median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Acknowledge before fsync (SQLite synchronous=NORMAL).
    #[arg(long)]
    pub relaxed_durability: bool,
    /// Jobs per workload (W1, W2, W6).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Total handler concurrency.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// W6: jobs queued behind the measured ones.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Schedules present during the run (daily, none due), to show they cost claims nothing.
    #[arg(long, default_value_t = 0)]
    pub schedules: usize,
    /// Where the temporary databases go (same disk = same fsync cost).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// flow: seeds to run each cell with (figures are median and worst over them).
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// flow: virtual seconds per cell.
    #[arg(long, default_value_t = 60.0)]
    pub secs: f64,
    /// flow: only these scenarios (any of A, B, C).
    #[arg(long, default_value = "ABC")]
    pub scenarios: String,
}

/// Settings shared by every workload of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store: String,
    pub mode: String,
    pub database_url: Option<String>,
    pub relaxed: bool,
    pub jobs: usize,
    pub concurrency: usize,
    pub backlog: usize,
    pub schedules: usize,
    pub dir: PathBuf,
}

impl Settings {
    fn describe(&self) -> Value {
        json!({
            "store": self.store,

            "mode": self.mode,
            "durability": if self.relaxed { "relaxed" } else { "full" },
            "jobs": self.jobs,
            "concurrency": self.concurrency,
            "schedules": self.schedules,
        })
    }
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.workload == "flow" {
        return flow(&a).await;
    }
    let settings = Settings {
        store: a.store,
        mode: a.mode,
        database_url: a.database_url,
        relaxed: a.relaxed_durability,
        jobs: a.jobs,
        concurrency: a.concurrency,
        backlog: a.backlog,
        schedules: a.schedules,
        dir: a.dir,
    };
    claims::install();
    let names: Vec<&str> = match a.workload.as_str() {
        "all" => vec!["w1", "w2", "w3", "w4", "w5", "w6"],
        w @ ("w1" | "w2" | "w3" | "w4" | "w5" | "w6" | "fanout" | "chain") => vec![w],
        other => anyhow::bail!("unknown workload {other}: w1..w6, fanout, chain, all or flow"),
    };
    let mut rows = Vec::new();
    for name in names {
        let mut runs = Vec::new();
        for i in 0..a.runs.max(1) {
            let mut line = workloads::run(name, &settings).await?;
            line["workload"] = json!(name);
            line["run"] = json!(i + 1);
            line["settings"] = settings.describe();
            line["store"] = json!(settings.store);
            line["mode"] = json!(settings.mode);
            line["host"] = host();
            if a.json {
                println!("{line}");
            } else {
                eprintln!("{name} run {}: {line}", i + 1);
            }
            runs.push(line);
        }
        rows.push((name, runs));
    }
    if !a.json {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// Load and fsync latency at the time of the run: what the figures depend on.
fn host() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok());
    json!({ "load1": load, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn print_table(rows: &[(&str, Vec<Value>)]) {
    println!("{:<6} {:<28} {:>14}  runs", "", "figure", "median");
    for (name, runs) in rows {
        let keys: Vec<String> = runs[0]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, _)| k.clone())
                    .filter(|k| k != "run")
                    .collect()
            })
            .unwrap_or_default();
        for k in keys {
            let vals: Vec<f64> = runs.iter().filter_map(|r| r[&k].as_f64()).collect();
            let m = median(vals.clone()).unwrap_or(f64::NAN);
            let all = vals.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(", ");
            println!("{name:<6} {k:<28} {m:>14.1}  [{all}]");
        }
    }
}

/// `drove bench flow`: the flow-control scenarios under a simulated downstream (virtual time,
/// deterministic per seed). Exits 1 when a target is missed or a baseline does not fail where
/// the research says it fails.
async fn flow(a: &Args) -> anyhow::Result<ExitCode> {
    let opts = drove_flow::FlowOptions {
        seeds: a.seeds.clone(),
        duration_s: a.secs,
        warmup_s: (a.secs / 6.0).min(10.0),
        scenarios: a.scenarios.clone(),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        ..Default::default()
    };
    let report = tokio::task::spawn_blocking(move || drove_flow::run(&opts)).await??;
    if a.json {
        print!("{}", report.to_json_lines());
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.all_as_expected() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The hidden `drove bench-worker`: an HTTP worker in its own process, for W5's SIGKILL.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub queue: String,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub sleep_ms: u64,
    /// Append `S id` / `F id` per handler start / finish to this file.
    #[arg(long)]
    pub log: PathBuf,
}

pub async fn worker(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&a.log)?;
    let probe = std::sync::Arc::new(Probe { log: Some(std::sync::Mutex::new(file)), ..Default::default() });
    let client = drove_worker::Client::new(&a.server, None)?;
    let stop = super::shutdown_on_signal();
    http_worker(client, a.queue, a.concurrency, Work { sleep_ms: a.sleep_ms }, probe, stop).await;
    Ok(ExitCode::SUCCESS)
}
