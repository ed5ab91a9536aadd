//! The engine and the in-process runtime over a real SQLite file: the P1 and P5 scenarios of
//! docs/PROBLEMS.md in one process, and each outcome a handler can give.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drove_core::queue::QueuePatch;
use drove_core::{ErrorKind, JobId, JobState};
use drove_engine::{Engine, EngineConfig, Fail, Runtime, WorkerOptions};
use drove_sqlite::{SqliteOptions, SqliteStore};
use drove_store::NewJob;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

struct Node {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("drove.db"))).unwrap();
    let engine = Engine::start(Arc::new(store), EngineConfig::default());
    Node { engine, _dir: dir }
}

fn raw(v: serde_json::Value) -> drove_core::RawJson {
    serde_json::value::to_raw_value(&v).unwrap()
}

async fn set_queue(engine: &Engine, name: &str, patch: serde_json::Value) {
    let patch: QueuePatch = serde_json::from_value(patch).unwrap();
    engine.store().put_queue(name, patch, drove_engine::now()).await.unwrap();
}

async fn submit(engine: &Engine, job: NewJob) -> JobId {
    engine.submit(vec![job]).await.unwrap().pop().unwrap().job.id
}

async fn wait_done(engine: &Engine, id: JobId) -> Arc<drove_core::Job> {
    let job = engine.wait_job(id, LONG).await.unwrap().unwrap();
    assert!(job.state.is_terminal(), "job {id} still {:?} after a minute", job.state);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_many_submitters_of_few_keys_share_one_execution_each() {
    let n = node();
    let executions = Arc::new(AtomicUsize::new(0));
    let ex = Arc::clone(&executions);
    let rt = Runtime::new(n.engine.clone())
        .handle("compute", WorkerOptions::concurrency(32), move |ctx: drove_engine::JobContext| {
            let ex = Arc::clone(&ex);
            async move {
                ex.fetch_add(1, Ordering::SeqCst);
                let item: serde_json::Value = ctx.payload()?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(json!({ "item": item["item"], "answer": "expensive" }))
            }
        })
        .start();
    let submitters: Vec<_> = (0..500)
        .map(|i| {
            let engine = n.engine.clone();
            tokio::spawn(async move {
                let key = format!("item:{}", i % 10);
                let job = NewJob::new("compute", raw(json!({ "item": i % 10 }))).with_key(key);
                let id = submit(&engine, job).await;
                let done = wait_done(&engine, id).await;
                (i % 10, done)
            })
        })
        .collect();
    let mut ids: HashMap<i64, JobId> = HashMap::new();
    for s in submitters {
        let (item, job) = s.await.unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        let result: serde_json::Value = serde_json::from_str(job.result.as_ref().unwrap().get()).unwrap();
        assert_eq!(result["item"], json!(item), "each submitter gets its own key's result");
        assert_eq!(*ids.entry(item).or_insert(job.id), job.id, "one job per key");
    }
    assert_eq!(executions.load(Ordering::SeqCst), 10, "exactly one execution per key");
    assert_eq!(n.engine.store().hub().watched_jobs(), 0);
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

/// Pages through a data set, checkpointing after each page. Runtime A dies after page 5 is
/// checkpointed; runtime B must resume at page 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_a_dead_runtimes_job_resumes_from_its_checkpoint() {
    let n = node();
    set_queue(&n.engine, "export", json!({ "lease_ms": 1000, "backoff": { "base_ms": 0, "max_ms": 0 } }))
        .await;
    let pages: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let (reached, mut reached_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();

    let make = |name: &'static str, die_after: Option<i64>| {
        let pages = Arc::clone(&pages);
        let reached = reached.clone();
        move |ctx: drove_engine::JobContext| {
            let (pages, reached) = (Arc::clone(&pages), reached.clone());
            async move {
                let start = ctx.checkpoint::<i64>()?.map_or(1, |last| last + 1);
                for page in start..=10 {
                    pages.lock().unwrap().push((name.to_owned(), page));
                    ctx.progress(page, Some(10), Some(&format!("page {page}")));
                    ctx.save_checkpoint(&page).await?;
                    if Some(page) == die_after {
                        let _ = reached.send(page);
                        std::future::pending::<()>().await; // stuck until the runtime dies
                    }
                }
                Ok(json!({ "pages": 10 }))
            }
        }
    };
    let a = Runtime::new(n.engine.clone())
        .handle("export", WorkerOptions::concurrency(1), make("A", Some(5)))
        .start();
    let id = submit(&n.engine, NewJob::new("export", raw(json!({ "table": "orders" })))).await;
    assert_eq!(tokio::time::timeout(LONG, reached_rx.recv()).await.unwrap(), Some(5));
    a.kill().await; // a dead worker: no release, its lease simply runs out

    let b = Runtime::new(n.engine.clone())
        .handle("export", WorkerOptions::concurrency(1), make("B", None))
        .start();
    let job = wait_done(&n.engine, id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempt, 2, "the lost run used an attempt");
    let log = pages.lock().unwrap().clone();
    let by_a: Vec<i64> = log.iter().filter(|(w, _)| w == "A").map(|(_, p)| *p).collect();
    let by_b: Vec<i64> = log.iter().filter(|(w, _)| w == "B").map(|(_, p)| *p).collect();
    assert_eq!(by_a, vec![1, 2, 3, 4, 5]);
    assert_eq!(by_b, vec![6, 7, 8, 9, 10], "no page before the checkpoint was redone");
    assert_eq!(job.progress.as_ref().map(|p| p.done), Some(10));
    b.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_outcomes_reach_the_store_as_their_kinds() {
    let n = node();
    set_queue(&n.engine, "q", json!({ "max_attempts": 1 })).await;
    let rt = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(4), |ctx: drove_engine::JobContext| async move {
            let what: String = ctx.payload()?;
            match what.as_str() {
                "ok" => Ok(json!("fine")),
                "partial" => {
                    ctx.mark_partial();
                    Ok(json!("some"))
                }
                "retry" => Err(Fail::retry("deadlock")),
                "permanent" => Err(Fail::permanent("bad input")),
                "io" => Err(std::io::Error::other("disk on fire").into()),
                "panic" => panic!("boom"),
                other => Err(Fail::permanent(format!("unexpected {other}"))),
            }
        })
        .start();
    let cases = [
        ("ok", JobState::Succeeded, None),
        ("partial", JobState::Succeeded, None),
        ("retry", JobState::Failed, Some((ErrorKind::Retryable, "deadlock"))),
        ("permanent", JobState::Failed, Some((ErrorKind::Permanent, "bad input"))),
        ("io", JobState::Failed, Some((ErrorKind::Retryable, "disk on fire"))),
        ("panic", JobState::Failed, Some((ErrorKind::Retryable, "the handler panicked: boom"))),
    ];
    for (what, state, error) in cases {
        let id = submit(&n.engine, NewJob::new("q", raw(json!(what)))).await;
        let job = wait_done(&n.engine, id).await;
        assert_eq!(job.state, state, "{what}");
        assert_eq!(job.error.as_ref().map(|e| (e.kind, e.message.as_str())), error, "{what}");
        assert_eq!(job.partial, what == "partial");
    }
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_snoozed_runs_use_no_attempt() {
    let n = node();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let rt = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(1), move |ctx: drove_engine::JobContext| {
            let r = Arc::clone(&r);
            async move {
                match r.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Fail::throttled(Duration::from_millis(50), "429")),
                    1 => Err(Fail::Snooze(Duration::from_millis(50))),
                    _ => Ok(json!({ "attempt": ctx.attempt() })),
                }
            }
        })
        .start();
    let id = submit(&n.engine, NewJob::new("q", raw(json!(null)))).await;
    let job = wait_done(&n.engine, id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result.as_ref().unwrap().get(), r#"{"attempt":1}"#);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_reaches_its_handler() {
    let n = node();
    set_queue(&n.engine, "q", json!({ "lease_ms": 1500 })).await;
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(1), move |ctx: drove_engine::JobContext| {
            let started = started.clone();
            async move {
                let _ = started.send(());
                ctx.cancelled().await;
                Err(Fail::retry("stopped on request"))
            }
        })
        .start();
    let id = submit(&n.engine, NewJob::new("q", raw(json!(1)))).await;
    tokio::time::timeout(LONG, started_rx.recv()).await.unwrap();
    let marked = n.engine.store().cancel(id, drove_engine::now()).await.unwrap();
    assert!(marked.cancel_requested);
    let job = wait_done(&n.engine, id).await;
    assert_eq!(job.state, JobState::Cancelled);
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_is_stopped_and_recorded_as_timeout() {
    let n = node();
    let (stopped, mut stopped_rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(1), move |ctx: drove_engine::JobContext| {
            let stopped = stopped.clone();
            async move {
                ctx.cancelled().await;
                let _ = stopped.send(());
                Ok(json!("too late"))
            }
        })
        .start();
    let mut job = NewJob::new("q", raw(json!(1)));
    job.timeout_ms = Some(300);
    job.max_attempts = Some(1);
    let id = submit(&n.engine, job).await;
    let done = wait_done(&n.engine, id).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.error.as_ref().map(|e| e.kind), Some(ErrorKind::Timeout));
    tokio::time::timeout(LONG, stopped_rx.recv()).await.expect("the handler was told to stop");
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_jobs_still_running_after_the_grace_period() {
    let n = node();
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let a = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(1), move |_ctx: drove_engine::JobContext| {
            let started = started.clone();
            async move {
                let _ = started.send(());
                std::future::pending::<()>().await;
                Ok(json!(null))
            }
        })
        .start();
    let id = submit(&n.engine, NewJob::new("q", raw(json!(1)))).await;
    tokio::time::timeout(LONG, started_rx.recv()).await.unwrap();
    a.shutdown(Duration::from_millis(100)).await;
    let released = n.engine.store().get_job(id).await.unwrap().unwrap();
    assert_eq!(released.state, JobState::Queued, "handed back, not left to expire");
    // Another runtime takes it at once, with the same attempt number.
    let b = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(1), |ctx: drove_engine::JobContext| async move {
            Ok(json!({ "attempt": ctx.attempt() }))
        })
        .start();
    let job = wait_done(&n.engine, id).await;
    assert_eq!(job.result.as_ref().unwrap().get(), r#"{"attempt":1}"#);
    b.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_run_once_due_and_a_thousand_waiters_share_one_end() {
    let n = node();
    let rt = Runtime::new(n.engine.clone())
        .handle("q", WorkerOptions::concurrency(2), |_ctx: drove_engine::JobContext| async move {
            Ok(json!("done"))
        })
        .start();
    let mut job = NewJob::new("q", raw(json!(1)));
    job.run_at = Some(drove_engine::now().plus_ms(300));
    let id = submit(&n.engine, job).await;
    let waiters: Vec<_> = (0..1000)
        .map(|_| {
            let engine = n.engine.clone();
            tokio::spawn(async move { wait_done(&engine, id).await })
        })
        .collect();
    for w in waiters {
        let job = w.await.unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert!(job.started_at.unwrap() >= job.run_at, "not started before run_at");
    }
    assert_eq!(n.engine.store().hub().watched_jobs(), 0);
    rt.shutdown(Duration::from_secs(5)).await;
    n.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_claim_waits_for_its_batch_to_fill() {
    let n = node();
    let e = n.engine.clone();
    submit(&e, NewJob::new("batch", raw(json!(0)))).await;
    let req = drove_store::ClaimRequest { queue: "batch".into(), worker: "w".into(), max: 5, lease_ms: None };
    // Without a linger the claim takes the one job at once.
    let alone = e.claim(req.clone(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(alone.jobs.len(), 1);
    submit(&e, NewJob::new("batch", raw(json!(1)))).await;
    // With one, it waits (up to 30 s) for five to be ready, then takes them in one claim.
    let claimer = tokio::spawn({
        let e = e.clone();
        let req = req.clone();
        async move { e.claim_batch(req, Duration::from_secs(30), Duration::from_secs(30)).await }
    });
    for i in 2..6 {
        submit(&e, NewJob::new("batch", raw(json!(i)))).await;
    }
    let got = tokio::time::timeout(LONG, claimer).await.unwrap().unwrap().unwrap();
    assert_eq!(got.jobs.len(), 5, "the batch filled before it was claimed");
}
