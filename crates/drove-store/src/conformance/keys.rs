//! Keys: one active job per key (docs/API.md "Keys").

use std::sync::Arc;

use drove_core::{JobState, OnConflict};

use super::*;

fn keyed(queue: &str, key: &str, payload: &str) -> NewJob {
    job_with(queue, payload).with_key(key)
}

pub async fn submit_with_live_key_joins_existing(s: Arc<dyn Store>) {
    let first = submit(&*s, keyed("q", "user:42", "1"), T0).await;
    assert!(first.created);
    let second = submit(&*s, keyed("q", "user:42", "2"), at(1)).await;
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.payload.get(), "1", "join leaves the job unchanged");
    // Running jobs hold the key too; other queues and other keys do not collide.
    claim(&*s, "q", 1, at(2)).await;
    assert_eq!(submit(&*s, keyed("q", "user:42", "3"), at(3)).await.job.id, first.job.id);
    assert!(submit(&*s, keyed("other", "user:42", "4"), at(4)).await.created);
    assert!(submit(&*s, keyed("q", "user:43", "5"), at(5)).await.created);
}

pub async fn later_entry_in_a_batch_joins_an_earlier_one(s: Arc<dyn Store>) {
    let out = s.submit(vec![keyed("q", "k", "1"), job("q"), keyed("q", "k", "2")], T0).await.unwrap();
    assert!(out[0].created && out[1].created && !out[2].created);
    assert_eq!(out[2].job.id, out[0].job.id);
}

pub async fn reject_with_active_key_fails_the_whole_batch(s: Arc<dyn Store>) {
    let held = submit(&*s, keyed("q", "k", "1"), T0).await.job.id;
    let mut rejecting = keyed("q", "k", "2");
    rejecting.on_conflict = OnConflict::Reject;
    let err = s.submit(vec![job("q"), rejecting.clone()], at(1)).await.unwrap_err();
    match err {
        StoreError::KeyConflict { key, job } => {
            assert_eq!(key, "k");
            assert_eq!(job, held);
        }
        other => panic!("expected KeyConflict, got {other:?}"),
    }
    let all = s.list_jobs(Default::default(), 100, None).await.unwrap();
    assert_eq!(all.jobs.len(), 1, "the first entry of the rejected batch was not kept");
    // Once the holder succeeded, a reusable success is still returned (200), not a conflict.
    set_queue(&*s, "q", r#"{"reuse_for_ms": 60000}"#, at(2)).await;
    let c = claim(&*s, "q", 1, at(3)).await.pop().unwrap();
    complete(&*s, &c, "\"done\"", at(4)).await.unwrap();
    let reused = submit(&*s, rejecting.clone(), at(5)).await;
    assert_eq!((reused.job.id, reused.created), (held, false));
    // Past the window a rejecting submit creates a new job.
    assert!(submit(&*s, rejecting, at(70_000)).await.created);
}

pub async fn replace_updates_a_queued_job(s: Arc<dyn Store>) {
    let mut timer = keyed("rounds", "round:9", r#"{"v":1}"#);
    timer.run_at = Some(at(60_000));
    let first = submit(&*s, timer, T0).await.job;
    assert_eq!(first.state, JobState::Scheduled);
    // "End the round now": the replacing submit moves the job forward and changes its payload.
    let mut now_job = keyed("rounds", "round:9", r#"{"v":2}"#);
    now_job.on_conflict = OnConflict::Replace;
    now_job.priority = 7;
    let replaced = submit(&*s, now_job, at(10)).await;
    assert!(!replaced.created);
    assert_eq!(replaced.job.id, first.id);
    assert_eq!(replaced.job.state, JobState::Queued);
    assert_eq!(replaced.job.payload.get(), r#"{"v":2}"#);
    assert_eq!(replaced.job.priority, 7);
    assert_eq!(replaced.job.run_at, at(10));
    assert_eq!(get(&*s, first.id).await, replaced.job);
    let c = claim(&*s, "rounds", 5, at(11)).await;
    assert_eq!(c.len(), 1, "still one job for the key");
    let info = s.get_queue("rounds", T0).await.unwrap().unwrap();
    assert_eq!((info.counts.scheduled, info.counts.running), (0, 1));
}

pub async fn replace_joins_a_running_job_unchanged(s: Arc<dyn Store>) {
    let first = submit(&*s, keyed("q", "k", "1"), T0).await.job;
    claim(&*s, "q", 1, at(1)).await;
    let mut again = keyed("q", "k", "2");
    again.on_conflict = OnConflict::Replace;
    let joined = submit(&*s, again, at(2)).await;
    assert_eq!((joined.job.id, joined.created), (first.id, false));
    assert_eq!(joined.job.payload.get(), "1");
    assert_eq!(joined.job.state, JobState::Running);
}

pub async fn reuse_returns_a_recent_success_within_its_window(s: Arc<dyn Store>) {
    let first = submit(&*s, keyed("q", "k", "1"), T0).await.job.id;
    let c = claim(&*s, "q", 1, at(1)).await.pop().unwrap();
    complete(&*s, &c, r#"{"answer":42}"#, at(1_000)).await.unwrap();
    // Without reuse, a finished job does not block: a new job is created.
    let second = submit(&*s, keyed("q", "k", "2"), at(2_000)).await;
    assert!(second.created);
    s.cancel(second.job.id, at(2_001)).await.unwrap();
    // With reuse on the submit: the success within the window is returned, result included.
    let mut reuse = keyed("q", "k", "3");
    reuse.reuse_for_ms = Some(5_000);
    let got = submit(&*s, reuse.clone(), at(5_999)).await;
    assert_eq!((got.job.id, got.created), (first, false));
    assert_eq!(got.job.result.as_ref().map(|r| r.get()), Some(r#"{"answer":42}"#));
    assert!(submit(&*s, reuse, at(6_001)).await.created, "the window has passed");
    // The queue's default applies when the submit says nothing.
    set_queue(&*s, "q2", r#"{"reuse_for_ms": 1000}"#, at(7_000)).await;
    let a = submit(&*s, keyed("q2", "x", "1"), at(7_000)).await.job.id;
    let c = claim(&*s, "q2", 1, at(7_001)).await.pop().unwrap();
    complete(&*s, &c, "1", at(7_002)).await.unwrap();
    assert_eq!(submit(&*s, keyed("q2", "x", "2"), at(7_500)).await.job.id, a);
    let mut zero = keyed("q2", "x", "3");
    zero.reuse_for_ms = Some(0);
    assert!(submit(&*s, zero, at(7_600)).await.created, "reuse_for_ms 0 on the submit wins");
}

pub async fn failed_and_cancelled_jobs_never_block_a_key(s: Arc<dyn Store>) {
    let a = submit(&*s, keyed("q", "k", "1"), T0).await.job.id;
    let c = claim(&*s, "q", 1, at(1)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Permanent, None, at(2)).await.unwrap();
    let mut reuse = keyed("q", "k", "2");
    reuse.reuse_for_ms = Some(60_000);
    let b = submit(&*s, reuse.clone(), at(3)).await;
    assert!(b.created && b.job.id != a, "a failure is never reused");
    s.cancel(b.job.id, at(4)).await.unwrap();
    let c2 = submit(&*s, reuse, at(5)).await;
    assert!(c2.created && c2.job.id != b.job.id);
}

pub async fn cancel_requested_job_frees_its_key(s: Arc<dyn Store>) {
    let a = submit(&*s, keyed("q", "k", "1"), T0).await.job.id;
    claim(&*s, "q", 1, at(1)).await;
    let marked = s.cancel(a, at(2)).await.unwrap();
    assert!(marked.cancel_requested);
    assert_eq!(marked.state, JobState::Running);
    let b = submit(&*s, keyed("q", "k", "2"), at(3)).await;
    assert!(b.created && b.job.id != a);
}

pub async fn redrive_is_refused_while_another_job_holds_the_key(s: Arc<dyn Store>) {
    let a = submit(&*s, keyed("q", "k", "1"), T0).await.job.id;
    let c = claim(&*s, "q", 1, at(1)).await.pop().unwrap();
    fail(&*s, &c, FailKind::Permanent, None, at(2)).await.unwrap();
    let b = submit(&*s, keyed("q", "k", "2"), at(3)).await.job.id;
    match s.retry(a, at(4)).await {
        Err(StoreError::KeyConflict { job, .. }) => assert_eq!(job, b),
        other => panic!("expected KeyConflict, got {other:?}"),
    }
    assert_eq!(get(&*s, a).await.state, JobState::Failed);
    s.cancel(b, at(5)).await.unwrap();
    assert_eq!(s.retry(a, at(6)).await.unwrap().state, JobState::Queued);
}
