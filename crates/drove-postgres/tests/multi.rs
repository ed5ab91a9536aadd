//! Several store instances on one schema, as several `drove serve` nodes on one database: the
//! guarantees of the store must hold across them, and each node's hub must hear of the others'
//! commits. Also: migrations racing at start, a lost listener, connections lost mid-call.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SchemaGuard, new_schema, open};
use drove_core::FailKind;
use drove_postgres::{PostgresStore, SCHEMA_VERSION, migrate};
use drove_store::Outcome;
use drove_store::conformance::{T0, at, claim, claim_as, complete, end, job, job_with, set_queue, submit};
use drove_store::{Store, StoreError};

const WAIT: Duration = Duration::from_secs(30);

async fn admin(guard: &SchemaGuard) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&guard.url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn two(guard: &SchemaGuard) -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    (open(guard).await, open(guard).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_finished_on_one_instance_wakes_watchers_and_claimers_on_another() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    // A claimer waiting on B hears of a job submitted through A.
    let notify = b.hub().queue_notify("q");
    let waiting = notify.notified();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    let id = submit(&*a, job("q"), T0).await.job.id;
    tokio::time::timeout(WAIT, waiting).await.expect("B's claimers notified of A's submit");
    // A waiter on B gets the job A finished, itself (not a poke), promptly.
    let mut watch = b.hub().watch_job(id);
    let c = claim(&*a, "q", 1, T0).await.pop().expect("claimed");
    let started = Instant::now();
    complete(&*a, &c, "\"from A\"", T0).await.expect("complete");
    let got = tokio::time::timeout(WAIT, watch.changed()).await.expect("B's waiter woken").expect("the job");
    let took = started.elapsed();
    assert_eq!(got.result.as_ref().map(|r| r.get()), Some("\"from A\""));
    assert!(took < Duration::from_secs(2), "woken after {took:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_of_one_key_through_two_instances_create_one_job() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s: Arc<dyn Store> = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { submit(&*s, job_with("q", &i.to_string()).with_key("k"), T0).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let sub = t.await.expect("task");
        ids.insert(sub.job.id);
        created += usize::from(sub.created);
    }
    assert_eq!(ids.len(), 1, "every submitter got the same job");
    assert_eq!(created, 1, "exactly one submit created it");
    assert_eq!(a.list_jobs(Default::default(), 100, None).await.unwrap().jobs.len(), 1);
    assert_eq!(b.get_queue("q", T0).await.unwrap().unwrap().counts.queued, 1);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_on_two_instances_never_share_a_job() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    a.submit((0..400).map(|_| job("q")).collect(), T0).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s: Arc<dyn Store> = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = claim_as(&*s, "q", &format!("w{i}"), 5, T0).await;
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.job.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a job was claimed twice");
    assert_eq!(all.len(), 400);
    assert_eq!(a.get_queue("q", T0).await.unwrap().unwrap().counts.running, 400);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_concurrency_one_holds_with_claimers_on_two_instances() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    set_queue(&*a, "q", r#"{"group_concurrency": 1}"#, T0).await;
    let batch = (0..120).map(|i| job("q").with_group(format!("g{}", i % 12))).collect();
    b.submit(batch, T0).await.unwrap();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s: Arc<dyn Store> = if i % 2 == 0 { a.clone() } else { b.clone() };
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                let mut done = 0;
                let mut idle = 0;
                while idle < 50 {
                    let got = claim_as(&*s, "q", &format!("w{i}"), 3, T0).await;
                    if got.is_empty() {
                        idle += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    idle = 0;
                    for c in &got {
                        let g = c.job.group.clone().unwrap();
                        assert!(running.lock().unwrap().insert(g.clone()), "two running jobs in {g}");
                    }
                    for c in got {
                        running.lock().unwrap().remove(c.job.group.as_deref().unwrap());
                        complete(&*s, &c, "null", T0).await.unwrap();
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total > 0);
    let info = a.get_queue("q", T0).await.unwrap().unwrap();
    assert_eq!(info.counts.succeeded, total);
    assert_eq!(info.counts.queued + info.counts.succeeded, 120);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_by_three_instances_at_once_apply_once() {
    let Some(guard) = new_schema().await else { return };
    let opts = common::options(&guard);
    let (x, y, z) = tokio::join!(migrate(&opts), migrate(&opts), migrate(&opts));
    let mut applied: Vec<i32> = [x, y, z].into_iter().flat_map(|r| r.expect("migrate")).collect();
    applied.sort_unstable();
    assert_eq!(applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>(), "each version applied exactly once");
    // Three nodes opening together on a new schema all start.
    let Some(fresh) = new_schema().await else { return };
    let (x, y, z) = tokio::join!(
        PostgresStore::open(common::options(&fresh)),
        PostgresStore::open(common::options(&fresh)),
        PostgresStore::open(common::options(&fresh)),
    );
    let stores = [x.expect("open 1"), y.expect("open 2"), z.expect("open 3")];
    let client = admin(&fresh).await;
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT version) FROM \"{}\".schema_migrations", fresh.schema),
            &[],
        )
        .await
        .unwrap();
    let (rows, versions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((rows, versions), (i64::from(SCHEMA_VERSION), i64::from(SCHEMA_VERSION)));
    for s in &stores {
        submit(s, job("q"), T0).await;
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_migration_upgrades_a_populated_schema_of_the_version_before() {
    let Some(guard) = new_schema().await else { return };
    let opts = common::options(&guard);
    migrate(&opts).await.expect("migrate");
    let client = admin(&guard).await;
    let schema = &guard.schema;
    // Back to version 4's predecessor, with finished jobs in it: a partial success and a
    // failure from a minute ago.
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".jobs DROP COLUMN traceparent, DROP COLUMN tracestate; \
             DELETE FROM \"{schema}\".schema_migrations WHERE version = 7; \
             DROP TABLE \"{schema}\".schedules; DROP TABLE \"{schema}\".job_deps; \
             ALTER TABLE \"{schema}\".jobs DROP COLUMN parent_id, DROP COLUMN depth, DROP COLUMN deps, \
                 DROP COLUMN deps_pending, DROP COLUMN dep_failure, DROP COLUMN wait_for, DROP COLUMN follow_key, \
                 DROP COLUMN links, DROP COLUMN children_total, DROP COLUMN children_succeeded, \
                 DROP COLUMN children_partial, DROP COLUMN children_failed, DROP COLUMN children_cancelled, \
                 DROP COLUMN fan_in; \
             DELETE FROM \"{schema}\".schema_migrations WHERE version = 6; \
             ALTER TABLE \"{schema}\".queues DROP COLUMN learn_us, DROP COLUMN learn_at, DROP COLUMN learn_strikes; \
             ALTER TABLE \"{schema}\".groups DROP COLUMN learn_us, DROP COLUMN learn_at, DROP COLUMN learn_strikes; \
             DELETE FROM \"{schema}\".schema_migrations WHERE version = 5; \
             ALTER TABLE \"{schema}\".jobs DROP COLUMN transient_retries, DROP COLUMN transient_streak; \
             DROP TABLE \"{schema}\".outcomes; DROP TABLE \"{schema}\".outcome_deltas; \
             DELETE FROM \"{schema}\".schema_migrations WHERE version = 4; \
             INSERT INTO \"{schema}\".jobs (id, queue, payload, priority, state, max_attempts, run_at, created_at, \
                 finished_at, partial, error_kind) VALUES \
               (1, 'q', '{{}}', 0, 3, 20, 1800000000000, 1800000000000, 1800000000000, true, NULL), \
               (2, 'q', '{{}}', 0, 4, 20, 1800000000000, 1800000000000, 1800000000000, false, 1); \
             INSERT INTO \"{schema}\".queues (name, created_at) VALUES ('q', 1800000000000); \
             INSERT INTO \"{schema}\".count_deltas (queue, state, n) VALUES ('q', 3, 1), ('q', 4, 1);"
        ))
        .await
        .unwrap();
    assert_eq!(SCHEMA_VERSION, 7, "this test undoes versions 4 to 7; a newer migration needs its own");
    assert_eq!(migrate(&opts).await.expect("upgrade"), vec![4, 5, 6, 7]);
    let store = PostgresStore::open(opts).await.expect("open");
    let q = store.get_queue("q", T0).await.unwrap().expect("the queue's jobs survived");
    assert_eq!((q.counts.succeeded, q.counts.partial, q.counts.failed), (1, 1, 1));
    let job = store.get_job(drove_core::JobId(2)).await.unwrap().expect("the failed job survived");
    assert_eq!(job.transient_retries, 0);
    assert_eq!((job.parent, job.children, job.depends_on.len(), job.trace), (None, None, 0, None));
    let outcomes = store.outcomes(drove_core::Millis(1_799_999_000_000)).await.unwrap();
    let n: i64 = outcomes.iter().map(|o| o.n).sum();
    assert_eq!(n, 2, "the jobs already finished are counted in the windows: {outcomes:?}");
    store.close().await;
}

/// Waits until `sql` (run on the admin connection) returns true.
async fn until(client: &tokio_postgres::Client, sql: &str, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let yes: bool = client.query_one(sql, &[]).await.unwrap().get(0);
        if yes {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_reconnects_and_wakes_every_waiter() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    let id = submit(&*a, job("q"), T0).await.job.id;
    let mut watch = a.hub().watch_job(id);
    let client = admin(&guard).await;
    let listener = format!("drove-listener:{}", guard.schema);
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&listener],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 2, "both instances' listeners");
    // Notifications may have been lost: A's waiter is told to look for itself.
    let poked = tokio::time::timeout(WAIT, watch.changed()).await.expect("woken after the reconnect");
    assert!(poked.is_none(), "a poke, not a finished job");
    // And the new listener hears B's commits again.
    // Both listen again once their last statement (after LISTEN) is the NOTIFY they prepare.
    let listening = format!(
        "SELECT count(*) = 2 FROM pg_stat_activity WHERE application_name = '{listener}' \
         AND state = 'idle' AND query LIKE '%pg_notify%'"
    );
    until(&client, &listening, "both listeners back").await;
    let mut watch = a.hub().watch_job(id);
    let c = claim(&*b, "q", 1, T0).await.pop().unwrap();
    complete(&*b, &c, "1", T0).await.unwrap();
    let got = loop {
        match tokio::time::timeout(WAIT, watch.changed()).await.expect("woken") {
            Some(job) => break job,
            None => continue, // a late poke from the reconnect
        }
    };
    assert_eq!(got.id, id);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_before_commit_is_retried() {
    let Some(guard) = new_schema().await else { return };
    let store = open(&guard).await;
    set_queue(&*store, "q", r#"{"concurrency": 5}"#, T0).await;
    submit(&*store, job("q"), T0).await;
    // Hold the queue's row so the claim (a limited queue locks it) stops mid-transaction.
    let mut holder = admin(&guard).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(&format!("SELECT 1 FROM \"{}\".queues WHERE name = 'q' FOR UPDATE", guard.schema), &[])
        .await
        .unwrap();
    let claimer = {
        let s = Arc::clone(&store);
        tokio::spawn(async move { claim(&*s, "q", 1, T0).await })
    };
    let client = admin(&guard).await;
    let app = format!("drove:{}", guard.schema);
    until(
        &client,
        &format!("SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = '{app}' AND wait_event_type = 'Lock'"),
        "the claim to wait for the queue's row",
    )
    .await;
    let ended: bool = client
        .query_one(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended);
    tx.rollback().await.unwrap();
    let got = tokio::time::timeout(WAIT, claimer).await.expect("claim answered").expect("claim task");
    assert_eq!(got.len(), 1, "the claim ran again on a new connection and took the job");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    let Some(guard) = new_schema().await else { return };
    // A port nothing listens on.
    let mut opts = common::options(&guard);
    opts.url = "postgres://postgres@127.0.0.1:1/postgres".into();
    opts.connect_timeout = Duration::from_secs(2);
    match PostgresStore::open(opts).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("opened a store on a closed port"),
    }
    // A store whose pool is closed answers Unavailable too.
    let store = open(&guard).await;
    store.close().await;
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_learned_on_one_node_paces_claims_on_every_node() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    let patch: drove_core::queue::QueuePatch =
        serde_json::from_str(r#"{"rate": {"limit": 50, "period_ms": 1000, "burst": 60}}"#).unwrap();
    a.put_queue("q", patch, T0).await.unwrap();
    a.submit((0..60).map(|_| job("q")).collect(), T0).await.unwrap();
    let runs = claim(&*a, "q", 51, T0).await;
    for r in &runs[..50] {
        complete(&*a, r, "1", at(500)).await.unwrap();
    }
    // Node A hears the provider's 429.
    let outcome =
        Outcome::Fail { kind: FailKind::Throttled, message: "429".into(), retry_after_ms: Some(100) };
    end(&*a, &runs[50], outcome, at(1_000)).await.unwrap();
    // Node B obeys the rate A learned.
    let q = b.get_queue("q", T0).await.unwrap().unwrap();
    assert_eq!(q.rate_now, Some(25.0), "the first throttle halves the rate, for every node");
}

/// Schedules on two nodes: both pass at every tick (and race each other's restarts), and each
/// tick of each schedule makes exactly one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_passing_at_every_tick_enqueue_each_tick_once() {
    let Some(guard) = new_schema().await else { return };
    let (a, b) = two(&guard).await;
    for i in 0..30 {
        let spec =
            serde_json::from_str(&format!(r#"{{"cron": "@every 10s", "queue": "fleet", "payload": {i}}}"#))
                .unwrap();
        a.put_schedule(&format!("s{i}"), spec, T0).await.unwrap();
    }
    for tick in 1..=4 {
        let now = at(tick * 10_000);
        let tasks: Vec<_> = (0..6)
            .map(|k| {
                let s: Arc<dyn Store> = if k % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { s.fire_schedules(now, 8).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        while a.fire_schedules(now, 8).await.unwrap() > 0 {}
    }
    // A tick while node A is down: B enqueues it; A, back, finds nothing left to do.
    a.close().await;
    assert_eq!(b.fire_schedules(at(50_000), 100).await.unwrap(), 30);
    let a = open(&guard).await;
    assert_eq!(a.fire_schedules(at(50_000), 100).await.unwrap(), 0);
    let jobs = a.list_jobs(Default::default(), 1_000, None).await.unwrap().jobs;
    assert_eq!(jobs.len(), 150, "30 schedules x 5 ticks, each once");
    let mut ticks: Vec<(String, i64)> =
        jobs.iter().map(|j| (j.payload.get().to_owned(), j.run_at.0)).collect();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), 150, "no tick twice");
    a.close().await;
    b.close().await;
}
