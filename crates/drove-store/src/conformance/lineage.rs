//! Jobs that wait on jobs: dependencies, parents and children (fan-in), follow-ups and stale
//! answers for keys (drove_store::lineage).

use std::sync::Arc;

use drove_core::{ErrorKind, JobState, OnConflict, OnDependencyFailure, WaitingFor};

use super::*;
use crate::JobFilter;

fn after(queue: &str, deps: &[JobId]) -> NewJob {
    NewJob { depends_on: deps.to_vec(), ..job(queue) }
}

fn child(queue: &str, parent: JobId) -> NewJob {
    NewJob { parent: Some(parent), ..job(queue) }
}

async fn claim_one(s: &dyn Store, queue: &str, now: Millis) -> Claimed {
    claim(s, queue, 1, now).await.pop().expect("a job to claim")
}

async fn await_children(s: &dyn Store, c: &Claimed, now: Millis) -> Job {
    end(s, c, Outcome::AwaitChildren { result: Some(raw("\"first run\"")) }, now)
        .await
        .expect("await children")
}

pub async fn a_dependent_waits_until_its_dependencies_succeed(s: Arc<dyn Store>) {
    let a = submit(&*s, job("deps"), T0).await.job.id;
    let b = submit(&*s, job("deps"), T0).await.job.id;
    let c = submit(&*s, after("deps", &[a, b]), T0).await.job;
    assert_eq!((c.state, c.waiting_for), (JobState::Waiting, Some(WaitingFor::Dependencies)));
    assert_eq!(c.depends_on, vec![a, b]);
    assert_eq!(s.get_queue("deps", T0).await.unwrap().unwrap().counts.waiting, 1);
    let claimed = claim(&*s, "deps", 10, at(1)).await;
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![a, b],
        "the dependent is not claimable"
    );
    complete(&*s, &claimed[0], "1", at(2)).await.unwrap();
    assert_eq!(get(&*s, c.id).await.state, JobState::Waiting, "one dependency is left");
    complete(&*s, &claimed[1], "2", at(3)).await.unwrap();
    let ready = get(&*s, c.id).await;
    assert_eq!((ready.state, ready.waiting_for), (JobState::Queued, None));
    assert_eq!(claim_one(&*s, "deps", at(4)).await.job.id, c.id);
    let counts = s.get_queue("deps", at(4)).await.unwrap().unwrap().counts;
    assert_eq!((counts.waiting, counts.running), (0, 1));
}

pub async fn a_failed_dependency_ends_its_dependents_down_the_chain(s: Arc<dyn Store>) {
    let a = submit(&*s, job("chain"), T0).await.job.id;
    let b = submit(&*s, after("chain", &[a]), T0).await.job.id;
    let c = submit(&*s, after("chain", &[b]), T0).await.job.id;
    let anyway =
        submit(&*s, NewJob { on_dependency_failure: OnDependencyFailure::Run, ..after("chain", &[a]) }, T0)
            .await
            .job
            .id;
    let ca = claim_one(&*s, "chain", at(1)).await;
    fail(&*s, &ca, FailKind::Permanent, None, at(2)).await.unwrap();
    let b = get(&*s, b).await;
    assert_eq!(b.state, JobState::Failed);
    let err = b.error.expect("an error naming the dependency");
    assert_eq!((err.kind, err.message), (ErrorKind::Dependency, format!("dependency {a} failed")));
    let c = get(&*s, c).await;
    assert_eq!(c.state, JobState::Failed, "the failure runs down the chain");
    assert_eq!(c.error.unwrap().message, format!("dependency {} failed", b.id));
    assert_eq!(get(&*s, anyway).await.state, JobState::Queued, "on_dependency_failure: run starts anyway");
    // A cancelled dependency cancels its dependents.
    let d = submit(&*s, job("chain"), at(3)).await.job.id;
    let e = submit(&*s, after("chain", &[d]), at(3)).await.job.id;
    s.cancel(d, at(4)).await.unwrap();
    assert_eq!(get(&*s, e).await.state, JobState::Cancelled);
    let counts = s.get_queue("chain", at(5)).await.unwrap().unwrap().counts;
    assert_eq!((counts.waiting, counts.failed, counts.cancelled), (0, 3, 2));
}

pub async fn dependencies_that_already_ended_resolve_at_submit(s: Arc<dyn Store>) {
    let ok = submit(&*s, job("pre"), T0).await.job.id;
    let c = claim_one(&*s, "pre", at(1)).await;
    complete(&*s, &c, "1", at(2)).await.unwrap();
    let gone = submit(&*s, job("pre"), at(3)).await.job.id;
    s.cancel(gone, at(4)).await.unwrap();
    assert_eq!(submit(&*s, after("pre", &[ok]), at(5)).await.job.state, JobState::Queued);
    let born = submit(&*s, after("pre", &[ok, gone]), at(5)).await.job;
    assert_eq!(born.state, JobState::Cancelled, "a dependency already cancelled: cancelled at once");
    assert_eq!(born.error.map(|e| e.kind), Some(ErrorKind::Dependency));
    match s.submit(vec![after("pre", &[ok, JobId(999_999)])], at(6)).await {
        Err(StoreError::Invalid(v)) => assert_eq!(v.field, "depends_on[1]"),
        other => panic!("expected an invalid depends_on, got {other:?}"),
    }
}

pub async fn a_parent_runs_its_fan_in_once_its_children_have_ended(s: Arc<dyn Store>) {
    let parent = submit(&*s, job("ops"), T0).await.job.id;
    let run = claim_one(&*s, "ops", at(1)).await;
    assert_eq!(run.job.attempt, 1);
    let kids: Vec<NewJob> = (0..5).map(|_| child("pages", parent)).collect();
    let kids: Vec<JobId> = s.submit(kids, at(2)).await.unwrap().into_iter().map(|k| k.job.id).collect();
    let waiting = await_children(&*s, &run, at(3)).await;
    assert_eq!((waiting.state, waiting.waiting_for), (JobState::Waiting, Some(WaitingFor::Children)));
    assert_eq!(waiting.children.map(|c| (c.total, c.pending())), Some((5, 5)));
    let runs = claim(&*s, "pages", 5, at(4)).await;
    assert_eq!(runs.len(), 5);
    for (i, c) in runs.iter().enumerate() {
        let outcome = match i {
            0 => Outcome::Fail { kind: FailKind::Permanent, message: "no".into(), retry_after_ms: None },
            1 => Outcome::Complete { result: Some(raw("1")), partial: true },
            _ => Outcome::Complete { result: Some(raw("1")), partial: false },
        };
        end(&*s, c, outcome, at(5 + i as i64)).await.unwrap();
        let p = get(&*s, parent).await;
        let expected = if i < 4 { JobState::Waiting } else { JobState::Queued };
        assert_eq!(p.state, expected, "after {} children ended", i + 1);
    }
    let p = get(&*s, parent).await;
    let c = p.children.expect("children counted");
    assert_eq!((c.total, c.succeeded, c.partial, c.failed, c.cancelled), (5, 4, 1, 1, 0));
    assert!(p.fan_in);
    assert_eq!(drove_core::operation_outcome(JobState::Succeeded, &c), "partial");
    let fan_in = claim_one(&*s, "ops", at(20)).await;
    assert_eq!(
        (fan_in.job.id, fan_in.job.attempt, fan_in.job.fan_in),
        (parent, 1, true),
        "the fan-in used no attempt"
    );
    assert_eq!(
        fan_in.job.result.as_ref().map(|r| r.get()),
        Some("\"first run\""),
        "the first run's result is kept"
    );
    complete(&*s, &fan_in, "\"report\"", at(21)).await.unwrap();
    // The children, paged by parent; the operation in the operations listing.
    let page = s.list_jobs(JobFilter { parent: Some(parent), ..Default::default() }, 3, None).await.unwrap();
    assert_eq!(page.jobs.len(), 3);
    let rest = s
        .list_jobs(JobFilter { parent: Some(parent), ..Default::default() }, 3, page.next_before)
        .await
        .unwrap();
    let mut seen: Vec<JobId> = page.jobs.iter().chain(&rest.jobs).map(|j| j.id).collect();
    seen.sort();
    assert_eq!(seen, kids);
    let ops = s.list_jobs(JobFilter { operations: true, ..Default::default() }, 10, None).await.unwrap();
    assert_eq!(ops.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![parent]);
}

pub async fn a_parent_with_no_child_left_runs_its_fan_in_at_once(s: Arc<dyn Store>) {
    let parent = submit(&*s, job("ops"), T0).await.job.id;
    let run = claim_one(&*s, "ops", at(1)).await;
    submit(&*s, child("pages", parent), at(2)).await;
    let c = claim_one(&*s, "pages", at(3)).await;
    complete(&*s, &c, "1", at(4)).await.unwrap();
    let p = await_children(&*s, &run, at(5)).await;
    assert_eq!((p.state, p.fan_in), (JobState::Queued, true));
    // A redriven child counts as pending again.
    let failed = submit(&*s, child("pages", parent), at(6)).await.job.id;
    let c = claim_one(&*s, "pages", at(7)).await;
    fail(&*s, &c, FailKind::Permanent, None, at(8)).await.unwrap();
    assert_eq!(get(&*s, parent).await.children.map(|c| (c.failed, c.pending())), Some((1, 0)));
    s.retry(failed, at(9)).await.unwrap();
    assert_eq!(get(&*s, parent).await.children.map(|c| (c.failed, c.pending())), Some((0, 1)));
}

pub async fn cancelling_a_parent_cancels_its_unfinished_children(s: Arc<dyn Store>) {
    let parent = submit(&*s, job("ops"), T0).await.job.id;
    let run = claim_one(&*s, "ops", at(1)).await;
    let kids: Vec<JobId> = s
        .submit((0..3).map(|_| child("pages", parent)).collect(), at(2))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.job.id)
        .collect();
    let done = claim_one(&*s, "pages", at(3)).await;
    complete(&*s, &done, "1", at(4)).await.unwrap();
    let running = claim_one(&*s, "pages", at(5)).await;
    await_children(&*s, &run, at(6)).await;
    let cancelled = s.cancel(parent, at(7)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(get(&*s, kids[0]).await.state, JobState::Succeeded);
    let r = get(&*s, running.job.id).await;
    assert_eq!((r.state, r.cancel_requested), (JobState::Running, true));
    assert_eq!(get(&*s, kids[2]).await.state, JobState::Cancelled);
    // Children of an ended parent are refused; of an unknown one, invalid.
    match s.submit(vec![child("pages", parent)], at(8)).await {
        Err(StoreError::WrongState { job, .. }) => assert_eq!(job, parent),
        other => panic!("expected the parent's wrong state, got {other:?}"),
    }
    match s.submit(vec![child("pages", JobId(999_999))], at(8)).await {
        Err(StoreError::Invalid(v)) => assert_eq!(v.field, "parent"),
        other => panic!("expected an invalid parent, got {other:?}"),
    }
}

pub async fn a_follow_up_waits_behind_its_keys_running_job(s: Arc<dyn Store>) {
    let follow =
        |payload: &str| NewJob { on_conflict: OnConflict::FollowUp, ..job_with("fu", payload).with_key("k") };
    let first = submit(&*s, follow("1"), T0).await;
    assert!(first.created);
    // Not started yet: a follow-up is the newest payload for it.
    let again = submit(&*s, follow("2"), at(1)).await;
    assert_eq!((again.job.id, again.job.payload.get()), (first.job.id, "2"));
    let run = claim_one(&*s, "fu", at(2)).await;
    let a = submit(&*s, follow("3"), at(3)).await;
    assert!(a.created);
    assert_eq!(
        (a.job.state, a.job.waiting_for, a.job.key.as_deref()),
        (JobState::Waiting, Some(WaitingFor::Key), Some("k"))
    );
    for (i, p) in ["4", "5", "6"].iter().enumerate() {
        let b = submit(&*s, follow(p), at(4 + i as i64)).await;
        assert_eq!((b.job.id, b.created), (a.job.id, false), "one successor");
    }
    // A plain join still answers the running job.
    assert_eq!(submit(&*s, job_with("fu", "7").with_key("k"), at(8)).await.job.id, first.job.id);
    complete(&*s, &run, "1", at(9)).await.unwrap();
    let next = claim_one(&*s, "fu", at(10)).await;
    assert_eq!((next.job.id, next.job.payload.get(), next.job.key.as_deref()), (a.job.id, "6", Some("k")));
    assert!(claim(&*s, "fu", 5, at(11)).await.is_empty(), "exactly one extra run");
}

pub async fn a_stale_success_is_answered_at_once_and_refreshed_once(s: Arc<dyn Store>) {
    let ask = || NewJob {
        reuse_for_ms: Some(1_000),
        stale_for_ms: Some(60_000),
        ..job_with("st", "1").with_key("k")
    };
    let first = submit(&*s, ask(), T0).await.job.id;
    let c = claim_one(&*s, "st", at(1)).await;
    complete(&*s, &c, "\"v1\"", at(2)).await.unwrap();
    let fresh = submit(&*s, ask(), at(500)).await;
    assert_eq!((fresh.job.id, fresh.refresh), (first, None), "within reuse_for_ms: reused");
    let stale = submit(&*s, ask(), at(5_000)).await;
    assert_eq!(stale.job.id, first);
    let refresh = stale.refresh.expect("a refresh started");
    assert_ne!(refresh, first);
    let again = submit(&*s, ask(), at(6_000)).await;
    assert_eq!((again.job.id, again.refresh), (first, Some(refresh)), "one refresh, however many ask");
    let r = claim_one(&*s, "st", at(7_000)).await;
    assert_eq!(r.job.id, refresh);
    complete(&*s, &r, "\"v2\"", at(7_100)).await.unwrap();
    let now_fresh = submit(&*s, ask(), at(7_500)).await;
    assert_eq!((now_fresh.job.id, now_fresh.refresh), (refresh, None));
    // Past both windows: a new job.
    assert!(submit(&*s, ask(), at(200_000)).await.created);
}

pub async fn concurrent_follow_ups_make_one_successor(s: Arc<dyn Store>) {
    let follow =
        |p: String| NewJob { on_conflict: OnConflict::FollowUp, ..job_with("race-fu", &p).with_key("k") };
    submit(&*s, follow("0".into()), T0).await;
    let run = claim_one(&*s, "race-fu", at(1)).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { submit(&*s, follow(i.to_string()), at(2)).await.job.id }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one successor for every follow-up: {ids:?}");
    complete(&*s, &run, "1", at(3)).await.unwrap();
    assert_eq!(claim(&*s, "race-fu", 10, at(4)).await.len(), 1);
}

pub async fn children_ending_at_once_wake_their_parent_once(s: Arc<dyn Store>) {
    let parent = submit(&*s, job("race-ops"), T0).await.job.id;
    let run = claim_one(&*s, "race-ops", at(1)).await;
    s.submit((0..40).map(|_| child("race-kids", parent)).collect(), at(2)).await.unwrap();
    let runs = claim(&*s, "race-kids", 40, at(3)).await;
    // The parent's await races the children's ends.
    let mut tasks = Vec::new();
    for c in runs {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { complete(&*s, &c, "1", at(4)).await.unwrap() }));
    }
    let waited = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { await_children(&*s, &run, at(4)).await })
    };
    for t in tasks {
        t.await.unwrap();
    }
    waited.await.unwrap();
    let p = get(&*s, parent).await;
    assert_eq!(p.state, JobState::Queued, "woken for its fan-in, whatever the order");
    assert_eq!(p.children.map(|c| (c.total, c.succeeded)), Some((40, 40)));
    assert_eq!(claim(&*s, "race-ops", 10, at(5)).await.len(), 1);
}
