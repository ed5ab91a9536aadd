//! How runs end, cancellation, redrive, and the notifications a store gives.

use std::sync::Arc;
use std::time::Duration;

use drove_core::{ErrorKind, JobState};

use super::*;
use crate::Heartbeat;

pub async fn retryable_failure_backs_off_then_fails_after_max_attempts(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"backoff": {"base_ms": 1000, "max_ms": 1000}, "max_attempts": 3}"#, T0).await;
    let id = submit(&*s, job("q"), T0).await.job.id;
    let mut now = T0;
    for attempt in 1..=3 {
        s.promote(now, 100).await.unwrap();
        let c = claim(&*s, "q", 1, now).await.pop().expect("claimable");
        assert_eq!(c.job.attempt, attempt);
        let j = fail(&*s, &c, FailKind::Retryable, None, now).await.unwrap();
        assert_eq!(j.error.as_ref().map(|e| e.kind), Some(ErrorKind::Retryable));
        if attempt < 3 {
            assert!(matches!(j.state, JobState::Scheduled | JobState::Queued));
            // Full jitter over min(max, base * 2^(n-1)) = 1 s.
            assert!(j.run_at >= now && j.run_at <= now.plus_ms(1_000), "{:?}", j.run_at);
        } else {
            assert_eq!(j.state, JobState::Failed);
            assert_eq!(j.finished_at, Some(now));
        }
        now = now.plus_ms(1_000);
    }
    assert_eq!(get(&*s, id).await.attempt, 3);
}

pub async fn permanent_failure_fails_at_once(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Permanent, None, at(5)).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    let e = j.error.unwrap();
    assert_eq!((e.kind, e.at), (ErrorKind::Permanent, at(5)));
    assert_eq!(e.message, "Permanent failure");
}

pub async fn throttled_requeues_without_an_attempt_and_holds_the_queue(s: Arc<dyn Store>) {
    // Under a rate that does not learn, a throttled outcome holds the queue for its whole
    // retry-after (docs/API.md).
    set_queue(&*s, "q", r#"{"rate": {"limit": 1000, "period_ms": 1000, "burst": 100, "learn": false}}"#, T0)
        .await;
    s.submit(vec![job("q"), job("q")], T0).await.unwrap();
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Throttled, Some(2_000), at(100)).await.unwrap();
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.run_at, at(2_100));
    assert_eq!(j.error.as_ref().map(|e| e.kind), Some(ErrorKind::Throttled));
    // The queue is held: the other job does not start either, and the claim says until when.
    let held = s
        .claim(ClaimRequest { queue: "q".into(), worker: "w".into(), max: 5, lease_ms: None }, at(200))
        .await
        .unwrap();
    assert!(held.jobs.is_empty());
    assert_eq!(held.retry_at, Some(at(2_100)));
    s.promote(at(2_100), 10).await.unwrap();
    let both = claim(&*s, "q", 5, at(2_100)).await;
    assert_eq!(both.len(), 2);
    let again = both.iter().find(|x| x.job.id == c.job.id).unwrap();
    assert_eq!(again.job.attempt, 1, "a throttled run used no attempt");
    // Default retry-after: 1 s.
    let j = fail(&*s, again, FailKind::Throttled, None, at(3_000)).await.unwrap();
    assert_eq!(j.run_at, at(4_000));
}

pub async fn a_learning_rate_holds_its_queue_one_interval_not_the_whole_retry_after(s: Arc<dyn Store>) {
    // The cut already slows the queue (1000/s halves to 500/s: one start per 2 ms); a whole
    // second of hold on top would idle it after every probe.
    set_queue(&*s, "lq", r#"{"rate": {"limit": 1000, "period_ms": 1000}}"#, T0).await;
    s.submit(vec![job("lq"), job("lq")], T0).await.unwrap();
    let c = claim(&*s, "lq", 1, T0).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Throttled, Some(1_000), at(100)).await.unwrap();
    assert_eq!(j.run_at, at(1_100), "the throttled job itself waits its retry-after");
    let held = s
        .claim(ClaimRequest { queue: "lq".into(), worker: "w".into(), max: 5, lease_ms: None }, at(101))
        .await
        .unwrap();
    assert!(held.jobs.is_empty(), "held for one interval");
    assert_eq!(held.retry_at, Some(at(102)));
    assert_eq!(claim(&*s, "lq", 5, at(102)).await.len(), 1, "the other job starts after one interval");
    assert_eq!(s.get_queue("lq", at(103)).await.unwrap().unwrap().rate_now, Some(500.0));
}

pub async fn throttled_with_group_rate_holds_only_the_group(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"group_rate": {"limit": 1000, "period_ms": 1000, "burst": 100}}"#, T0).await;
    let a = job("q").with_group("a");
    s.submit(vec![a.clone(), a, job("q").with_group("b")], T0).await.unwrap();
    let first = claim(&*s, "q", 1, at(1)).await.pop().unwrap();
    assert_eq!(first.job.group.as_deref(), Some("a"));
    fail(&*s, &first, FailKind::Throttled, Some(5_000), at(2)).await.unwrap();
    let next = claim(&*s, "q", 5, at(3)).await;
    let groups: Vec<_> = next.iter().map(|c| c.job.group.clone().unwrap()).collect();
    assert_eq!(groups, vec!["b".to_string()], "group a is held, b is not");
}

pub async fn snooze_requeues_without_an_attempt(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Snooze, Some(500), at(10)).await.unwrap();
    assert_eq!((j.state, j.run_at), (JobState::Scheduled, at(510)));
    assert!(j.error.is_none(), "a snooze is not an error");
    s.promote(at(510), 10).await.unwrap();
    let again = claim(&*s, "q", 1, at(510)).await.pop().unwrap();
    assert_eq!(again.job.attempt, 1);
    let j = fail(&*s, &again, FailKind::Snooze, Some(0), at(600)).await.unwrap();
    assert_eq!(j.state, JobState::Queued, "a zero snooze is ready at once");
}

pub async fn release_requeues_at_once_keeping_checkpoint(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let beat = Heartbeat {
        id: c.job.id,
        lease: c.lease,
        progress: None,
        checkpoint: Some(raw("{\"n\":3}")),
        lease_ms: None,
    };
    s.heartbeat(beat, at(1)).await.unwrap();
    let j = end(&*s, &c, Outcome::Release, at(2)).await.unwrap();
    assert_eq!((j.state, j.run_at), (JobState::Queued, at(2)));
    let again = claim(&*s, "q", 1, at(3)).await.pop().unwrap();
    assert_eq!(again.job.attempt, 1, "a release uses no attempt");
    assert_eq!(again.job.checkpoint.map(|c| c.get().to_owned()), Some("{\"n\":3}".into()));
}

pub async fn finish_batch_entries_fail_alone(s: Arc<dyn Store>) {
    s.submit((0..3).map(|_| job("q")).collect(), T0).await.unwrap();
    let c = claim(&*s, "q", 3, T0).await;
    let items = vec![
        Finish {
            id: c[0].job.id,
            lease: c[0].lease,
            outcome: Outcome::Complete { result: Some(raw("0")), partial: false },
        },
        Finish {
            id: c[1].job.id,
            lease: drove_core::LeaseToken(-5),
            outcome: Outcome::Complete { result: None, partial: false },
        },
        Finish { id: JobId(999_999), lease: c[2].lease, outcome: Outcome::Release },
        Finish {
            id: c[2].job.id,
            lease: c[2].lease,
            outcome: Outcome::Complete { result: Some(raw("2")), partial: false },
        },
    ];
    let out = s.finish(items, at(1)).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap().state, JobState::Succeeded);
    assert!(matches!(out[1], Err(StoreError::StaleLease)));
    assert!(matches!(out[2], Err(StoreError::NotFound(_))));
    assert_eq!(out[3].as_ref().unwrap().state, JobState::Succeeded);
    assert_eq!(get(&*s, c[1].job.id).await.state, JobState::Running);
}

pub async fn complete_records_result_and_partial(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let j = end(&*s, &c, Outcome::Complete { result: Some(raw(r#"{"rows":10}"#)), partial: true }, at(9))
        .await
        .unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert!(j.partial);
    assert_eq!(j.finished_at, Some(at(9)));
    assert_eq!(j.result.map(|r| r.get().to_owned()), Some(r#"{"rows":10}"#.into()));
    assert!(j.lease_expires_at.is_none() && j.worker.is_none());
}

pub async fn cancel_scheduled_or_queued_is_immediate(s: Arc<dyn Store>) {
    let mut later = job("q");
    later.run_at = Some(at(60_000));
    let a = submit(&*s, later, T0).await.job.id;
    let b = submit(&*s, job("q"), T0).await.job.id;
    for id in [a, b] {
        let j = s.cancel(id, at(1)).await.unwrap();
        assert_eq!((j.state, j.finished_at), (JobState::Cancelled, Some(at(1))));
    }
    assert!(claim(&*s, "q", 5, at(70_000)).await.is_empty());
    assert_eq!(s.promote(at(70_000), 10).await.unwrap(), 0);
}

pub async fn cancel_running_is_requested_then_cancelled_when_the_worker_stops(s: Arc<dyn Store>) {
    s.submit(vec![job("q"), job("q"), job("q")], T0).await.unwrap();
    let c = claim(&*s, "q", 3, T0).await;
    for x in &c {
        assert!(s.cancel(x.job.id, at(1)).await.unwrap().cancel_requested);
    }
    let beat =
        Heartbeat { id: c[0].job.id, lease: c[0].lease, progress: None, checkpoint: None, lease_ms: None };
    assert!(s.heartbeat(beat, at(2)).await.unwrap().cancel_requested, "seen on the next heartbeat");
    // The worker stops: by failing, by releasing, or by vanishing (its lease runs out).
    assert_eq!(fail(&*s, &c[0], FailKind::Retryable, None, at(3)).await.unwrap().state, JobState::Cancelled);
    assert_eq!(end(&*s, &c[1], Outcome::Release, at(3)).await.unwrap().state, JobState::Cancelled);
    s.reap(at(10_000), 10).await.unwrap();
    assert_eq!(get(&*s, c[2].job.id).await.state, JobState::Cancelled);
    // Cancelling twice is harmless while running.
}

pub async fn cancel_requested_job_that_completes_is_succeeded(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    s.cancel(c.job.id, at(1)).await.unwrap();
    assert!(s.cancel(c.job.id, at(2)).await.unwrap().cancel_requested, "idempotent");
    let j = complete(&*s, &c, "\"anyway\"", at(3)).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
}

pub async fn cancel_of_finished_job_is_wrong_state(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    complete(&*s, &c, "1", at(1)).await.unwrap();
    match s.cancel(c.job.id, at(2)).await {
        Err(StoreError::WrongState { state, .. }) => assert_eq!(state, JobState::Succeeded),
        other => panic!("expected WrongState, got {other:?}"),
    }
}

pub async fn redrive_queues_a_failed_job_with_attempt_zero(s: Arc<dyn Store>) {
    let mut j = job("q");
    j.max_attempts = Some(1);
    submit(&*s, j, T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let beat = Heartbeat {
        id: c.job.id,
        lease: c.lease,
        progress: None,
        checkpoint: Some(raw("5")),
        lease_ms: None,
    };
    s.heartbeat(beat, at(1)).await.unwrap();
    assert_eq!(fail(&*s, &c, FailKind::Retryable, None, at(2)).await.unwrap().state, JobState::Failed);
    let j = s.retry(c.job.id, at(3)).await.unwrap();
    assert_eq!((j.state, j.attempt, j.run_at), (JobState::Queued, 0, at(3)));
    assert!(j.finished_at.is_none());
    let again = claim(&*s, "q", 1, at(4)).await.pop().unwrap();
    assert_eq!(again.job.attempt, 1);
    assert_eq!(again.job.checkpoint.map(|c| c.get().to_owned()), Some("5".into()), "checkpoint kept");
}

pub async fn redrive_of_active_job_is_wrong_state(s: Arc<dyn Store>) {
    let id = submit(&*s, job("q"), T0).await.job.id;
    assert!(matches!(s.retry(id, at(1)).await, Err(StoreError::WrongState { state: JobState::Queued, .. })));
    claim(&*s, "q", 1, at(2)).await;
    assert!(matches!(s.retry(id, at(3)).await, Err(StoreError::WrongState { state: JobState::Running, .. })));
}

pub async fn unknown_job_is_not_found(s: Arc<dyn Store>) {
    let id = JobId(424_242);
    assert!(s.get_job(id).await.unwrap().is_none());
    assert!(matches!(s.cancel(id, T0).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.retry(id, T0).await, Err(StoreError::NotFound(_))));
}

pub async fn waiters_wake_when_a_job_finishes(s: Arc<dyn Store>) {
    let id = submit(&*s, job("q"), T0).await.job.id;
    let mut watches: Vec<_> = (0..50).map(|_| s.hub().watch_job(id)).collect();
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    complete(&*s, &c, "\"hello\"", at(1)).await.unwrap();
    for w in &mut watches {
        let job = tokio::time::timeout(Duration::from_secs(30), w.changed())
            .await
            .expect("woken")
            .expect("the finished job itself, not a poke");
        assert_eq!(job.result.as_ref().map(|r| r.get()), Some("\"hello\""));
    }
    drop(watches);
    assert_eq!(s.hub().watched_jobs(), 0, "registrations are removed");
}

pub async fn claimers_are_notified_when_jobs_become_ready(s: Arc<dyn Store>) {
    let notify = s.hub().queue_notify("q");
    let waiting = notify.notified();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    submit(&*s, job("q"), T0).await;
    tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("notified on submit");
    // And when a scheduled job is promoted.
    let mut later = job("q");
    later.run_at = Some(at(1_000));
    submit(&*s, later, T0).await;
    let waiting = notify.notified();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    s.promote(at(1_000), 10).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("notified on promote");
}

pub async fn one_job_completed_twice_in_a_batch_ends_once(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let done = |r: &str| Finish {
        id: c.job.id,
        lease: c.lease,
        outcome: Outcome::Complete { result: Some(raw(r)), partial: false },
    };
    let out = s.finish(vec![done("1"), done("2")], at(1)).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap().result.as_ref().map(|r| r.get()), Some("1"));
    assert!(matches!(out[1], Err(StoreError::StaleLease)), "{:?}", out[1]);
    assert_eq!(get(&*s, c.job.id).await.result.map(|r| r.get().to_owned()), Some("1".into()));
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().counts.succeeded, 1);
}

pub async fn completion_results_keep_their_json(s: Arc<dyn Store>) {
    let values = [
        r#""text with \"quotes\" and \u00e9""#,
        r#"{"a":[1,2,{"b":null}]}"#,
        "[1,2]",
        "3.5",
        "-7",
        "true",
        "null",
    ];
    s.submit(values.iter().map(|_| job("q")).collect(), T0).await.unwrap();
    let c = claim(&*s, "q", 20, T0).await;
    let mut items: Vec<Finish> = c
        .iter()
        .zip(values)
        .map(|(c, v)| Finish {
            id: c.job.id,
            lease: c.lease,
            outcome: Outcome::Complete { result: Some(raw(v)), partial: false },
        })
        .collect();
    submit(&*s, job("q"), T0).await;
    let none = claim(&*s, "q", 1, T0).await.pop().unwrap();
    items.push(Finish {
        id: none.job.id,
        lease: none.lease,
        outcome: Outcome::Complete { result: None, partial: true },
    });
    let out = s.finish(items, at(1)).await.unwrap();
    for (r, v) in out.iter().zip(values) {
        let job = r.as_ref().unwrap();
        let got: serde_json::Value = serde_json::from_str(job.result.as_ref().unwrap().get()).unwrap();
        let want: serde_json::Value = serde_json::from_str(v).unwrap();
        assert_eq!(got, want);
        let stored = get(&*s, job.id).await;
        let again: serde_json::Value = serde_json::from_str(stored.result.as_ref().unwrap().get()).unwrap();
        assert_eq!(again, want);
    }
    let last = out.last().unwrap().as_ref().unwrap();
    assert!(last.result.is_none() && last.partial);
}

/// Every run that ended in an error is in the job's history, whatever path recorded it (a
/// worker's failure, a throttle, the reaper), oldest first; successes, releases and snoozes add
/// nothing; a redrive keeps it; only the newest `ERROR_HISTORY` runs are kept.
pub async fn every_failed_run_is_kept_in_the_jobs_history(s: Arc<dyn Store>) {
    use drove_core::ERROR_HISTORY;
    no_backoff(&*s, "q").await;
    set_queue(&*s, "q", r#"{"max_attempts": 100}"#, T0).await;
    let id = submit(&*s, job("q"), T0).await.job.id;
    // Run 1 fails (retryable), run 2 is throttled (no attempt) in the same millisecond, run 3
    // is snoozed and run 4 released (neither is an error), run 5 is lost to the reaper.
    let c = claim(&*s, "q", 1, at(1)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Retryable, None, at(2)).await.unwrap();
    let c = claim(&*s, "q", 1, at(2)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Throttled, Some(1), at(2)).await.unwrap();
    s.promote(at(3), 10).await.unwrap();
    let c = claim(&*s, "q", 1, at(3)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Snooze, Some(1), at(3)).await.unwrap();
    s.promote(at(4), 10).await.unwrap();
    let c = claim(&*s, "q", 1, at(4)).await.pop().unwrap();
    end(&*s, &c, Outcome::Release, at(4)).await.unwrap();
    let c = claim(&*s, "q", 1, at(5)).await.pop().unwrap();
    assert_eq!(c.job.attempt, 2, "throttled, snoozed and released runs used no attempt");
    s.reap(at(5).plus_ms(10_000), 100).await.unwrap();
    let j = get(&*s, id).await;
    let seen: Vec<_> = j.errors.iter().map(|e| (e.attempt, e.kind, e.at)).collect();
    assert_eq!(
        seen,
        vec![
            (1, ErrorKind::Retryable, at(2)),
            (2, ErrorKind::Throttled, at(2)),
            (2, ErrorKind::Lost, at(5).plus_ms(10_000)),
        ]
    );
    assert_eq!(j.errors[0].message, "Retryable failure");
    // A success adds nothing and keeps the history; so does a redrive of a failed job.
    let c = claim(&*s, "q", 1, at(20_000)).await.pop().unwrap();
    let done = complete(&*s, &c, "1", at(20_001)).await.unwrap();
    assert_eq!(done.errors.len(), 3);
    set_queue(&*s, "p", r#"{"max_attempts": 1}"#, T0).await;
    let id = submit(&*s, job("p"), T0).await.job.id;
    let c = claim(&*s, "p", 1, at(1)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Permanent, None, at(2)).await.unwrap();
    let again = s.retry(id, at(3)).await.unwrap();
    assert_eq!(again.errors.len(), 1);
    // Only the newest runs are kept.
    no_backoff(&*s, "r").await;
    set_queue(&*s, "r", r#"{"max_attempts": 1000}"#, T0).await;
    let id = submit(&*s, job("r"), T0).await.job.id;
    let runs = ERROR_HISTORY as i64 + 5;
    for n in 1..=runs {
        let c = claim(&*s, "r", 1, at(n)).await.pop().unwrap();
        fail(&*s, &c, FailKind::Retryable, None, at(n)).await.unwrap();
    }
    let j = get(&*s, id).await;
    assert_eq!(j.errors.len(), ERROR_HISTORY);
    assert_eq!(j.errors.first().map(|e| e.attempt), Some(6));
    assert_eq!(j.errors.last().map(|e| e.attempt), Some(runs));
}

pub async fn throttled_without_a_rate_holds_nobody(s: Arc<dyn Store>) {
    // One customer's 429 must not stall the queue's other work when no rate is set.
    s.submit(vec![job("q"), job("q")], T0).await.unwrap();
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Throttled, Some(60_000), at(1)).await.unwrap();
    assert_eq!((j.state, j.run_at), (JobState::Scheduled, at(60_001)), "the job itself waits");
    let other = claim(&*s, "q", 5, at(2)).await;
    assert_eq!(other.len(), 1, "the other job starts at once");
    assert!(s.get_queue("q", T0).await.unwrap().unwrap().held_until.is_none());
}

pub async fn transient_failures_retry_fast_on_their_own_budget(s: Arc<dyn Store>) {
    set_queue(
        &*s,
        "q",
        r#"{"max_attempts": 2, "backoff": {"base_ms": 3600000, "max_ms": 3600000},
            "transient": {"retries": 3, "base_ms": 10, "max_ms": 40}}"#,
        T0,
    )
    .await;
    let id = submit(&*s, job("q"), T0).await.job.id;
    let mut now = T0;
    // A deadlock storm: three transient failures use no attempt and wait at most 40 ms each.
    for n in 1..=3 {
        s.promote(now, 10).await.unwrap();
        let c = claim(&*s, "q", 1, now).await.pop().expect("claimable after a short wait");
        assert_eq!(c.job.attempt, 1, "transient failures within the budget use no attempt");
        let j = fail(&*s, &c, FailKind::Transient, None, now).await.unwrap();
        assert_eq!(j.error.as_ref().map(|e| e.kind), Some(ErrorKind::Transient));
        assert_eq!(j.transient_retries, n);
        assert!(j.run_at.since(now) <= 40, "short backoff: {}", j.run_at.since(now));
        now = j.run_at.plus_ms(1);
    }
    // The fourth, past the budget, uses the attempt and the queue's own backoff.
    s.promote(now, 10).await.unwrap();
    let c = claim(&*s, "q", 1, now).await.pop().unwrap();
    let j = fail(&*s, &c, FailKind::Transient, None, now).await.unwrap();
    assert_eq!(j.transient_retries, 4);
    assert_eq!(j.attempt, 1);
    assert!(j.run_at.since(now) >= 0 && j.state != JobState::Failed);
    // The next attempt has a fresh budget, and a success ends it all.
    let later = j.run_at;
    s.promote(later, 10).await.unwrap();
    let c = claim(&*s, "q", 1, later).await.pop().unwrap();
    assert_eq!(c.job.attempt, 2);
    let j = fail(&*s, &c, FailKind::Transient, None, later).await.unwrap();
    assert!(matches!(j.state, JobState::Scheduled | JobState::Queued), "a fresh budget on the new attempt");
    assert_eq!(j.attempt, 2);
    assert!(j.run_at.since(later) <= 40);
    s.promote(j.run_at, 10).await.unwrap();
    let c = claim(&*s, "q", 1, j.run_at).await.pop().unwrap();
    let done = complete(&*s, &c, "1", j.run_at.plus_ms(1)).await.unwrap();
    assert_eq!((done.state, done.attempt, done.transient_retries), (JobState::Succeeded, 2, 5));
    assert_eq!(get(&*s, id).await.errors.iter().filter(|e| e.kind == ErrorKind::Transient).count(), 5);
}
