//! One job, one child process: the protocol of API.md "CLI".
//!
//! stdin: the payload, then closed. Environment: DROVE_JOB_ID, DROVE_ATTEMPT,
//! DROVE_CHECKPOINT (JSON or empty), DROVE_LEASE. stdout lines: `@progress DONE TOTAL
//! [message]`, `@checkpoint JSON` (no further line is read until the server stored it),
//! `@retry-after MS`; the last other line is the result. Exit 0 completes, 75 is throttled,
//! anything else a retryable failure with stderr's tail as the message.

use std::process::Stdio;
use std::time::Duration;

use drove_core::Millis;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::{Client, ClientError};
use crate::{ClaimedJob, Stops, WorkerConfig};

/// Exit status that means "throttled" (EX_TEMPFAIL).
const EX_TEMPFAIL: i32 = 75;
/// Bytes of stderr kept for the failure message.
const STDERR_TAIL: usize = 4_096;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why the worker stopped a child.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Cancelled,
    LeaseLost,
    Timeout,
    Shutdown,
}

#[derive(Deserialize)]
struct Ack {
    cancel_requested: bool,
}

/// Makes the kernel send `signal` to the child when the worker dies, even by SIGKILL (SIGKILL
/// for a bare command; SIGTERM for the supervisor, which then kills the command's whole tree).
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The worker may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("the worker exited"));
            }
            Ok(())
        });
    }
}

fn lease_len_ms(job: &ClaimedJob) -> i64 {
    let expires = Millis::parse_rfc3339(&job.lease_expires_at);
    let started = job.started_at.as_deref().and_then(Millis::parse_rfc3339);
    match (expires, started) {
        (Some(e), Some(s)) => e.since(s).max(1_000),
        _ => 10_000,
    }
}

pub(crate) async fn run_job(client: &Client, cfg: &WorkerConfig, stops: &Stops, job: ClaimedJob) {
    let lease = job.lease.clone();
    let base = format!("/v1/jobs/{}", job.id);
    let mut cmd = match &cfg.supervisor {
        Some(exe) => {
            let mut c = Command::new(exe);
            c.arg("__supervise")
                .arg("--parent")
                .arg(std::process::id().to_string())
                .arg("--grace-ms")
                .arg(cfg.kill_grace.as_millis().to_string())
                .arg("--")
                .args(&cfg.command);
            c
        }
        None => {
            let mut c = Command::new(&cfg.command[0]);
            c.args(&cfg.command[1..]);
            c
        }
    };
    cmd.env("DROVE_JOB_ID", &job.id)
        .env("DROVE_ATTEMPT", job.attempt.to_string())
        .env("DROVE_CHECKPOINT", job.checkpoint.as_ref().map(|c| c.get()).unwrap_or(""))
        .env("DROVE_LEASE", &lease)
        .env("DROVE_QUEUE", &cfg.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    die_with_parent(&mut cmd, if cfg.supervisor.is_some() { Signal::SIGTERM } else { Signal::SIGKILL });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("could not start {}: {e}", cfg.command[0]);
            tracing::error!(job = %job.id, "{msg}");
            report(client, &base, json!({ "lease": lease, "error": { "message": msg } }), "fail").await;
            return;
        }
    };
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    // The payload goes in from its own task, so a child that does not read stdin cannot
    // block us from reading its stdout.
    if let Some(mut stdin) = child.stdin.take() {
        let payload = job.payload.get().as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let stderr_tail = child.stderr.take().map(|mut err| {
        tokio::spawn(async move {
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf).await {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            let start = tail.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&tail[start..]).trim().to_owned()
        })
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();

    let interval = Duration::from_millis(u64::try_from(lease_len_ms(&job) / 3).unwrap_or(3_000));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let deadline = async {
        match job.timeout_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut progress: Option<Value> = None;
    let mut progress_due = false;
    let mut retry_after: Option<i64> = None;
    let mut result_line: Option<String> = None;
    let mut stop: Option<Stop> = None;
    let mut stdout_open = true;

    while stdout_open && stop.is_none() {
        let progress_timer = async {
            if progress_due { tokio::time::sleep(PROGRESS_EVERY).await } else { std::future::pending().await }
        };
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix("@progress ") {
                        progress = parse_progress(rest);
                        progress_due = progress.is_some();
                    } else if let Some(rest) = line.strip_prefix("@checkpoint ") {
                        let checkpoint: Value = serde_json::from_str(rest.trim()).unwrap_or_else(|_| Value::String(rest.to_owned()));
                        // No further line is read until the checkpoint is stored.
                        let body = json!({ "lease": lease, "checkpoint": checkpoint, "progress": progress.take() });
                        progress_due = false;
                        stop = heartbeat(client, &base, &body).await;
                    } else if let Some(rest) = line.strip_prefix("@retry-after ") {
                        retry_after = rest.trim().parse().ok();
                    } else {
                        result_line = Some(line);
                    }
                }
                _ => stdout_open = false,
            },
            _ = beat.tick() => {
                let body = json!({ "lease": lease, "progress": progress.take() });
                progress_due = false;
                stop = heartbeat(client, &base, &body).await;
            }
            () = progress_timer => {
                let body = json!({ "lease": lease, "progress": progress.take() });
                progress_due = false;
                stop = heartbeat(client, &base, &body).await;
            }
            () = &mut deadline => stop = Some(Stop::Timeout),
            () = stops.hard.cancelled() => stop = Some(Stop::Shutdown),
        }
    }
    // stdout closed (the child is exiting) or we must stop it.
    let status = match stop {
        Some(why) => {
            tracing::info!(job = %job.id, reason = ?why, "stopping the child");
            terminate(&mut child, pgid, stop_grace(cfg)).await
        }
        None => {
            // Keep heartbeating while the child finishes exiting.
            loop {
                tokio::select! {
                    s = child.wait() => break s.ok(),
                    _ = beat.tick() => {
                        if let Some(why) = heartbeat(client, &base, &json!({ "lease": lease })).await {
                            stop = Some(why);
                            break terminate(&mut child, pgid, stop_grace(cfg)).await;
                        }
                    }
                    () = &mut deadline => { stop = Some(Stop::Timeout); break terminate(&mut child, pgid, stop_grace(cfg)).await; }
                    () = stops.hard.cancelled() => { stop = Some(Stop::Shutdown); break terminate(&mut child, pgid, stop_grace(cfg)).await; }
                }
            }
        }
    };
    let tail = match stderr_tail {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    match stop {
        Some(Stop::LeaseLost) | Some(Stop::Timeout) => {} // the server has already moved on
        Some(Stop::Shutdown) => {
            report(client, &base, json!({ "lease": lease }), "release").await;
        }
        Some(Stop::Cancelled) => {
            report(client, &base, json!({ "lease": lease, "error": { "message": "cancelled" } }), "fail")
                .await;
        }
        None => {
            let code = status.and_then(|s| s.code());
            match code {
                Some(0) => {
                    let result = result_line
                        .map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::String(l)))
                        .unwrap_or(Value::Null);
                    report(client, &base, json!({ "lease": lease, "result": result }), "complete").await;
                }
                Some(EX_TEMPFAIL) => {
                    let msg = if tail.is_empty() { "throttled (exit 75)".to_owned() } else { tail };
                    let body = json!({ "lease": lease, "error": { "message": msg, "kind": "throttled" }, "retry_after_ms": retry_after });
                    report(client, &base, body, "fail").await;
                }
                other => {
                    let how =
                        match (other, status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)))
                        {
                            (Some(c), _) => format!("exit {c}"),
                            (None, Some(sig)) => format!("killed by signal {sig}"),
                            _ => "ended abnormally".to_owned(),
                        };
                    let msg = if tail.is_empty() { how } else { format!("{tail} ({how})") };
                    report(client, &base, json!({ "lease": lease, "error": { "message": msg } }), "fail")
                        .await;
                }
            }
        }
    }
}

fn parse_progress(rest: &str) -> Option<Value> {
    let mut parts = rest.trim().splitn(3, ' ');
    let done: i64 = parts.next()?.parse().ok()?;
    let total: Option<i64> = parts.next().and_then(|t| t.parse().ok());
    let message = parts.next().map(str::to_owned);
    Some(json!({ "done": done, "total": total, "message": message }))
}

/// Sends a heartbeat; returns why the child must stop, if it must.
async fn heartbeat(client: &Client, base: &str, body: &Value) -> Option<Stop> {
    let path = format!("{base}/heartbeat");
    match client
        .call_retrying::<Ack>(
            reqwest::Method::POST,
            &path,
            Some(body),
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .await
    {
        Ok((_, ack)) if ack.cancel_requested => Some(Stop::Cancelled),
        Ok(_) => None,
        Err(ClientError::Api { status: 409 | 404, .. }) => Some(Stop::LeaseLost),
        Err(e) => {
            // The server is unreachable: keep the child running; the next beat tries again,
            // and if the lease runs out meanwhile the server says so then.
            tracing::warn!(error = %e, "heartbeat failed");
            None
        }
    }
}

/// How long a stopped child gets before the worker SIGKILLs its process group: the kill grace,
/// plus, under a supervisor (which SIGKILLs the whole tree itself when the grace ends), a
/// margin for it to do so and exit.
fn stop_grace(cfg: &WorkerConfig) -> Duration {
    if cfg.supervisor.is_some() { cfg.kill_grace + Duration::from_secs(2) } else { cfg.kill_grace }
}

/// SIGTERM to the child's process group, then SIGKILL after `grace`.
async fn terminate(
    child: &mut Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = killpg(pg, Signal::SIGKILL);
            }
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Ends the run on the server, retrying while it is unreachable.
async fn report(client: &Client, base: &str, body: Value, what: &str) {
    let path = format!("{base}/{what}");
    match client
        .call_retrying::<Value>(
            reqwest::Method::POST,
            &path,
            Some(&body),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .await
    {
        Ok(_) => {}
        Err(ClientError::Api { status: 409, .. }) => {
            tracing::info!(path, "the run's lease was lost before it ended; its end was refused")
        }
        Err(e) => tracing::error!(path, error = %e, "could not report the end of a run"),
    }
}
