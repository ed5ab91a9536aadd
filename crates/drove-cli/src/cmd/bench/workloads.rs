//! The workloads of docs/BENCHMARKS.md. Each returns one JSON object of figures.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::Settings;
use super::target::{Fixture, Probe, Work, now_us};

pub async fn run(name: &str, s: &Settings) -> anyhow::Result<Value> {
    match name {
        "w1" => w1(s).await,
        "w2" => w2(s).await,
        "w3" => w3(s).await,
        "w4" => w4(s).await,
        "w5" => w5(s).await,
        "w6" => w6(s).await,
        "fanout" => fanout(s).await,
        "chain" => chain(s).await,
        _ => unreachable!("checked by the caller"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Median latency of an 8 KiB write + fdatasync in `dir`: the disk's price of one durable
/// commit right now.
fn fsync_probe_ms(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let block = vec![7u8; 8192];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_file(&path)?;
    Ok(percentile(&sorted(times), 0.5))
}

async fn enqueue(fx: &Fixture, queue: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let jobs: Vec<Value> = (0..k).map(|_| json!({"queue": queue, "payload": null})).collect();
        ids.extend(fx.submit_batch(&jobs).await?);
        left -= k;
    }
    Ok(ids)
}

/// W1: enqueue one at a time from 8 producers, then in batches of 1,000.
async fn w1(s: &Settings) -> anyhow::Result<Value> {
    let fx = Arc::new(Fixture::open(s).await?);
    let fsync_ms = fsync_probe_ms(fx.dir(), 200)?;
    let producers = 8;
    let per = s.jobs / producers;
    let cpu0 = fx.store_cpu_us();
    let start = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let fx = Arc::clone(&fx);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let job = json!({"queue": "w1", "payload": {"n": 1}});
                for _ in 0..per {
                    let t = Instant::now();
                    fx.submit(&job).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let one_by_one = (per * producers) as f64 / start.elapsed().as_secs_f64();
    let cpu_per_job = cpu0.zip(fx.store_cpu_us()).map(|(a, b)| (b - a) / (per * producers) as f64);
    let lat = sorted(lat);

    let start = Instant::now();
    let mut batch_lat = Vec::new();
    for _ in 0..s.jobs / 1000 {
        let jobs: Vec<Value> = (0..1000).map(|_| json!({"queue": "w1b", "payload": {"n": 1}})).collect();
        let t = Instant::now();
        fx.submit_batch(&jobs).await?;
        batch_lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let bulk = (s.jobs / 1000 * 1000) as f64 / start.elapsed().as_secs_f64();
    let batch_lat = sorted(batch_lat);
    let physical = producers as f64 / (fsync_ms / 1e3);
    let out = json!({
        "jobs_per_s": one_by_one,
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "bulk_jobs_per_s": bulk,
        "bulk_p50_ms": percentile(&batch_lat, 0.5),
        "bulk_p99_ms": percentile(&batch_lat, 0.99),
        "fsync_p50_ms": fsync_ms,
        "physical_limit_jobs_per_s": physical,
        "ratio_to_physical_limit": one_by_one / physical,
        "producers": producers,
        // CPU of the process holding the store per one-by-one submit (over HTTP: the server's).
        "store_cpu_us_per_job": cpu_per_job,
    });
    Arc::into_inner(fx).context("fixture still shared")?.close().await;
    Ok(out)
}

/// W2: drain pre-enqueued no-op jobs with total concurrency 32.
async fn w2(s: &Settings) -> anyhow::Result<Value> {
    let fx = Fixture::open(s).await?;
    let t = Instant::now();
    enqueue(&fx, "w2", s.jobs).await?;
    let enqueue_s = t.elapsed().as_secs_f64();
    let probe = Arc::new(Probe::default());
    super::claims::take_sorted();
    let cpu0 = fx.store_cpu_us();
    let start = Instant::now();
    let workers = fx.workers("w2", s.concurrency, Work { sleep_ms: 0 }, Arc::clone(&probe));
    fx.wait_succeeded("w2", s.jobs as i64, Duration::from_secs(300)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_per_job = cpu0.zip(fx.store_cpu_us()).map(|(a, b)| (b - a) / s.jobs as f64);
    workers.stop().await;
    let claims = super::claims::take_sorted();
    fx.close().await;
    Ok(json!({
        "jobs_per_s": s.jobs as f64 / elapsed,
        "elapsed_s": elapsed,
        // Submit (in batches of 1,000) + claim + complete, end to end.
        "with_submit_jobs_per_s": s.jobs as f64 / (enqueue_s + elapsed),
        // One claim (of up to 1,000 jobs) during the drain, as the store's caller sees it
        // in process, as the worker sees it over HTTP.
        "claim_p50_ms": percentile(&claims, 0.5),
        "claim_p99_ms": percentile(&claims, 0.99),
        "claims": claims.len(),
        // CPU of the process holding the store per drained job (over HTTP: the server's).
        "store_cpu_us_per_job": cpu_per_job,
    }))
}

/// W3: 200 jobs/s offered for 15 s to idle workers; enqueue -> handler start latency.
async fn w3(s: &Settings) -> anyhow::Result<Value> {
    let fx = Arc::new(Fixture::open(s).await?);
    let probe = Arc::new(Probe::default());
    let workers = fx.workers("w3", s.concurrency, Work { sleep_ms: 0 }, Arc::clone(&probe));
    tokio::time::sleep(Duration::from_secs(1)).await; // workers idle and waiting, as in BENCH.md
    super::claims::take_sorted();
    let (rate, seconds) = (200u64, 15u64);
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sends = Vec::with_capacity(total as usize);
    for _ in 0..total {
        tick.tick().await;
        let fx = Arc::clone(&fx);
        // Open loop: a send does not wait for earlier ones.
        sends.push(tokio::spawn(async move {
            fx.submit(&json!({"queue": "w3", "payload": {"t": now_us()}})).await
        }));
    }
    for s in sends {
        s.await??;
    }
    fx.wait_succeeded("w3", total as i64, Duration::from_secs(60)).await?;
    workers.stop().await;
    let lat = sorted(probe.latencies_us.lock().unwrap().iter().map(|us| *us as f64 / 1e3).collect());
    // In process: every store claim, the empty ones that precede a wait included. Over HTTP
    // only claims not asked to wait are timed, and idle W3 workers mostly wait.
    let claims = super::claims::take_sorted();
    let out = json!({
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "claim_p50_ms": percentile(&claims, 0.5),
        "claim_p99_ms": percentile(&claims, 0.99),
        "claims": claims.len(),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
        "jobs": lat.len(),
        "offered_per_s": rate,
    });
    Arc::into_inner(fx).context("fixture still shared")?.close().await;
    Ok(out)
}

/// W4: 500 submitters of 10 keys await one 300 ms execution per key.
async fn w4(s: &Settings) -> anyhow::Result<Value> {
    let fx = Arc::new(Fixture::open(s).await?);
    let probe = Arc::new(Probe::default());
    let workers = fx.workers("w4", s.concurrency, Work { sleep_ms: 300 }, Arc::clone(&probe));
    let start = Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let fx = Arc::clone(&fx);
            tokio::spawn(async move {
                let job = json!({"queue": "w4", "key": format!("k{}", i % 10), "payload": {"k": i % 10}});
                let done = fx.submit_and_wait(&job).await?;
                anyhow::Ok((start.elapsed().as_secs_f64(), done))
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut ids_per_key: HashMap<String, HashSet<String>> = HashMap::new();
    for t in tasks {
        let (at, job) = t.await??;
        if job["state"] == "succeeded" {
            answers.push(at);
            ids_per_key
                .entry(job["key"].as_str().unwrap_or("").to_owned())
                .or_default()
                .insert(job["id"].as_str().unwrap_or("").to_owned());
        }
    }
    workers.stop().await;
    let answers = sorted(answers);
    let out = json!({
        "executions": probe.executions.load(std::sync::atomic::Ordering::Relaxed),
        "answered": answers.len(),
        "one_job_per_key": ids_per_key.values().all(|ids| ids.len() == 1),
        "first_answer_s": answers.first().copied().unwrap_or(f64::NAN),
        "last_answer_s": answers.last().copied().unwrap_or(f64::NAN),
    });
    Arc::into_inner(fx).context("fixture still shared")?.close().await;
    Ok(out)
}

/// W5: 2,000 jobs of 50 ms; the worker dies after 1 s; a new one starts at once.
async fn w5(s: &Settings) -> anyhow::Result<Value> {
    let fx = Fixture::open(s).await?;
    let n = 2000usize;
    let ids = enqueue(&fx, "w5", n).await?;
    let work = Work { sleep_ms: 50 };
    let start = Instant::now();
    let (kill_at, twice, in_flight_at_kill, recovery_s) = match fx.url() {
        None => {
            let probe = Arc::new(Probe::tracking());
            let a = fx.workers("w5", s.concurrency, work, Arc::clone(&probe));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let started_before = probe.executions.load(std::sync::atomic::Ordering::Relaxed);
            let finished_before = probe.finishes.lock().unwrap().len() as u64;
            a.kill().await;
            let kill_at = start.elapsed().as_secs_f64();
            let b = fx.workers("w5", s.concurrency, work, Arc::clone(&probe));
            fx.wait_succeeded("w5", n as i64, Duration::from_secs(120)).await?;
            b.stop().await;
            let twice = probe.finishes.lock().unwrap().values().filter(|c| **c > 1).count();
            (kill_at, twice, started_before.saturating_sub(finished_before), None)
        }
        Some(url) => {
            let (log_a, log_b) = (fx.dir().join("worker-a.log"), fx.dir().join("worker-b.log"));
            let mut a = spawn_worker(url, s.concurrency, work, &log_a)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.kill()?; // SIGKILL
            a.wait()?;
            let kill_at = start.elapsed().as_secs_f64();
            let kill_instant = Instant::now();
            let mut b = spawn_worker(url, s.concurrency, work, &log_b)?;
            let (sa, fa) = read_log(&log_a);
            let in_flight: HashSet<&String> = sa.keys().filter(|id| !fa.contains_key(*id)).collect();
            // Recovery: the first re-start, in B, of a job A had in flight.
            let mut recovery = None;
            while recovery.is_none() && kill_instant.elapsed() < Duration::from_secs(90) {
                let (sb, _) = read_log(&log_b);
                if sb.keys().any(|id| in_flight.contains(id)) {
                    recovery = Some(kill_instant.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            fx.wait_succeeded("w5", n as i64, Duration::from_secs(120)).await?;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(b.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            b.wait()?;
            let (_, fb) = read_log(&log_b);
            let twice = fa.keys().filter(|id| fb.contains_key(*id)).count()
                + fa.values().chain(fb.values()).filter(|c| **c > 1).count();
            (kill_at, twice, in_flight.len() as u64, recovery)
        }
    };
    let all_done_s = start.elapsed().as_secs_f64();
    let lost = if all_done_s - kill_at <= 60.0 { 0 } else { n };
    let out = json!({
        "all_done_s": all_done_s,
        "done_after_kill_s": all_done_s - kill_at,
        "lost": lost,
        "run_twice": twice,
        "in_flight_at_kill": in_flight_at_kill,
        "recovery_s": recovery_s,
        "jobs": ids.len(),
    });
    fx.close().await;
    Ok(out)
}

fn spawn_worker(
    url: &str,
    concurrency: usize,
    work: Work,
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["bench-worker", "--server", url, "--queue", "w5", "--concurrency", &concurrency.to_string()])
        .args(["--sleep-ms", &work.sleep_ms.to_string()])
        .arg("--log")
        .arg(log)
        .env("DROVE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?)
}

/// Starts and finishes per job id from a worker's log.
fn read_log(path: &Path) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let (mut s, mut f) = (HashMap::new(), HashMap::new());
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        if let Some(id) = line.strip_prefix("S ") {
            *s.entry(id.to_owned()).or_default() += 1;
        } else if let Some(id) = line.strip_prefix("F ") {
            *f.entry(id.to_owned()).or_default() += 1;
        }
    }
    (s, f)
}

/// W6: W2 with a large backlog queued behind the measured jobs.
async fn w6(s: &Settings) -> anyhow::Result<Value> {
    let fx = Fixture::open(s).await?;
    enqueue(&fx, "w6", s.jobs).await?;
    let t = Instant::now();
    enqueue(&fx, "w6", s.backlog).await?;
    let backlog_insert_per_s = s.backlog as f64 / t.elapsed().as_secs_f64();
    let rss_before = fx.store_rss_kib();
    let probe = Arc::new(Probe::default());
    let start = Instant::now();
    let workers = fx.workers("w6", s.concurrency, Work { sleep_ms: 0 }, Arc::clone(&probe));
    fx.wait_succeeded("w6", s.jobs as i64, Duration::from_secs(300)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    workers.stop().await;
    let rss_after = fx.store_rss_kib();
    fx.close().await;
    Ok(json!({
        "jobs_per_s": s.jobs as f64 / elapsed,
        "backlog": s.backlog,
        "backlog_insert_per_s": backlog_insert_per_s,
        "store_rss_mib_before": rss_before.map(|k| k as f64 / 1024.0),
        "store_rss_mib_after": rss_after.map(|k| k as f64 / 1024.0),
    }))
}

/// Fan-out/fan-in: one parent's first run submits `--jobs` no-op children (batches of 10,000)
/// and awaits them; seconds from the parent's submit to its fan-in run being claimed.
async fn fanout(s: &Settings) -> anyhow::Result<Value> {
    let fx = Fixture::open(s).await?;
    let probe = Arc::new(Probe::default());
    let workers = fx.workers("fan-kids", s.concurrency, Work { sleep_ms: 0 }, Arc::clone(&probe));
    let start = Instant::now();
    let parent = fx.submit(&json!({"queue": "fan-parent", "payload": null})).await?;
    let (id, lease) = fx.claim_one("fan-parent").await?;
    anyhow::ensure!(id == parent, "claimed {id}, not the parent {parent}");
    let mut left = s.jobs;
    while left > 0 {
        let k = left.min(10_000);
        let jobs: Vec<Value> =
            (0..k).map(|i| json!({"queue": "fan-kids", "parent": parent, "payload": i})).collect();
        fx.submit_batch(&jobs).await?;
        left -= k;
    }
    let fanned_out_s = start.elapsed().as_secs_f64();
    fx.complete(&id, &lease, true).await?;
    let (again, lease) = fx.claim_one("fan-parent").await?;
    let fan_in_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(again == parent, "the fan-in claimed {again}, not the parent {parent}");
    let job = fx.job(&again).await?;
    anyhow::ensure!(job["fan_in"] == json!(true), "not a fan-in run: {job}");
    anyhow::ensure!(
        job["children"]["succeeded"] == json!(s.jobs),
        "children at the fan-in: {}",
        job["children"]
    );
    fx.complete(&again, &lease, false).await?;
    workers.stop().await;
    fx.close().await;
    Ok(json!({
        "children": s.jobs,
        "fan_in_s": fan_in_s,
        "fanned_out_s": fanned_out_s,
        "children_per_s": s.jobs as f64 / fan_in_s,
    }))
}

/// A chain of 20: each job depends on the one before; seconds from the first submit to the last
/// success (each step waits for the one before to succeed, so this is the hand-off latency).
async fn chain(s: &Settings) -> anyhow::Result<Value> {
    const STEPS: usize = 20;
    let fx = Fixture::open(s).await?;
    let probe = Arc::new(Probe::default());
    let workers = fx.workers("chain", s.concurrency, Work { sleep_ms: 0 }, Arc::clone(&probe));
    let start = Instant::now();
    let mut prev: Option<String> = None;
    for i in 0..STEPS {
        let mut job = json!({"queue": "chain", "payload": i});
        if let Some(p) = &prev {
            job["depends_on"] = json!([p]);
        }
        prev = Some(fx.submit(&job).await?);
    }
    let submitted_s = start.elapsed().as_secs_f64();
    fx.wait_succeeded("chain", STEPS as i64, Duration::from_secs(120)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    workers.stop().await;
    fx.close().await;
    Ok(json!({
        "steps": STEPS,
        "elapsed_s": elapsed,
        "submitted_s": submitted_s,
        "ms_per_step": elapsed * 1e3 / STEPS as f64,
    }))
}
