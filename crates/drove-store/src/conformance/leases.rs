//! Leases: heartbeats, fencing, expiry and timeouts.

use std::sync::Arc;

use drove_core::{ErrorKind, JobState, LeaseToken, Progress};

use super::*;
use crate::Heartbeat;

fn hb(c: &Claimed) -> Heartbeat {
    Heartbeat { id: c.job.id, lease: c.lease, progress: None, checkpoint: None, lease_ms: None }
}

pub async fn heartbeat_extends_lease_and_stores_progress_and_checkpoint(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    assert_eq!(c.lease_expires_at, at(10_000));
    let mut beat = hb(&c);
    beat.progress = Some(Progress { done: 40, total: Some(100), message: Some("page 40".into()) });
    beat.checkpoint = Some(raw(r#"{"page":40}"#));
    let ack = s.heartbeat(beat, at(3_000)).await.unwrap();
    assert_eq!(ack.lease_expires_at, at(13_000));
    assert!(!ack.cancel_requested);
    let j = get(&*s, c.job.id).await;
    assert_eq!(j.progress.as_ref().map(|p| (p.done, p.total)), Some((40, Some(100))));
    assert_eq!(j.checkpoint.as_ref().map(|c| c.get()), Some(r#"{"page":40}"#));
    assert_eq!(j.lease_expires_at, Some(at(13_000)));
    // A plain heartbeat keeps both; a longer lease may be asked for.
    let mut longer = hb(&c);
    longer.lease_ms = Some(60_000);
    assert_eq!(s.heartbeat(longer, at(4_000)).await.unwrap().lease_expires_at, at(64_000));
    let j = get(&*s, c.job.id).await;
    assert_eq!(j.checkpoint.as_ref().map(|c| c.get()), Some(r#"{"page":40}"#));
    // The reaper leaves a heartbeating job alone.
    assert_eq!(s.reap(at(20_000), 100).await.unwrap(), 0);
}

pub async fn heartbeat_with_stale_lease_is_rejected(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let mut forged = hb(&c);
    forged.lease = LeaseToken(c.lease.0 + 1_000);
    forged.checkpoint = Some(raw("1"));
    assert!(matches!(s.heartbeat(forged, at(1)).await, Err(StoreError::StaleLease)));
    assert!(get(&*s, c.job.id).await.checkpoint.is_none(), "changed nothing");
    let mut unknown = hb(&c);
    unknown.id = JobId(c.job.id.0 + 10_000);
    assert!(matches!(s.heartbeat(unknown, at(1)).await, Err(StoreError::NotFound(_))));
}

pub async fn complete_with_stale_lease_is_rejected_and_changes_nothing(s: Arc<dyn Store>) {
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let forged = Claimed { lease: LeaseToken(c.lease.0 + 7), ..c.clone() };
    assert!(matches!(complete(&*s, &forged, "1", at(1)).await, Err(StoreError::StaleLease)));
    assert!(matches!(
        fail(&*s, &forged, FailKind::Permanent, None, at(1)).await,
        Err(StoreError::StaleLease)
    ));
    assert!(matches!(end(&*s, &forged, Outcome::Release, at(1)).await, Err(StoreError::StaleLease)));
    assert_eq!(get(&*s, c.job.id).await, c.job);
    assert_eq!(complete(&*s, &c, "1", at(2)).await.unwrap().state, JobState::Succeeded);
    // A second completion with the same (now spent) lease is refused too.
    assert!(matches!(complete(&*s, &c, "2", at(3)).await, Err(StoreError::StaleLease)));
    assert_eq!(get(&*s, c.job.id).await.result.map(|r| r.get().to_owned()), Some("1".into()));
}

pub async fn expired_lease_is_reaped_as_lost_and_keeps_checkpoint(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    let mut beat = hb(&c);
    beat.checkpoint = Some(raw(r#"{"page":7}"#));
    s.heartbeat(beat, at(1_000)).await.unwrap();
    assert_eq!(s.next_due().await.unwrap().1, Some(at(11_000)));
    assert_eq!(s.reap(at(10_999), 100).await.unwrap(), 0);
    assert_eq!(s.reap(at(11_000), 100).await.unwrap(), 1);
    let j = get(&*s, c.job.id).await;
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.error.as_ref().map(|e| e.kind), Some(ErrorKind::Lost));
    assert_eq!(j.attempt, 1);
    let again = claim(&*s, "q", 1, at(11_001)).await.pop().unwrap();
    assert_eq!(again.job.attempt, 2, "a lost lease used an attempt");
    assert_eq!(again.job.checkpoint.as_ref().map(|c| c.get()), Some(r#"{"page":7}"#));
}

pub async fn late_completion_after_reap_is_rejected(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    s.reap(at(10_000), 100).await.unwrap();
    assert!(matches!(complete(&*s, &c, "1", at(10_001)).await, Err(StoreError::StaleLease)));
    assert!(matches!(s.heartbeat(hb(&c), at(10_001)).await, Err(StoreError::StaleLease)));
    assert_eq!(get(&*s, c.job.id).await.state, JobState::Queued);
}

pub async fn lease_tokens_grow_across_runs(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    submit(&*s, job("q"), T0).await;
    let mut last = LeaseToken(0);
    for i in 0..4 {
        let c = claim(&*s, "q", 1, at(i * 20_000)).await.pop().unwrap();
        assert!(c.lease > last, "{:?} after {:?}", c.lease, last);
        last = c.lease;
        s.reap(at(i * 20_000 + 10_000), 10).await.unwrap();
    }
}

pub async fn timeout_fails_the_run_and_voids_its_lease(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    let mut j = job("q");
    j.timeout_ms = Some(3_000);
    submit(&*s, j, T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    // Heartbeats do not extend a run past its deadline.
    s.heartbeat(hb(&c), at(2_000)).await.unwrap();
    assert_eq!(s.next_due().await.unwrap().1, Some(at(3_000)));
    assert!(matches!(s.heartbeat(hb(&c), at(3_000)).await, Err(StoreError::StaleLease)));
    assert!(matches!(complete(&*s, &c, "1", at(3_000)).await, Err(StoreError::StaleLease)));
    assert_eq!(s.reap(at(3_000), 10).await.unwrap(), 1);
    let j = get(&*s, c.job.id).await;
    assert_eq!(j.error.as_ref().map(|e| e.kind), Some(ErrorKind::Timeout));
    assert_eq!(j.state, JobState::Queued);
    // The queue's timeout applies to jobs that set none.
    set_queue(&*s, "q2", r#"{"timeout_ms": 500}"#, T0).await;
    assert_eq!(submit(&*s, job("q2"), T0).await.job.timeout_ms, Some(500));
}

pub async fn lost_lease_on_last_attempt_fails_the_job(s: Arc<dyn Store>) {
    let mut j = job("q");
    j.max_attempts = Some(1);
    submit(&*s, j, T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    s.reap(at(10_000), 10).await.unwrap();
    let j = get(&*s, c.job.id).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.error.map(|e| e.kind), Some(ErrorKind::Lost));
    assert_eq!(j.finished_at, Some(at(10_000)));
}

pub async fn a_lost_run_is_claimable_at_once_without_backoff(s: Arc<dyn Store>) {
    // The queue's backoff is long: a dead worker is not the job's fault, so it does not apply.
    set_queue(&*s, "q", r#"{"backoff": {"base_ms": 3600000, "max_ms": 3600000}}"#, T0).await;
    submit(&*s, job("q"), T0).await;
    let c = claim(&*s, "q", 1, T0).await.pop().unwrap();
    assert_eq!(s.reap(at(10_000), 100).await.unwrap(), 1);
    let j = get(&*s, c.job.id).await;
    assert_eq!((j.state, j.run_at), (JobState::Queued, at(10_000)));
    let again = claim(&*s, "q", 1, at(10_000)).await.pop().expect("claimable at once");
    assert_eq!(again.job.attempt, 2, "the lost run used its attempt (API.md)");
    // A released run too: queued at once, no attempt used.
    let released = end(&*s, &again, Outcome::Release, at(10_001)).await.unwrap();
    assert_eq!((released.state, released.run_at), (JobState::Queued, at(10_001)));
    assert_eq!(claim(&*s, "q", 1, at(10_001)).await.pop().unwrap().job.attempt, 2);
}
