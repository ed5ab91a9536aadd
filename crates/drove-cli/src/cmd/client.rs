//! The client commands: submit, jobs, queues, queue.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use drove_worker::Client;
use reqwest::Method;
use serde_json::{Map, Value, json};

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The Drove server.
    #[arg(long, env = "DROVE_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    #[arg(long, env = "DROVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also trust these certificates (PEM) for an https:// server (besides the system's roots).
    #[arg(long, env = "DROVE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_ca(
            &self.server,
            self.token.clone().filter(|t| !t.is_empty()),
            self.ca_file.as_deref(),
        )?)
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    pub queue: String,
    /// The payload as JSON (`-` reads it from stdin; default null).
    pub payload: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub priority: Option<i64>,
    #[arg(long)]
    pub delay_ms: Option<i64>,
    #[arg(long)]
    pub max_attempts: Option<i64>,
    #[arg(long)]
    pub timeout_ms: Option<i64>,
    #[arg(long)]
    pub reuse_for_ms: Option<i64>,
    /// join, replace or reject.
    #[arg(long)]
    pub on_conflict: Option<String>,
    /// Wait for the job to finish and print its result (exit 1 if it failed).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let payload: Value = match a.payload.as_deref() {
        None => Value::Null,
        Some("-") => {
            let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            serde_json::from_str(&text).context("the payload on stdin is not JSON")?
        }
        Some(text) => {
            serde_json::from_str(text).context("the payload is not JSON (quote strings: '\"text\"')")?
        }
    };
    let mut body = Map::new();
    body.insert("queue".into(), json!(a.queue));
    body.insert("payload".into(), payload);
    for (k, v) in [
        ("key", a.key.map(Value::from)),
        ("group", a.group.map(Value::from)),
        ("on_conflict", a.on_conflict.map(Value::from)),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    for (k, v) in [
        ("priority", a.priority),
        ("delay_ms", a.delay_ms),
        ("max_attempts", a.max_attempts),
        ("timeout_ms", a.timeout_ms),
        ("reuse_for_ms", a.reuse_for_ms),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    let (_, job): (u16, Value) =
        client.call(Method::POST, "/v1/jobs", Some(&body), Duration::from_secs(30)).await?;
    if !a.wait {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(ExitCode::SUCCESS);
    }
    let id = job["id"].as_str().context("no id in the answer")?.to_owned();
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut job = job;
    loop {
        let state = job["state"].as_str().unwrap_or("");
        if let Some(bar) = &bar {
            let p = &job["progress"];
            if let Some(total) = p["total"].as_u64() {
                bar.set_length(total);
            }
            if let Some(done) = p["done"].as_u64() {
                bar.set_position(done);
            }
            bar.set_message(p["message"].as_str().map(str::to_owned).unwrap_or_else(|| state.to_owned()));
        }
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            break;
        }
        // One-second long polls keep the bar moving with the job's progress.
        let (_, next): (u16, Value) = client
            .call_retrying(
                Method::GET,
                &format!("/v1/jobs/{id}?wait=1s"),
                None::<&Value>,
                Duration::from_secs(10),
                Duration::from_secs(60),
            )
            .await?;
        job = next;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match job["state"].as_str() {
        Some("succeeded") => {
            println!("{}", serde_json::to_string(&job["result"])?);
            Ok(ExitCode::SUCCESS)
        }
        state => {
            eprintln!(
                "job {id} {}: {}",
                state.unwrap_or("?"),
                job["error"]["message"].as_str().unwrap_or("")
            );
            println!("{}", serde_json::to_string(&job)?);
            Ok(ExitCode::from(1))
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the answer's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct QueuesArgs {
    /// Print the answer's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn jobs(a: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let mut query = vec![("limit".to_owned(), a.limit.to_string())];
    for (k, v) in [("queue", a.queue), ("state", a.state), ("key", a.key), ("group", a.group)] {
        if let Some(v) = v {
            query.push((k.to_owned(), v));
        }
    }
    let qs = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&");
    let (_, page): (u16, Value) =
        client.call(Method::GET, &format!("/v1/jobs?{qs}"), None::<&Value>, Duration::from_secs(30)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<12} {:<16} {:<10} {:>7} {:<24} {:<24}", "ID", "QUEUE", "STATE", "ATTEMPT", "KEY", "CREATED");
    for j in page["jobs"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:<16} {:<10} {:>7} {:<24} {:<24}",
            j["id"].as_str().unwrap_or(""),
            j["queue"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["attempt"].to_string(),
            j["key"].as_str().unwrap_or("-"),
            j["created_at"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn queues(a: QueuesArgs) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let (_, out): (u16, Value) =
        client.call(Method::GET, "/v1/queues", None::<&Value>, Duration::from_secs(30)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:>9} {:>8} {:>8} {:>10} {:>8} {:>9} {:>6} {:<6}",
        "QUEUE", "SCHEDULED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "LIMIT", "PAUSED"
    );
    for q in out["queues"].as_array().into_iter().flatten() {
        let c = &q["counts"];
        println!(
            "{:<20} {:>9} {:>8} {:>8} {:>10} {:>8} {:>9} {:>6} {:<6}",
            q["name"].as_str().unwrap_or(""),
            c["scheduled"].to_string(),
            c["queued"].to_string(),
            c["running"].to_string(),
            c["succeeded"].to_string(),
            c["failed"].to_string(),
            c["cancelled"].to_string(),
            q["limit_now"].as_i64().map_or("-".to_owned(), |l| l.to_string()),
            q["config"]["paused"].as_bool().unwrap_or(false),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    pub name: String,
    /// Cap on running jobs ("none" clears it).
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Cap on running jobs per group ("none" clears it).
    #[arg(long)]
    pub group_concurrency: Option<String>,
    /// Starts per period: LIMIT/PERIOD_MS[/BURST], e.g. 100/1000 ("none" clears it).
    #[arg(long)]
    pub rate: Option<String>,
    #[arg(long, conflicts_with = "resume")]
    pub pause: bool,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub max_attempts: Option<String>,
    #[arg(long)]
    pub lease_ms: Option<String>,
    #[arg(long)]
    pub timeout_ms: Option<String>,
    #[arg(long)]
    pub reuse_for_ms: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn number_or_none(flag: &str, v: &str) -> anyhow::Result<Value> {
    if v == "none" {
        return Ok(Value::Null);
    }
    Ok(json!(v.parse::<i64>().with_context(|| format!("--{flag} takes a number or none"))?))
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let mut patch = Map::new();
    for (k, v) in [
        ("concurrency", &a.concurrency),
        ("group_concurrency", &a.group_concurrency),
        ("max_attempts", &a.max_attempts),
        ("lease_ms", &a.lease_ms),
        ("timeout_ms", &a.timeout_ms),
        ("reuse_for_ms", &a.reuse_for_ms),
    ] {
        if let Some(v) = v {
            patch.insert(k.into(), number_or_none(k, v)?);
        }
    }
    if let Some(r) = &a.rate {
        let v = if r == "none" {
            Value::Null
        } else {
            let parts: Vec<i64> = r
                .split('/')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .context("--rate is LIMIT/PERIOD_MS[/BURST]")?;
            match parts[..] {
                [limit, period_ms] => json!({ "limit": limit, "period_ms": period_ms }),
                [limit, period_ms, burst] => {
                    json!({ "limit": limit, "period_ms": period_ms, "burst": burst })
                }
                _ => bail!("--rate is LIMIT/PERIOD_MS[/BURST]"),
            }
        };
        patch.insert("rate".into(), v);
    }
    if a.pause {
        patch.insert("paused".into(), json!(true));
    }
    if a.resume {
        patch.insert("paused".into(), json!(false));
    }
    let path = format!("/v1/queues/{}", a.name);
    let (_, q): (u16, Value) = if patch.is_empty() {
        client.call(Method::GET, &path, None::<&Value>, Duration::from_secs(30)).await?
    } else {
        client.call(Method::PUT, &path, Some(&patch), Duration::from_secs(30)).await?
    };
    println!("{}", serde_json::to_string_pretty(&q)?);
    Ok(ExitCode::SUCCESS)
}
