//! Schedules: one job per tick, whatever the restarts and races (drove_store::schedules).

use std::sync::Arc;

use drove_core::JobState;

use super::*;
use crate::schedules::ScheduleSpec;

fn spec(json: &str) -> ScheduleSpec {
    serde_json::from_str(json).expect("a valid schedule")
}

async fn jobs_of(s: &dyn Store, queue: &str) -> Vec<Job> {
    let f = crate::JobFilter { queue: Some(queue.into()), ..Default::default() };
    let mut jobs = s.list_jobs(f, 1_000, None).await.unwrap().jobs;
    jobs.reverse();
    jobs
}

pub async fn a_schedule_enqueues_one_job_per_tick(s: Arc<dyn Store>) {
    // T0 is a whole number of 10 s: the first tick after it is T0 + 10 s.
    let (info, created) = s
        .put_schedule("ping", spec(r#"{"cron": "@every 10s", "queue": "ticks", "payload": {"n": 1}}"#), T0)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(info.next_at, Some(at(10_000)));
    assert_eq!(s.next_tick().await.unwrap(), Some(at(10_000)));
    assert_eq!(s.fire_schedules(at(9_999), 100).await.unwrap(), 0, "not yet");
    assert_eq!(s.fire_schedules(at(10_000), 100).await.unwrap(), 1);
    assert_eq!(s.fire_schedules(at(10_500), 100).await.unwrap(), 0, "that tick is done");
    let jobs = jobs_of(&*s, "ticks").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].run_at, jobs[0].state, jobs[0].payload.get()),
        (at(10_000), JobState::Queued, r#"{"n": 1}"#)
    );
    let info = s.get_schedule("ping").await.unwrap().unwrap();
    assert_eq!(
        (info.next_at, info.last_tick_at, info.last_job),
        (Some(at(20_000)), Some(at(10_000)), Some(jobs[0].id))
    );
    assert_eq!(info.last_job_state, Some(JobState::Queued));
    // Run now: a job at once, the ticks unchanged.
    let now = s.run_schedule("ping", at(12_000)).await.unwrap();
    assert!(now.created);
    assert_eq!(s.get_schedule("ping").await.unwrap().unwrap().next_at, Some(at(20_000)));
    // An edit that keeps the pattern keeps the next tick; a new pattern starts after now.
    let (edited, created) = s
        .put_schedule("ping", spec(r#"{"cron": "@every 10s", "queue": "ticks", "payload": 2}"#), at(13_000))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(edited.next_at, Some(at(20_000)));
    let (changed, _) =
        s.put_schedule("ping", spec(r#"{"cron": "@every 7s", "queue": "ticks"}"#), at(13_000)).await.unwrap();
    assert!(changed.next_at.unwrap() > at(13_000));
    assert!(s.delete_schedule("ping").await.unwrap());
    assert!(!s.delete_schedule("ping").await.unwrap());
    assert_eq!(s.fire_schedules(at(100_000), 100).await.unwrap(), 0);
    assert_eq!(jobs_of(&*s, "ticks").await.len(), 2, "deleting a schedule keeps its jobs");
}

pub async fn missed_ticks_follow_the_catch_up_policy(s: Arc<dyn Store>) {
    for policy in ["none", "last", "all"] {
        let body = format!(r#"{{"cron": "0 * * * *", "queue": "cu-{policy}", "catch_up": "{policy}"}}"#);
        s.put_schedule(&format!("hourly-{policy}"), spec(&body), T0).await.unwrap();
    }
    // Every node down from T0 (08:00) until 11:30: the 09, 10 and 11 o'clock ticks were missed.
    let n = s.fire_schedules(at(3 * 3_600_000 + 1_800_000), 100).await.unwrap();
    assert_eq!(n, 4);
    assert_eq!(jobs_of(&*s, "cu-none").await.len(), 0);
    let last = jobs_of(&*s, "cu-last").await;
    assert_eq!(last.iter().map(|j| j.run_at).collect::<Vec<_>>(), vec![at(3 * 3_600_000)]);
    let all = jobs_of(&*s, "cu-all").await;
    assert_eq!(
        all.iter().map(|j| j.run_at).collect::<Vec<_>>(),
        vec![at(3_600_000), at(7_200_000), at(10_800_000)]
    );
    // Back on time: the noon tick, once each.
    let n = s.fire_schedules(at(4 * 3_600_000 + 300), 100).await.unwrap();
    assert_eq!(n, 3);
}

pub async fn a_paused_schedule_enqueues_nothing_and_resumes_after_now(s: Arc<dyn Store>) {
    s.put_schedule("p", spec(r#"{"cron": "@every 10s", "queue": "paused", "paused": true}"#), T0)
        .await
        .unwrap();
    assert_eq!(s.next_tick().await.unwrap(), None, "a paused schedule has no tick to wait for");
    assert_eq!(s.fire_schedules(at(60_000), 100).await.unwrap(), 0);
    let (resumed, _) =
        s.put_schedule("p", spec(r#"{"cron": "@every 10s", "queue": "paused"}"#), at(61_000)).await.unwrap();
    assert!(!resumed.spec.paused);
    assert_eq!(resumed.next_at, Some(at(70_000)), "ticks missed while paused are skipped");
    assert_eq!(s.fire_schedules(at(70_000), 100).await.unwrap(), 1);
}

pub async fn concurrent_passes_enqueue_each_tick_once(s: Arc<dyn Store>) {
    for i in 0..20 {
        let body = format!(r#"{{"cron": "@every 10s", "queue": "race-ticks", "payload": {i}}}"#);
        s.put_schedule(&format!("s{i}"), spec(&body), T0).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.fire_schedules(at(10_000), 7).await.unwrap() }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // Passes of 7 at a time may leave some for the next: drain them as the scheduler would.
    while s.fire_schedules(at(10_000), 7).await.unwrap() > 0 {}
    let jobs = jobs_of(&*s, "race-ticks").await;
    assert_eq!(jobs.len(), 20, "one job per schedule and tick ({total} by the racing passes)");
}
