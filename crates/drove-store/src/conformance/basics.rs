//! Submitting, claiming, queues, counts, listing and pruning.

use std::sync::Arc;

use drove_core::JobState;

use super::*;
use crate::{Counts, JobFilter, Outcome};

pub async fn submit_creates_queued_job_with_defaults(s: Arc<dyn Store>) {
    let mut j = job_with("emails", r#"{"to":"a@example.com"}"#);
    j.kind = Some("welcome".into());
    let sub = submit(&*s, j, T0).await;
    assert!(sub.created);
    let job = sub.job;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 20);
    assert_eq!(job.run_at, T0);
    assert_eq!(job.created_at, T0);
    assert_eq!(job.kind.as_deref(), Some("welcome"));
    assert_eq!(job.payload.get(), r#"{"to":"a@example.com"}"#);
    assert!(!job.cancel_requested && !job.partial);
    assert_eq!(get(&*s, job.id).await, job, "stored as returned");
}

/// The trace context is kept on every insert path (a plain batch, a keyed job, one with
/// dependencies) and handed out with the claim; a job without one has none.
pub async fn the_trace_context_is_kept_and_claimed_with_the_job(s: Arc<dyn Store>) {
    let tc = |span: &str| drove_core::TraceContext {
        traceparent: format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01"),
        tracestate: (span == "00f067aa0ba902b7").then(|| "vendor=1".to_owned()),
    };
    let plain = NewJob { trace: Some(tc("00f067aa0ba902b7")), ..job("q") };
    let keyed = NewJob { trace: Some(tc("00f067aa0ba902b8")), ..job("q").with_key("k") };
    let bare = job("q");
    let subs = s.submit(vec![plain, keyed, bare], T0).await.unwrap();
    let after = NewJob { trace: Some(tc("00f067aa0ba902b9")), depends_on: vec![subs[2].job.id], ..job("q") };
    let dep = submit(&*s, after, T0).await.job.id;
    assert_eq!(subs[0].job.trace, Some(tc("00f067aa0ba902b7")));
    assert_eq!(get(&*s, subs[0].job.id).await.trace, Some(tc("00f067aa0ba902b7")));
    assert_eq!(get(&*s, subs[1].job.id).await.trace, Some(tc("00f067aa0ba902b8")));
    assert_eq!(get(&*s, subs[2].job.id).await.trace, None);
    assert_eq!(get(&*s, dep).await.trace, Some(tc("00f067aa0ba902b9")));
    let claimed = claim(&*s, "q", 3, T0).await;
    let traces: Vec<_> = claimed.iter().map(|c| c.job.trace.clone()).collect();
    assert_eq!(traces, vec![Some(tc("00f067aa0ba902b7")), Some(tc("00f067aa0ba902b8")), None]);
    // A malformed context never reaches the store.
    let bad = NewJob {
        trace: Some(drove_core::TraceContext { traceparent: "00-zz".into(), tracestate: None }),
        ..job("q")
    };
    match s.submit(vec![bad], T0).await {
        Err(StoreError::Invalid(v)) => assert_eq!(v.field, "traceparent"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub async fn submit_with_future_run_at_is_scheduled_until_promoted(s: Arc<dyn Store>) {
    let mut j = job("q");
    j.run_at = Some(at(5_000));
    let id = submit(&*s, j, T0).await.job.id;
    assert_eq!(get(&*s, id).await.state, JobState::Scheduled);
    assert_eq!(s.next_due().await.unwrap().0, Some(at(5_000)));
    assert!(claim(&*s, "q", 10, at(6_000)).await.is_empty(), "not claimable before promotion");
    assert_eq!(s.promote(at(4_999), 100).await.unwrap(), 0);
    assert_eq!(get(&*s, id).await.state, JobState::Scheduled);
    assert_eq!(s.promote(at(5_000), 100).await.unwrap(), 1);
    assert_eq!(get(&*s, id).await.state, JobState::Queued);
    assert_eq!(s.next_due().await.unwrap().0, None);
    assert_eq!(claim(&*s, "q", 10, at(5_001)).await.len(), 1);
}

pub async fn invalid_entry_rejects_the_whole_batch_and_writes_nothing(s: Arc<dyn Store>) {
    let mut bad = job("q");
    bad.key = Some(String::new());
    let err = s.submit(vec![job("q"), bad, job("q")], T0).await.unwrap_err();
    match err {
        StoreError::Invalid(v) => assert_eq!(v.field, "jobs[1].key"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let err = s.submit(vec![job("not a queue")], T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref v) if v.field == "queue"), "{err:?}");
    let mut neg = job("q");
    neg.max_attempts = Some(0);
    assert!(matches!(s.submit(vec![neg], T0).await, Err(StoreError::Invalid(_))));
    let page = s.list_jobs(JobFilter::default(), 100, None).await.unwrap();
    assert!(page.jobs.is_empty(), "nothing half-written: {:?}", page.jobs);
}

pub async fn oversized_payload_is_rejected(s: Arc<dyn Store>) {
    let big = format!("\"{}\"", "x".repeat(s.max_payload()));
    let err = s.submit(vec![job_with("q", &big)], T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref v) if v.field == "payload"), "{err:?}");
}

pub async fn job_ids_increase(s: Arc<dyn Store>) {
    let mut last = None;
    for i in 0..20 {
        let id = submit(&*s, job("q"), at(i)).await.job.id;
        assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
        last = Some(id);
    }
    let many = s.submit((0..50).map(|_| job("q")).collect(), at(100)).await.unwrap();
    for w in many.windows(2) {
        assert!(w[1].job.id > w[0].job.id);
    }
}

pub async fn claim_orders_by_priority_then_fifo(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (i, prio) in [0, 5, 0, 5, -3, 10].into_iter().enumerate() {
        let mut j = job("q");
        j.priority = prio;
        ids.push(submit(&*s, j, at(i as i64)).await.job.id);
    }
    let order: Vec<_> = claim(&*s, "q", 10, at(10)).await.into_iter().map(|c| c.job.id).collect();
    assert_eq!(order, vec![ids[5], ids[1], ids[3], ids[0], ids[2], ids[4]]);
}

pub async fn claim_respects_max_and_empty_queue_returns_nothing(s: Arc<dyn Store>) {
    assert!(claim(&*s, "empty", 5, T0).await.is_empty());
    s.submit((0..7).map(|_| job("q")).collect(), T0).await.unwrap();
    assert_eq!(claim(&*s, "q", 3, at(1)).await.len(), 3);
    assert_eq!(claim(&*s, "q", 3, at(2)).await.len(), 3);
    assert_eq!(claim(&*s, "q", 3, at(3)).await.len(), 1);
    assert!(claim(&*s, "q", 3, at(4)).await.is_empty());
    let bad = ClaimRequest { queue: "q".into(), worker: "w".into(), max: 0, lease_ms: None };
    assert!(matches!(s.claim(bad, T0).await, Err(StoreError::Invalid(ref v)) if v.field == "max"));
}

pub async fn claim_counts_the_attempt_and_leases(s: Arc<dyn Store>) {
    let id = submit(&*s, job("q"), T0).await.job.id;
    let req = ClaimRequest { queue: "q".into(), worker: "worker-7".into(), max: 1, lease_ms: Some(30_000) };
    let c = s.claim(req, at(10)).await.unwrap().jobs.pop().unwrap();
    assert_eq!(c.job.id, id);
    assert_eq!(c.job.state, JobState::Running);
    assert_eq!(c.job.attempt, 1);
    assert_eq!(c.job.started_at, Some(at(10)));
    assert_eq!(c.lease_expires_at, at(30_010));
    assert_eq!(c.job.lease_expires_at, Some(at(30_010)));
    assert_eq!(c.job.worker.as_deref(), Some("worker-7"));
    assert_eq!(get(&*s, id).await, c.job);
    // Default lease: 10 s.
    submit(&*s, job("q"), at(20)).await;
    let c2 = claim(&*s, "q", 1, at(30)).await.pop().unwrap();
    assert_eq!(c2.lease_expires_at, at(10_030));
}

pub async fn queue_exists_from_first_submit_claim_or_put(s: Arc<dyn Store>) {
    assert!(s.get_queue("a", T0).await.unwrap().is_none());
    submit(&*s, job("a"), T0).await;
    claim(&*s, "b", 1, T0).await;
    set_queue(&*s, "c", r#"{"concurrency": 3}"#, T0).await;
    let names: Vec<_> = s.list_queues(T0).await.unwrap().into_iter().map(|q| q.name).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    let c = s.get_queue("c", T0).await.unwrap().unwrap();
    assert_eq!(c.config.concurrency, Some(3));
    assert_eq!(c.limit_now, Some(3));
    let a = s.get_queue("a", T0).await.unwrap().unwrap();
    assert_eq!(a.counts.queued, 1);
    assert_eq!(a.limit_now, None);
}

pub async fn paused_queue_hands_out_nothing_until_resumed(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let info = set_queue(&*s, "q", r#"{"paused": true}"#, T0).await;
    assert_eq!(info.config.paused, Some(true));
    assert!(claim(&*s, "q", 5, at(1)).await.is_empty());
    set_queue(&*s, "q", r#"{"paused": false}"#, at(2)).await;
    assert_eq!(claim(&*s, "q", 5, at(3)).await.len(), 1);
}

pub async fn queue_concurrency_caps_running_jobs(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"concurrency": 2}"#, T0).await;
    s.submit((0..5).map(|_| job("q")).collect(), T0).await.unwrap();
    let first = claim(&*s, "q", 5, at(1)).await;
    assert_eq!(first.len(), 2);
    assert!(claim(&*s, "q", 5, at(2)).await.is_empty());
    complete(&*s, &first[0], "1", at(3)).await.unwrap();
    assert_eq!(claim(&*s, "q", 5, at(4)).await.len(), 1);
    assert!(claim(&*s, "q", 5, at(5)).await.is_empty());
    // Clearing the setting lifts the cap.
    set_queue(&*s, "q", r#"{"concurrency": null}"#, at(6)).await;
    assert_eq!(claim(&*s, "q", 5, at(7)).await.len(), 2);
}

pub async fn counts_follow_every_transition(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    let mut later = job("q");
    later.run_at = Some(at(1_000_000));
    let scheduled = submit(&*s, later, T0).await.job.id;
    s.submit((0..6).map(|_| job("q")).collect(), T0).await.unwrap();
    let c = claim(&*s, "q", 4, at(1)).await;
    complete(&*s, &c[0], "null", at(2)).await.unwrap();
    fail(&*s, &c[1], FailKind::Permanent, None, at(2)).await.unwrap();
    s.cancel(scheduled, at(3)).await.unwrap();
    let queued = s
        .list_jobs(JobFilter { state: Some(JobState::Queued), ..Default::default() }, 10, None)
        .await
        .unwrap();
    s.cancel(queued.jobs[0].id, at(3)).await.unwrap();
    s.retry(c[1].job.id, at(4)).await.unwrap();
    let info = s.get_queue("q", T0).await.unwrap().unwrap();
    let mut expect = Counts::default();
    for st in JobState::ALL {
        let page = s
            .list_jobs(
                JobFilter { queue: Some("q".into()), state: Some(st), ..Default::default() },
                100,
                None,
            )
            .await
            .unwrap();
        expect.add(st, page.jobs.len() as i64);
    }
    assert_eq!(info.counts, expect);
    assert_eq!(
        expect,
        Counts {
            waiting: 0,
            scheduled: 0,
            queued: 2,
            running: 2,
            succeeded: 1,
            failed: 0,
            cancelled: 2,
            partial: 0
        }
    );
    assert_eq!(s.prune(at(1_000_000_000), 0, 100).await.unwrap(), 3);
    let info = s.get_queue("q", T0).await.unwrap().unwrap();
    assert_eq!(
        info.counts,
        Counts {
            waiting: 0,
            scheduled: 0,
            queued: 2,
            running: 2,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            partial: 0
        }
    );
}

pub async fn list_jobs_filters_and_pages_newest_first(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let q = if i % 2 == 0 { "even" } else { "odd" };
        let mut j = job(q);
        j.key = Some(format!("k{i}"));
        j.group = Some(format!("g{}", i % 3));
        ids.push(submit(&*s, j, at(i)).await.job.id);
    }
    // Page through everything, 10 at a time.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.list_jobs(JobFilter::default(), 10, before).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let mut expect = ids.clone();
    expect.reverse();
    assert_eq!(seen, expect);
    // Each filter alone and combined.
    let by_queue =
        s.list_jobs(JobFilter { queue: Some("odd".into()), ..Default::default() }, 100, None).await.unwrap();
    assert_eq!(by_queue.jobs.len(), 12);
    assert!(by_queue.jobs.iter().all(|j| j.queue == "odd"));
    assert!(by_queue.jobs.windows(2).all(|w| w[0].id > w[1].id));
    // A key's history: the finished job and the one that replaced it, newest first.
    let c = claim(&*s, "odd", 1, at(50)).await.pop().unwrap();
    assert_eq!(c.job.key.as_deref(), Some("k1"));
    complete(&*s, &c, "null", at(51)).await.unwrap();
    let again = submit(&*s, job("odd").with_key("k1"), at(52)).await.job.id;
    let by_key =
        s.list_jobs(JobFilter { key: Some("k1".into()), ..Default::default() }, 100, None).await.unwrap();
    assert_eq!(by_key.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![again, ids[1]]);
    let by_group =
        s.list_jobs(JobFilter { group: Some("g1".into()), ..Default::default() }, 3, None).await.unwrap();
    assert_eq!(by_group.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[22], ids[19], ids[16]]);
    assert_eq!(by_group.next_before, Some(ids[16]));
    claim(&*s, "even", 4, at(100)).await;
    let running = s
        .list_jobs(JobFilter { state: Some(JobState::Running), ..Default::default() }, 100, None)
        .await
        .unwrap();
    assert_eq!(running.jobs.len(), 4);
    let combined = JobFilter {
        queue: Some("even".into()),
        state: Some(JobState::Queued),
        group: Some("g0".into()),
        ..Default::default()
    };
    let page = s.list_jobs(combined, 100, None).await.unwrap();
    assert!(
        page.jobs
            .iter()
            .all(|j| j.queue == "even" && j.state == JobState::Queued && j.group.as_deref() == Some("g0"))
    );
    assert!(!page.jobs.is_empty());
}

pub async fn prune_deletes_old_finished_jobs_but_keeps_reusable_successes(s: Arc<dyn Store>) {
    set_queue(&*s, "cache", r#"{"reuse_for_ms": 100000}"#, T0).await;
    let mut keyed = job("cache");
    keyed.key = Some("k".into());
    submit(&*s, keyed, T0).await;
    submit(&*s, job("cache"), T0).await;
    let running = submit(&*s, job("other"), T0).await.job.id;
    for c in claim(&*s, "cache", 2, at(1)).await {
        complete(&*s, &c, "1", at(2)).await.unwrap();
    }
    claim(&*s, "other", 1, at(3)).await;
    // Retention 10 s: at +50 s both finished jobs are past it, but the keyed success is still
    // inside its queue's 100 s reuse window.
    assert_eq!(s.prune(at(50_000), 10_000, 100).await.unwrap(), 1);
    let left = s.list_jobs(JobFilter::default(), 100, None).await.unwrap();
    assert_eq!(left.jobs.len(), 2);
    assert!(left.jobs.iter().any(|j| j.key.as_deref() == Some("k")));
    assert!(left.jobs.iter().any(|j| j.id == running), "active jobs are never pruned");
    assert_eq!(s.prune(at(200_000), 10_000, 100).await.unwrap(), 1);
    assert_eq!(s.list_jobs(JobFilter::default(), 100, None).await.unwrap().jobs.len(), 1);
}

pub async fn recent_runs_lists_finished_runs_newest_first(s: Arc<dyn Store>) {
    s.submit((0..4).map(|_| job("q")).collect(), T0).await.unwrap();
    submit(&*s, job("other"), T0).await;
    let c = claim(&*s, "q", 4, at(10)).await;
    complete(&*s, &c[0], "1", at(20)).await.unwrap();
    fail(&*s, &c[1], FailKind::Permanent, None, at(30)).await.unwrap();
    let partial = Outcome::Complete { result: None, partial: true };
    end(&*s, &c[2], partial, at(40)).await.unwrap();
    // c[3] still runs; a job cancelled before it ran is not a run.
    let never = submit(&*s, job("q"), at(41)).await.job.id;
    s.cancel(never, at(42)).await.unwrap();
    let oc = claim(&*s, "other", 1, at(10)).await.pop().unwrap();
    complete(&*s, &oc, "1", at(50)).await.unwrap();
    let runs = s.recent_runs("q", at(25), 100).await.unwrap();
    let got: Vec<_> = runs.iter().map(|r| (r.id, r.state, r.finished_at, r.partial)).collect();
    assert_eq!(
        got,
        vec![
            (c[2].job.id, JobState::Succeeded, at(40), true),
            (c[1].job.id, JobState::Failed, at(30), false),
        ]
    );
    assert_eq!(runs[0].started_at, at(10));
    assert_eq!(runs[0].run_at, T0);
    assert_eq!(s.recent_runs("q", T0, 1).await.unwrap().len(), 1, "limit");
}

pub async fn partial_successes_are_counted_listed_and_pruned_apart(s: Arc<dyn Store>) {
    s.submit((0..5).map(|_| job("q")).collect(), T0).await.unwrap();
    let c = claim(&*s, "q", 5, at(1)).await;
    for (i, run) in c.iter().enumerate() {
        let partial = i < 2;
        end(&*s, run, Outcome::Complete { result: None, partial }, at(10)).await.unwrap();
    }
    let counts = s.get_queue("q", T0).await.unwrap().unwrap().counts;
    assert_eq!((counts.succeeded, counts.partial), (5, 2), "partial is a subset of succeeded");
    let listed = s.list_queues(T0).await.unwrap();
    assert_eq!(listed.iter().find(|q| q.name == "q").unwrap().counts.partial, 2);
    // The listing filters them, in a queue and across queues.
    for queue in [Some("q".to_owned()), None] {
        let only = JobFilter { queue: queue.clone(), partial: Some(true), ..Default::default() };
        let page = s.list_jobs(only, 100, None).await.unwrap();
        assert_eq!(page.jobs.len(), 2);
        assert!(page.jobs.iter().all(|j| j.partial && j.state == JobState::Succeeded));
        let full = JobFilter { queue, partial: Some(false), ..Default::default() };
        assert_eq!(s.list_jobs(full, 100, None).await.unwrap().jobs.len(), 3);
    }
    // Pruned partial successes leave the count.
    assert_eq!(s.prune(at(1_000_000), 1_000, 100).await.unwrap(), 5);
    let counts = s.get_queue("q", T0).await.unwrap().unwrap().counts;
    assert_eq!((counts.succeeded, counts.partial), (0, 0));
}

pub async fn outcomes_count_every_ended_run_and_outlive_the_jobs(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"max_attempts": 1}"#, T0).await;
    s.submit((0..30).map(|_| job("q")).collect(), T0).await.unwrap();
    s.submit(vec![job("other"), job("other")], T0).await.unwrap();
    let c = claim(&*s, "q", 30, at(1)).await;
    for (i, run) in c.iter().enumerate() {
        let now = at(60_000 * (i as i64 % 3)); // spread over three minutes
        match i {
            0..20 => end(&*s, run, Outcome::Complete { result: None, partial: false }, now).await.unwrap(),
            20..25 => end(&*s, run, Outcome::Complete { result: None, partial: true }, now).await.unwrap(),
            25..28 => fail(&*s, run, FailKind::Permanent, None, now).await.unwrap(),
            _ => fail(&*s, run, FailKind::Retryable, None, now).await.unwrap(), // no attempt left
        };
    }
    let other =
        s.list_jobs(JobFilter { queue: Some("other".into()), ..Default::default() }, 10, None).await.unwrap();
    s.cancel(other.jobs[0].id, at(5)).await.unwrap();
    let total = |o: &[crate::OutcomeCount], f: &dyn Fn(&crate::OutcomeCount) -> bool| -> i64 {
        o.iter().filter(|x| f(x)).map(|x| x.n).sum()
    };
    let all = s.outcomes(T0).await.unwrap();
    let q = |x: &crate::OutcomeCount| x.queue == "q";
    assert_eq!(total(&all, &|x| q(x) && x.state == JobState::Succeeded), 25);
    assert_eq!(total(&all, &|x| q(x) && x.state == JobState::Succeeded && x.partial), 5);
    assert_eq!(total(&all, &|x| q(x) && x.state == JobState::Failed), 5);
    assert_eq!(
        total(&all, &|x| q(x) && x.error_kind == Some(drove_core::ErrorKind::Permanent)),
        3,
        "failures are counted by their error kind"
    );
    assert_eq!(total(&all, &|x| x.queue == "other" && x.state == JobState::Cancelled), 1);
    // A window from the third minute counts only what ended in it.
    let late = s.outcomes(at(120_000)).await.unwrap();
    assert_eq!(total(&late, &|x| q(x)), 10);
    // The counts outlive the jobs they counted.
    s.prune(at(10_000_000), 1_000, 1_000).await.unwrap();
    assert!(
        s.list_jobs(JobFilter { queue: Some("q".into()), ..Default::default() }, 10, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    let kept = s.outcomes(T0).await.unwrap();
    assert_eq!(total(&kept, &|x| q(x)), 30);
}
