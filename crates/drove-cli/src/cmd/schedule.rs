//! `drove schedule`: recurring jobs over HTTP (docs/API.md "Schedules").

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::ServerArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Create or replace a schedule: drove schedule set nightly --cron "0 3 * * *"
    /// --timezone Europe/Berlin --queue backups '{"full": true}'
    Set(SetArgs),
    /// List every schedule with its next and last tick.
    List(ServerOnly),
    /// Show one schedule.
    Get(Named),
    /// Stop enqueueing (ticks missed while paused are skipped on resume).
    Pause(Named),
    Resume(Named),
    /// Enqueue the schedule's job now; its ticks are unchanged.
    Run(Named),
    /// Delete a schedule (the jobs it made stay).
    Delete(Named),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    pub name: String,
    /// 5 fields (or 6 with seconds first), a nickname (@daily), or @every 30s.
    #[arg(long)]
    pub cron: String,
    /// An IANA time zone; default UTC.
    #[arg(long)]
    pub timezone: Option<String>,
    #[arg(long)]
    pub queue: String,
    /// The job's payload as JSON (default null).
    pub payload: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    /// none, last (default) or all.
    #[arg(long)]
    pub catch_up: Option<String>,
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct Named {
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServerOnly {
    /// Print the answer's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

const TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let (method, path, body, server) = match a.action {
        Action::Set(s) => {
            let mut body = Map::new();
            body.insert("cron".into(), json!(s.cron));
            body.insert("queue".into(), json!(s.queue));
            if let Some(p) = &s.payload {
                body.insert(
                    "payload".into(),
                    serde_json::from_str(p).context("the payload is not JSON (quote strings: '\"text\"')")?,
                );
            }
            for (k, v) in
                [("timezone", s.timezone), ("key", s.key), ("group", s.group), ("catch_up", s.catch_up)]
            {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if s.paused {
                body.insert("paused".into(), json!(true));
            }
            (Method::PUT, format!("/v1/schedules/{}", s.name), Some(Value::Object(body)), s.server)
        }
        Action::List(l) => return list(l).await,
        Action::Get(n) => (Method::GET, format!("/v1/schedules/{}", n.name), None, n.server),
        Action::Pause(n) => {
            (Method::PATCH, format!("/v1/schedules/{}", n.name), Some(json!({"paused": true})), n.server)
        }
        Action::Resume(n) => {
            (Method::PATCH, format!("/v1/schedules/{}", n.name), Some(json!({"paused": false})), n.server)
        }
        Action::Run(n) => (Method::POST, format!("/v1/schedules/{}/run", n.name), None, n.server),
        Action::Delete(n) => {
            let client = n.server.client()?;
            let _: (u16, Value) = client
                .call(Method::DELETE, &format!("/v1/schedules/{}", n.name), None::<&Value>, TIMEOUT)
                .await?;
            println!("deleted schedule {}", n.name);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let client = server.client()?;
    let (_, out): (u16, Value) = client.call(method, &path, body.as_ref(), TIMEOUT).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

async fn list(a: ServerOnly) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let (_, out): (u16, Value) = client.call(Method::GET, "/v1/schedules", None::<&Value>, TIMEOUT).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<20} {:<16} {:<26} {:<26} {:<6}",
        "SCHEDULE", "CRON", "QUEUE", "NEXT", "LAST TICK", "PAUSED"
    );
    for s in out["schedules"].as_array().into_iter().flatten() {
        let tz = s["timezone"].as_str().map(|t| format!(" ({t})")).unwrap_or_default();
        println!(
            "{:<24} {:<20} {:<16} {:<26} {:<26} {:<6}",
            s["name"].as_str().unwrap_or(""),
            format!("{}{tz}", s["cron"].as_str().unwrap_or("")),
            s["queue"].as_str().unwrap_or(""),
            s["next_at"].as_str().unwrap_or("-"),
            s["last_tick_at"].as_str().unwrap_or("-"),
            s["paused"].as_bool().unwrap_or(false),
        );
    }
    Ok(ExitCode::SUCCESS)
}
