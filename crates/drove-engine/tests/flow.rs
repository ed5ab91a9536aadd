//! Flow control in one process over a real SQLite file: batch handlers, and the P4 scenario of
//! docs/PROBLEMS.md (a downstream whose capacity changes; the adaptive limit follows it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drove_core::JobState;
use drove_core::queue::QueuePatch;
use drove_engine::{BatchOptions, Engine, EngineConfig, Fail, JobContext, Runtime, WorkerOptions};
use drove_sqlite::{SqliteOptions, SqliteStore};
use drove_store::{JobFilter, NewJob};
use serde_json::json;
use tokio::sync::Semaphore;

fn node() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("drove.db"))).unwrap();
    (Engine::start(Arc::new(store), EngineConfig::default()), dir)
}

async fn set_queue(engine: &Engine, name: &str, patch: serde_json::Value) {
    let patch: QueuePatch = serde_json::from_value(patch).unwrap();
    engine.store().put_queue(name, patch, drove_engine::now()).await.unwrap();
}

fn raw(v: serde_json::Value) -> drove_core::RawJson {
    serde_json::value::to_raw_value(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handlers_take_up_to_n_jobs_per_call_each_with_its_own_result() {
    let (engine, _dir) = node();
    set_queue(&engine, "bulk", json!({"max_attempts": 1})).await;
    let jobs: Vec<NewJob> = (0..45).map(|i| NewJob::new("bulk", raw(json!(i)))).collect();
    let ids: Vec<_> = engine.submit(jobs).await.unwrap().into_iter().map(|s| s.job.id).collect();
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s2 = Arc::clone(&sizes);
    let batch = BatchOptions { max: 10, linger: Duration::from_millis(200) };
    let rt = Runtime::new(engine.clone())
        .handle_batch("bulk", WorkerOptions::concurrency(1), batch, move |jobs: Vec<JobContext>| {
            let sizes = Arc::clone(&s2);
            async move {
                sizes.lock().unwrap().push(jobs.len());
                jobs.iter()
                    .map(|ctx| {
                        let n: i64 = ctx.payload()?;
                        if n % 7 == 0 {
                            Err(Fail::permanent(format!("{n} is unlucky")))
                        } else {
                            Ok(json!(n * 2))
                        }
                    })
                    .collect()
            }
        })
        .start();
    for (n, id) in ids.iter().enumerate() {
        let job = engine.wait_job(*id, Duration::from_secs(60)).await.unwrap().unwrap();
        if n % 7 == 0 {
            assert_eq!(job.state, JobState::Failed, "job {n}");
            assert_eq!(job.error.as_ref().unwrap().message, format!("{n} is unlucky"));
        } else {
            assert_eq!(job.state, JobState::Succeeded, "job {n}");
            assert_eq!(job.result.as_ref().unwrap().get(), (n * 2).to_string());
        }
    }
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 45);
    assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
    assert!(sizes.len() <= 6 && sizes.contains(&10), "jobs were batched: {sizes:?}");
    rt.shutdown(Duration::from_secs(5)).await;
    engine.shutdown().await;
}

/// A downstream with `capacity` slots: each call holds a slot for 20 ms, waiting for one first.
struct Provider {
    slots: Arc<Semaphore>,
    calls: AtomicUsize,
}

impl Provider {
    async fn call(&self) {
        let _slot = self.slots.acquire().await.expect("never closed");
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn submit_backlog(engine: &Engine, queue: &str, jobs: usize) {
    let backlog: Vec<NewJob> = (0..jobs).map(|_| NewJob::new(queue, raw(json!(null)))).collect();
    for chunk in backlog.chunks(1000) {
        engine.submit(chunk.to_vec()).await.unwrap();
    }
}

/// Adds a handler for `queue` whose every job is one call to `provider`.
fn calling(rt: Runtime, queue: &str, provider: &Arc<Provider>) -> Runtime {
    let p = Arc::clone(provider);
    rt.handle(queue, WorkerOptions::concurrency(64), move |_ctx: JobContext| {
        let p = Arc::clone(&p);
        async move {
            p.call().await;
            Ok(json!(null))
        }
    })
}

/// An adaptive pool `provider` with an online queue `live` and an offline queue `bulk` holding
/// a backlog, and a downstream of 8 slots.
async fn provider_pool(engine: &Engine) -> Arc<Provider> {
    let pool: drove_core::queue::PoolPatch =
        serde_json::from_value(json!({"adaptive": {"min": 1, "max": 64}})).unwrap();
    engine.store().put_pool("provider", pool, drove_engine::now()).await.unwrap();
    set_queue(engine, "live", json!({"pool": "provider"})).await;
    set_queue(engine, "bulk", json!({"pool": "provider", "lane": "offline"})).await;
    submit_backlog(engine, "bulk", 20_000).await;
    Arc::new(Provider { slots: Arc::new(Semaphore::new(8)), calls: AtomicUsize::new(0) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_the_adaptive_limit_follows_the_downstreams_capacity_down_and_back_up() {
    let (engine, _dir) = node();
    set_queue(&engine, "calls", json!({"adaptive": {"min": 1, "max": 64}})).await;
    submit_backlog(&engine, "calls", 20_000).await;
    let provider = Arc::new(Provider { slots: Arc::new(Semaphore::new(8)), calls: AtomicUsize::new(0) });
    let rt = calling(Runtime::new(engine.clone()), "calls", &provider).start();
    // Three phases of 6 s: capacity 8, then 4, then 8 again. The limit in force is sampled
    // every 200 ms; each phase is judged on its last 3 s.
    let mut phases: Vec<Vec<i64>> = vec![Vec::new(); 3];
    let start = Instant::now();
    let mut held = None;
    while start.elapsed() < Duration::from_secs(18) {
        let t = start.elapsed().as_secs_f64();
        let phase = (t / 6.0) as usize;
        if phase == 1 && held.is_none() {
            held = Some(Arc::clone(&provider.slots).acquire_many_owned(4).await.unwrap()); // capacity 8 -> 4
        }
        if phase == 2 && held.is_some() {
            held = None; // capacity back to 8
        }
        if t % 6.0 >= 3.0 {
            let q = engine.store().get_queue("calls", drove_engine::now()).await.unwrap().unwrap();
            phases[phase.min(2)].push(q.limit_now.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m: Vec<i64> = phases.into_iter().map(median).collect();
    assert!(provider.calls.load(Ordering::Relaxed) > 1000, "the downstream was kept busy");
    assert!(m[1] * 100 <= m[0] * 85, "the limit followed the capacity down: {m:?}");
    assert!(m[2] * 100 >= m[1] * 115, "and back up: {m:?}");
    assert!((4..=40).contains(&m[0]), "near the downstream's capacity of 8, not at the bounds: {m:?}");
    rt.shutdown(Duration::from_secs(5)).await;
    let left = engine.store().list_jobs(JobFilter::default(), 1, None).await.unwrap();
    assert!(!left.jobs.is_empty());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_offline_queue_fills_the_downstreams_capacity_and_online_work_the_headroom() {
    let (engine, _dir) = node();
    let provider = provider_pool(&engine).await;
    let rt = calling(calling(Runtime::new(engine.clone()), "live", &provider), "bulk", &provider).start();
    // Online work arrives all along, a quarter of the downstream's 400 calls/s.
    let submitter = {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                engine.submit(vec![NewJob::new("live", raw(json!(null)))]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // The offline limit is the whole limit until the limiter's first probe has measured its
    // reference (about 1 to 12 s in); then it drops to the capacity estimate.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = engine.store().get_pool("provider").await.unwrap().unwrap();
        if p.offline_limit_now.is_some_and(|o| Some(o) < p.limit_now) {
            break;
        }
        assert!(Instant::now() < deadline, "the offline limit never left the limit: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then judged over 4 s, sampled every 200 ms.
    let (mut offline, mut limit, mut bulk_running) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let p = engine.store().get_pool("provider").await.unwrap().unwrap();
        let q = engine.store().get_queue("bulk", drove_engine::now()).await.unwrap().unwrap();
        offline.push(p.offline_limit_now.expect("the limit service writes the offline limit"));
        limit.push(p.limit_now.unwrap());
        bulk_running.push(q.counts.running);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    submitter.abort();
    let (offline, limit, bulk_running) = (median(offline), median(limit), median(bulk_running));
    assert!(provider.calls.load(Ordering::Relaxed) > 1000, "the downstream was kept busy");
    // 8 slots + sqrt(8) headroom ≈ 11, a little more for the runtime's own time around each
    // call (calls there hold no slot); online work may use the whole limit.
    assert!((6..=14).contains(&offline), "the offline limit is near the 8 slots: {offline} (limit {limit})");
    assert!(offline <= limit, "never above the limit: {offline} > {limit}");
    assert!(
        bulk_running <= offline,
        "offline work stops there: {bulk_running} running, offline limit {offline}"
    );
    rt.shutdown(Duration::from_secs(5)).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holds_offline_work_below_its_limit_only_while_online_work_is_about() {
    let (engine, _dir) = node();
    let provider = provider_pool(&engine).await;
    // Only the offline queue has a worker.
    let rt = calling(Runtime::new(engine.clone()), "bulk", &provider).start();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Only offline work: the limit service runs (the limit grows from 1) and writes no offline
    // limit.
    loop {
        let p = engine.store().get_pool("provider").await.unwrap().unwrap();
        if p.limit_now.is_some_and(|l| l >= 6) {
            assert_eq!(p.offline_limit_now, None, "no online work to protect: {p:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the limit never grew: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An online job waits (no worker takes it): the offline limit comes into force.
    engine.submit(vec![NewJob::new("live", raw(json!(null)))]).await.unwrap();
    loop {
        let p = engine.store().get_pool("provider").await.unwrap().unwrap();
        if let Some(o) = p.offline_limit_now {
            assert!(p.limit_now.is_some_and(|l| o <= l), "{p:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the offline limit never came into force: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.shutdown(Duration::from_secs(5)).await;
    engine.shutdown().await;
}
