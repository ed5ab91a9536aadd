//! One job, one child process: the protocol of the contract's "CLI" section (docs/API.md).
//!
//! stdin: the payload, then closed. Environment: DROVE_JOB_ID, DROVE_ATTEMPT,
//! DROVE_CHECKPOINT (JSON or empty), DROVE_LEASE, DROVE_QUEUE, DROVE_ACK_FD, and TRACEPARENT /
//! TRACESTATE (the run's span, or the job's trace context) when there is one. stdout lines:
//! `@progress DONE TOTAL [message]`, `@checkpoint JSON` (no further line is read until the
//! server stored it; then `ok` is written to the child's descriptor DROVE_ACK_FD (3), or `lost`
//! when the run is over, so a child may wait for its checkpoint to be durable), `@retry-after
//! MS`, `@transient` (a failing exit is a transient failure); the last other line is the
//! result. Exit 0 completes, 75 is throttled, anything else a failure with stderr's tail as the
//! message.
//!
//! A run is three parts: the child and its output (`run_job`'s loop), the lease (a
//! [`LeaseKeeper`] task that heartbeats, carries progress and checkpoints, and says when the
//! run must stop), and the end (reported once the child is gone). While the server is away the
//! keeper keeps trying (the client's gate spaces the tries) until the lease would have run out;
//! then the run is over for this worker, and the child is stopped.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drove_core::{Millis, TraceContext};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, ClientError};
use crate::{ClaimedJob, Stops, WorkerConfig};

/// Exit status that means "throttled" (EX_TEMPFAIL).
const EX_TEMPFAIL: i32 = 75;
/// The descriptor a child reads checkpoint acknowledgements from.
const ACK_FD: i32 = 3;
/// Bytes of stderr kept for the failure message.
const STDERR_TAIL: usize = 4_096;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a run stops before its child ends by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    Cancelled,
    LeaseLost,
    Timeout,
    Shutdown,
    /// The server refused this worker's credentials (401/403): the worker stops.
    Refused,
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

/// Gives the child `ack` (the read end of a pipe) as its descriptor [`ACK_FD`].
#[allow(unsafe_code)]
fn pass_ack_fd(cmd: &mut Command, ack: std::os::fd::RawFd) {
    // SAFETY: runs in the forked child before exec; dup2(2) is async-signal-safe and nothing is
    // allocated. dup2 clears close-on-exec on the new descriptor, so the command inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(ack, ACK_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The command for a job: under the supervisor when there is one.
fn command(cfg: &WorkerConfig, job: &ClaimedJob, trace: Option<&TraceContext>) -> Command {
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
        .env("DROVE_LEASE", &job.lease)
        .env("DROVE_QUEUE", &cfg.queue)
        .env("DROVE_ACK_FD", ACK_FD.to_string())
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(t) = trace {
        cmd.env("TRACEPARENT", &t.traceparent);
        if let Some(ts) = &t.tracestate {
            cmd.env("TRACESTATE", ts);
        }
    }
    die_with_parent(&mut cmd, if cfg.supervisor.is_some() { Signal::SIGTERM } else { Signal::SIGKILL });
    cmd
}

/// A started child: its process (group), its stdout lines, its stderr's tail to come, and the
/// write end of its acknowledgement pipe.
struct Running {
    child: Child,
    pgid: Option<Pid>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr_tail: Option<tokio::task::JoinHandle<String>>,
    ack: std::os::fd::OwnedFd,
}

impl Running {
    /// Tells the child about its checkpoint (`ok`) or its run (`lost`); never blocks (a child
    /// that never reads simply fills the pipe, and later words are dropped).
    fn tell(&self, word: &str) {
        let _ = nix::unistd::write(&self.ack, format!("{word}\n").as_bytes());
    }
}

fn start(cfg: &WorkerConfig, job: &ClaimedJob, trace: Option<&TraceContext>) -> std::io::Result<Running> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let (ack_read, ack) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // Only our end is non-blocking: the child's reads wait for the word.
    fcntl(&ack, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
    let mut cmd = command(cfg, job, trace);
    pass_ack_fd(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(&ack_read));
    let mut child = cmd.spawn()?;
    drop(ack_read);
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
    let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    Ok(Running { child, pgid, lines, stderr_tail, ack })
}

/// What the child said besides its progress and checkpoints.
#[derive(Default)]
struct Said {
    result_line: Option<String>,
    retry_after: Option<i64>,
    transient: bool,
}

pub(crate) async fn run_job(client: &Client, cfg: &WorkerConfig, stops: &Stops, job: ClaimedJob) {
    let trace = job.trace();
    let span = drove_trace::run_span(
        &cfg.queue,
        &job.id,
        job.attempt,
        job.key.as_deref(),
        job.group.as_deref(),
        trace.as_ref(),
    );
    // The child continues the run's span when this worker exports it, else the job's context.
    let child_trace = drove_trace::context_of(&span).or(trace);
    let outcome = run_traced(client, cfg, stops, job, child_trace.as_ref()).instrument(span.clone()).await;
    drove_trace::record_outcome(&span, outcome);
}

/// One run; returns how it ended, for its span.
async fn run_traced(
    client: &Client,
    cfg: &WorkerConfig,
    stops: &Stops,
    job: ClaimedJob,
    trace: Option<&TraceContext>,
) -> &'static str {
    let base = format!("/v1/jobs/{}", job.id);
    let mut running = match start(cfg, &job, trace) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("could not start {}: {e}", cfg.command[0]);
            tracing::error!(job = %job.id, "{msg}");
            report(client, &base, json!({ "lease": job.lease, "error": { "message": msg } }), "fail", stops)
                .await;
            return "retryable";
        }
    };
    let keeper = LeaseKeeper::start(client.clone(), &job, cfg.lease_ms);
    let mut said = Said::default();
    let stop = watch_child(&mut running, &keeper, &job, stops, &mut said).await;
    let status = match stop {
        Some(why) => {
            tracing::info!(job = %job.id, reason = ?why, "stopping the child");
            terminate(&mut running.child, running.pgid, stop_grace(cfg)).await
        }
        None => running.child.wait().await.ok(),
    };
    // The lease is kept until the end is reported: a slow report never lets it lapse.
    let stop = stop.or(keeper.stopped());
    let tail = match running.stderr_tail.take() {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    let lease = &job.lease;
    let outcome = match stop {
        // The server has moved on, or will not hear us.
        Some(Stop::LeaseLost | Stop::Refused) => "lost",
        Some(Stop::Timeout) => "timeout",
        Some(Stop::Shutdown) => {
            report(client, &base, json!({ "lease": lease }), "release", stops).await;
            "released"
        }
        Some(Stop::Cancelled) => {
            report(
                client,
                &base,
                json!({ "lease": lease, "error": { "message": "cancelled" } }),
                "fail",
                stops,
            )
            .await;
            "cancelled"
        }
        None => {
            let (what, body) = end_of(status, said, tail, lease);
            let outcome = match (what, body["error"]["kind"].as_str()) {
                ("complete", _) => "succeeded",
                (_, Some("throttled")) => "throttled",
                (_, Some("transient")) => "transient",
                _ => "retryable",
            };
            report(client, &base, body, what, stops).await;
            outcome
        }
    };
    keeper.finish().await;
    if stop == Some(Stop::Refused) {
        stops.refused.cancel();
    }
    outcome
}

/// Reads the child's output until it closes it (the child is exiting: `None`) or the run must
/// stop; carries progress and checkpoints to the lease keeper. A checkpoint holds the child's
/// output until the server has stored it.
async fn watch_child(
    running: &mut Running,
    keeper: &LeaseKeeper,
    job: &ClaimedJob,
    stops: &Stops,
    said: &mut Said,
) -> Option<Stop> {
    let deadline = async {
        match job.timeout_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut events = keeper.events();
    loop {
        let line = tokio::select! {
            line = running.lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => break,
            },
            stop = events.changed() => match stop {
                Some(stop) => return Some(stop),
                None => continue,
            },
            () = &mut deadline => return Some(Stop::Timeout),
            () = stops.hard.cancelled() => return Some(Stop::Shutdown),
            () = stops.refused.cancelled() => return Some(Stop::Refused),
        };
        if let Some(rest) = line.strip_prefix("@progress ") {
            if let Some(p) = parse_progress(rest) {
                keeper.progress(p);
            }
        } else if let Some(rest) = line.strip_prefix("@checkpoint ") {
            let checkpoint: Value =
                serde_json::from_str(rest.trim()).unwrap_or_else(|_| Value::String(rest.to_owned()));
            // No further line is read until the checkpoint is stored (or the run is over); the
            // child is told either way.
            match keeper.checkpoint(checkpoint).await {
                Ok(Stored::Yes) => running.tell("ok"),
                // Refused for what it carried (larger than the server takes): not stored, and
                // the run goes on with the lease kept.
                Ok(Stored::Refused) => running.tell("refused"),
                Err(stop) => {
                    running.tell("lost");
                    return Some(stop);
                }
            }
        } else if let Some(rest) = line.strip_prefix("@retry-after ") {
            said.retry_after = rest.trim().parse().ok();
        } else if line == "@transient" || line.starts_with("@transient ") {
            said.transient = true;
        } else {
            said.result_line = Some(line);
        }
    }
    // stdout closed: the child is exiting. The lease is still kept while it finishes.
    tokio::select! {
        stop = events.changed_or_never() => Some(stop),
        () = &mut deadline => Some(Stop::Timeout),
        () = stops.hard.cancelled() => Some(Stop::Shutdown),
        _ = running.child.wait() => None,
    }
}

/// The end of a run whose child exited by itself: which endpoint, and its body.
fn end_of(
    status: Option<std::process::ExitStatus>,
    said: Said,
    tail: String,
    lease: &str,
) -> (&'static str, Value) {
    match status.and_then(|s| s.code()) {
        Some(0) => {
            let result = said
                .result_line
                .map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::String(l)))
                .unwrap_or(Value::Null);
            ("complete", json!({ "lease": lease, "result": result }))
        }
        Some(EX_TEMPFAIL) => {
            let msg = if tail.is_empty() { "throttled (exit 75)".to_owned() } else { tail };
            (
                "fail",
                json!({ "lease": lease, "error": { "message": msg, "kind": "throttled" }, "retry_after_ms": said.retry_after }),
            )
        }
        other => {
            let how = match (other, status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s))) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended abnormally".to_owned(),
            };
            let msg = if tail.is_empty() { how } else { format!("{tail} ({how})") };
            let kind = if said.transient { "transient" } else { "retryable" };
            ("fail", json!({ "lease": lease, "error": { "message": msg, "kind": kind } }))
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

/// Keeps a run's lease: heartbeats every third of the lease (sooner to carry progress), and at
/// once to store a checkpoint. A heartbeat the server did not answer is tried again (spaced by
/// the client's gate) until the lease, as last extended, would have run out: then, as when the
/// server says the lease is not the job's any more, the run is lost. It tells the run why it
/// must stop through a watch channel.
struct LeaseKeeper {
    requests: mpsc::UnboundedSender<Request>,
    stop: tokio::sync::watch::Receiver<Option<Stop>>,
    task: tokio::task::JoinHandle<()>,
    progress: Arc<Mutex<Option<Value>>>,
}

enum Request {
    Checkpoint(Value, oneshot::Sender<Result<Stored, Stop>>),
    ProgressDue,
    Finish,
}

/// The run's side of the keeper's stop channel.
struct Events(tokio::sync::watch::Receiver<Option<Stop>>);

impl Events {
    /// The stop, once there is one (`None`: spurious wake-up).
    async fn changed(&mut self) -> Option<Stop> {
        if let Some(s) = *self.0.borrow() {
            return Some(s);
        }
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.0.borrow()
    }

    async fn changed_or_never(&mut self) -> Stop {
        loop {
            if let Some(s) = self.changed().await {
                return s;
            }
        }
    }
}

impl LeaseKeeper {
    fn start(client: Client, job: &ClaimedJob, lease_ms: Option<i64>) -> LeaseKeeper {
        let (requests, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        let progress = Arc::new(Mutex::new(None));
        let lease_len = Duration::from_millis(
            u64::try_from(lease_ms.unwrap_or_else(|| lease_len_ms(job))).unwrap_or(10_000),
        );
        let state = KeeperState {
            client,
            path: format!("/v1/jobs/{}/heartbeat", job.id),
            lease: job.lease.clone(),
            lease_ms,
            lease_len,
            // The lease as the server granted it, read on our clock when the claim came back.
            expires: Instant::now() + lease_len,
            progress: Arc::clone(&progress),
            stop: stop_tx,
        };
        let task = tokio::spawn(state.run(rx));
        LeaseKeeper { requests, stop, task, progress }
    }

    fn events(&self) -> Events {
        Events(self.stop.clone())
    }

    fn stopped(&self) -> Option<Stop> {
        *self.stop.borrow()
    }

    fn progress(&self, p: Value) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        let _ = self.requests.send(Request::ProgressDue);
    }

    /// Stores a checkpoint; `Err` when the run must stop instead (the lease is gone).
    async fn checkpoint(&self, value: Value) -> Result<Stored, Stop> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Checkpoint(value, tx)).is_err() {
            return Err(self.stopped().unwrap_or(Stop::LeaseLost));
        }
        rx.await.unwrap_or(Err(Stop::LeaseLost))
    }

    /// Stops heartbeating (the run's end is reported).
    async fn finish(self) {
        let _ = self.requests.send(Request::Finish);
        let _ = self.task.await;
    }
}

struct KeeperState {
    client: Client,
    path: String,
    lease: String,
    lease_ms: Option<i64>,
    lease_len: Duration,
    expires: Instant,
    progress: Arc<Mutex<Option<Value>>>,
    stop: tokio::sync::watch::Sender<Option<Stop>>,
}

impl KeeperState {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let every = self.lease_len / 3;
        let mut next_beat = Instant::now() + every;
        let mut progress_at: Option<Instant> = None;
        loop {
            let due = progress_at.map_or(next_beat, |p| p.min(next_beat));
            // `None`: a beat is due.
            let request = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => Some(r),
                    None => return, // the run is gone
                },
                () = tokio::time::sleep_until(due) => None,
            };
            let checkpoint = match request {
                Some(Request::Finish) => return,
                Some(Request::ProgressDue) => {
                    // Progress rides on the next beat, at most PROGRESS_EVERY from now.
                    progress_at.get_or_insert(Instant::now() + PROGRESS_EVERY);
                    continue;
                }
                Some(Request::Checkpoint(value, reply)) => Some((value, reply)),
                None => None,
            };
            let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner()).take();
            progress_at = None;
            let mut body = json!({ "lease": self.lease, "progress": progress, "lease_ms": self.lease_ms });
            let (reply, beat) = match checkpoint {
                Some((value, reply)) => {
                    body["checkpoint"] = value;
                    (Some(reply), self.beat(&body).await)
                }
                None => (None, self.beat(&body).await),
            };
            next_beat = Instant::now() + every;
            match beat {
                Ok(stored) => {
                    if let Some(r) = reply {
                        let _ = r.send(Ok(stored));
                    }
                }
                Err(stop) => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(stop));
                    }
                    let _ = self.stop.send(Some(stop));
                    // Nothing more to keep; answer what still comes until the run finishes.
                    while let Some(req) = rx.recv().await {
                        match req {
                            Request::Checkpoint(_, r) => {
                                let _ = r.send(Err(stop));
                            }
                            Request::Finish => return,
                            Request::ProgressDue => {}
                        }
                    }
                    return;
                }
            }
        }
    }

    /// One heartbeat, tried again while the server does not answer and the lease may still be
    /// ours. `Err`: why the run must stop.
    async fn beat(&mut self, body: &Value) -> Result<Stored, Stop> {
        loop {
            let sent = Instant::now();
            let left = self.expires.saturating_duration_since(sent);
            if left.is_zero() {
                tracing::warn!(path = %self.path, "no heartbeat was answered before the lease ran out");
                return Err(Stop::LeaseLost);
            }
            let answer = self
                .client
                .call::<Ack>(reqwest::Method::POST, &self.path, Some(body), left.min(Duration::from_secs(10)))
                .await;
            match answer {
                Ok((_, ack)) => {
                    self.expires = sent + self.lease_len;
                    return if ack.cancel_requested { Err(Stop::Cancelled) } else { Ok(Stored::Yes) };
                }
                Err(ClientError::Api { status: 409 | 404, .. }) => return Err(Stop::LeaseLost),
                Err(e) if e.is_refusal() => {
                    tracing::error!(error = %e, "the server refused this worker's credentials; stopping");
                    return Err(Stop::Refused);
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, path = %self.path, "heartbeat not answered; trying again");
                    // The gate spaces the tries; a short pause too, should it have reopened.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    // Refused for what it carried (a checkpoint over the size limit): the lease
                    // still needs keeping; what it carried is lost, and the run goes on.
                    tracing::warn!(error = %e, path = %self.path, "heartbeat refused");
                    return Ok(Stored::Refused);
                }
            }
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

/// Ends the run on the server, retrying while it is unreachable (the gate spaces the tries) for
/// as long as the server could still take it.
async fn report(client: &Client, base: &str, body: Value, what: &str, stops: &Stops) {
    let path = format!("{base}/{what}");
    let call = client.call_retrying::<Value>(
        reqwest::Method::POST,
        &path,
        Some(&body),
        Duration::from_secs(30),
        Duration::from_secs(600),
    );
    let answer = tokio::select! {
        a = call => a,
        () = stops.refused.cancelled() => return,
    };
    match answer {
        Ok(_) => {}
        Err(ClientError::Api { status: 409, .. }) => {
            tracing::info!(path, "the run's lease was lost before it ended; its end was refused")
        }
        Err(e) if e.is_refusal() => {
            tracing::error!(path, error = %e, "the server refused this worker's credentials; stopping");
            stops.refused.cancel();
        }
        Err(e) => tracing::error!(path, error = %e, "could not report the end of a run"),
    }
}

/// Whether a heartbeat stored what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Yes,
    /// The server refused what it carried (a checkpoint over its size limit); the lease holds.
    Refused,
}
