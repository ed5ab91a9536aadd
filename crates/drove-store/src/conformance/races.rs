//! Races: many tasks at once against one store. The invariants must come from the store's
//! transactions and constraints, whatever the interleaving.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use drove_core::JobState;

use super::*;

pub async fn concurrent_submits_of_one_key_create_one_job(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { submit(&*s, job_with("q", &i.to_string()).with_key("k"), T0).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let sub = t.await.unwrap();
        ids.insert(sub.job.id);
        created += usize::from(sub.created);
    }
    assert_eq!(ids.len(), 1, "every submitter got the same job");
    assert_eq!(created, 1, "exactly one submit created it");
    assert_eq!(s.list_jobs(Default::default(), 100, None).await.unwrap().jobs.len(), 1);
}

pub async fn concurrent_claimers_never_share_a_job(s: Arc<dyn Store>) {
    s.submit((0..500).map(|_| job("q")).collect(), T0).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = Arc::clone(&s);
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
    assert_eq!(all.len(), 500);
}

pub async fn completion_racing_the_reaper_has_exactly_one_outcome(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    for round in 0..20 {
        let id = submit(&*s, job("q"), at(round * 100_000)).await.job.id;
        let c = claim(&*s, "q", 1, at(round * 100_000)).await.pop().unwrap();
        assert_eq!(c.job.id, id);
        let expiry = c.lease_expires_at;
        let (s1, s2, c1) = (Arc::clone(&s), Arc::clone(&s), c.clone());
        let completer = tokio::spawn(async move { complete(&*s1, &c1, "1", expiry).await });
        let reaper = tokio::spawn(async move { s2.reap(expiry, 10).await.unwrap() });
        let completed = completer.await.unwrap();
        let reaped = reaper.await.unwrap();
        let j = get(&*s, id).await;
        match completed {
            Ok(done) => {
                assert_eq!(reaped, 0, "round {round}: completed and reaped");
                assert_eq!((done.state, j.state), (JobState::Succeeded, JobState::Succeeded));
            }
            Err(StoreError::StaleLease) => {
                assert_eq!(reaped, 1, "round {round}: neither completed nor reaped");
                assert_eq!(j.state, JobState::Queued);
                // Clear it for the next round.
                let again = claim(&*s, "q", 1, expiry).await.pop().unwrap();
                complete(&*s, &again, "2", expiry).await.unwrap();
            }
            Err(e) => panic!("round {round}: {e:?}"),
        }
    }
}

pub async fn stale_lease_never_wins(s: Arc<dyn Store>) {
    no_backoff(&*s, "q").await;
    submit(&*s, job("q"), T0).await;
    let a = claim_as(&*s, "q", "A", 1, T0).await.pop().unwrap();
    s.reap(at(10_000), 10).await.unwrap();
    let b = claim_as(&*s, "q", "B", 1, at(10_001)).await.pop().unwrap();
    assert_eq!(a.job.id, b.job.id);
    // The zombie A wakes up and tries everything; all of it is refused, concurrently with B.
    let (s1, a1) = (Arc::clone(&s), a.clone());
    let zombie = tokio::spawn(async move {
        let beat = crate::Heartbeat {
            id: a1.job.id,
            lease: a1.lease,
            progress: None,
            checkpoint: Some(raw("\"zombie\"")),
            lease_ms: None,
        };
        let hb = s1.heartbeat(beat, at(10_002)).await;
        let done = complete(&*s1, &a1, "\"zombie\"", at(10_002)).await;
        (hb.is_err(), done.is_err())
    });
    let mine = complete(&*s, &b, "\"B\"", at(10_003)).await.unwrap();
    assert_eq!(zombie.await.unwrap(), (true, true));
    let j = get(&*s, b.job.id).await;
    assert_eq!(j.result.map(|r| r.get().to_owned()), Some("\"B\"".into()));
    assert!(j.checkpoint.is_none());
    assert_eq!(mine.state, JobState::Succeeded);
}

pub async fn group_limit_holds_under_concurrent_claimers(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"group_concurrency": 1}"#, T0).await;
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.push(job("q").with_group(format!("g{}", i % 20)));
    }
    s.submit(batch, T0).await.unwrap();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (s, running) = (Arc::clone(&s), Arc::clone(&running));
            tokio::spawn(async move {
                let mut done = 0;
                let mut idle_rounds = 0;
                while idle_rounds < 50 {
                    let got = claim_as(&*s, "q", &format!("w{i}"), 3, T0).await;
                    if got.is_empty() {
                        idle_rounds += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    idle_rounds = 0;
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
    let info = s.get_queue("q", T0).await.unwrap().unwrap();
    assert_eq!(info.counts.succeeded, total);
    assert_eq!(info.counts.queued + info.counts.succeeded, 100);
    if total < 100 {
        // Every claimer gave up while others held the last groups: finish the rest alone.
        loop {
            let got = claim(&*s, "q", 10, T0).await;
            if got.is_empty() {
                break;
            }
            for c in got {
                complete(&*s, &c, "null", T0).await.unwrap();
            }
        }
    }
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().counts.succeeded, 100);
}

pub async fn a_waiter_registering_during_a_completion_is_woken(s: Arc<dyn Store>) {
    for round in 0..200 {
        let id = submit(&*s, job("q"), at(round)).await.job.id;
        let c = claim(&*s, "q", 1, at(round)).await.pop().unwrap();
        let s2 = Arc::clone(&s);
        let completer = tokio::spawn(async move { complete(&*s2, &c, "1", at(round)).await.unwrap() });
        // Register, then read, as every waiter does, while the completion commits.
        let mut watch = s.hub().watch_job(id);
        let seen = get(&*s, id).await;
        if !seen.state.is_terminal() {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(30), watch.changed()).await;
            assert!(woke.is_ok(), "round {round}: the waiter was never woken");
            assert_eq!(get(&*s, id).await.state, JobState::Succeeded);
        }
        completer.await.unwrap();
    }
}
