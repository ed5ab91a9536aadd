//! Flow control held by the store: rate limits (GCRA) and the adaptive limit in force.

use std::sync::Arc;

use super::*;
use crate::LimitScope;

fn req(queue: &str, max: i64) -> ClaimRequest {
    ClaimRequest { queue: queue.into(), worker: "w".into(), max, lease_ms: None }
}

pub async fn rate_limit_spaces_starts_and_says_when_to_retry(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"rate": {"limit": 10, "period_ms": 1000, "burst": 3}}"#, T0).await;
    s.submit((0..5).map(|_| job("q")).collect(), T0).await.unwrap();
    let first = s.claim(req("q", 5), T0).await.unwrap();
    assert_eq!(first.jobs.len(), 3, "the burst");
    assert_eq!(first.retry_at, Some(at(100)));
    let early = s.claim(req("q", 5), at(50)).await.unwrap();
    assert!(early.jobs.is_empty());
    assert_eq!(early.retry_at, Some(at(100)), "an exact retry time");
    assert_eq!(s.claim(req("q", 5), at(100)).await.unwrap().jobs.len(), 1);
    assert_eq!(s.claim(req("q", 5), at(1_000)).await.unwrap().jobs.len(), 1);
}

pub async fn group_rate_limits_each_group_apart(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"group_rate": {"limit": 1, "period_ms": 1000}}"#, T0).await;
    let mut batch = Vec::new();
    for g in ["a", "b"] {
        for _ in 0..3 {
            batch.push(job("q").with_group(g));
        }
    }
    s.submit(batch, T0).await.unwrap();
    let first = s.claim(req("q", 10), T0).await.unwrap();
    assert_eq!(first.jobs.len(), 2, "one start per group");
    let early = s.claim(req("q", 10), at(500)).await.unwrap();
    assert!(early.jobs.is_empty());
    assert_eq!(early.retry_at, Some(at(1_000)));
    assert_eq!(s.claim(req("q", 10), at(1_000)).await.unwrap().jobs.len(), 2);
}

pub async fn adaptive_limit_in_force_caps_claims(s: Arc<dyn Store>) {
    let info = set_queue(&*s, "q", r#"{"adaptive": {"min": 1, "max": 10}}"#, T0).await;
    assert_eq!(info.limit_now, Some(10), "starts at the initial limit, within the bounds");
    s.submit((0..20).map(|_| job("q")).collect(), T0).await.unwrap();
    s.set_limit(LimitScope::Queue("q".into()), Some(2), T0).await.unwrap();
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().limit_now, Some(2));
    assert_eq!(claim(&*s, "q", 10, at(1)).await.len(), 2);
    s.set_limit(LimitScope::Queue("q".into()), Some(3), T0).await.unwrap();
    assert_eq!(claim(&*s, "q", 10, at(2)).await.len(), 1);
    s.set_limit(LimitScope::Queue("q".into()), Some(50), T0).await.unwrap();
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().limit_now, Some(10), "clamped to max");
    // A fixed concurrency below the adaptive limit wins.
    set_queue(&*s, "q", r#"{"concurrency": 4}"#, at(3)).await;
    assert_eq!(claim(&*s, "q", 10, at(4)).await.len(), 1);
}

pub async fn a_pools_limit_is_shared_by_its_queues(s: Arc<dyn Store>) {
    let pool: drove_core::queue::PoolPatch = serde_json::from_str(r#"{"concurrency": 3}"#).unwrap();
    let p = s.put_pool("api", pool, T0).await.unwrap();
    assert_eq!(p.limit_now, Some(3));
    for q in ["a", "b"] {
        set_queue(&*s, q, r#"{"pool": "api"}"#, T0).await;
        s.submit((0..5).map(|_| job(q)).collect(), T0).await.unwrap();
    }
    assert_eq!(s.get_pool("api").await.unwrap().unwrap().queues, vec!["a".to_string(), "b".to_string()]);
    let a = claim(&*s, "a", 10, at(1)).await;
    assert_eq!(a.len(), 3);
    assert!(claim(&*s, "b", 10, at(2)).await.is_empty(), "the pool is full");
    complete(&*s, &a[0], "null", at(3)).await.unwrap();
    assert_eq!(claim(&*s, "b", 10, at(4)).await.len(), 1);
    // An adaptive pool limit lowers the cap.
    let adaptive: drove_core::queue::PoolPatch =
        serde_json::from_str(r#"{"adaptive": {"min": 1, "max": 8}}"#).unwrap();
    s.put_pool("api", adaptive, T0).await.unwrap();
    s.set_limit(LimitScope::Pool("api".into()), Some(2), T0).await.unwrap();
    assert_eq!(s.get_pool("api").await.unwrap().unwrap().limit_now, Some(2));
    assert!(claim(&*s, "a", 10, at(5)).await.is_empty(), "3 running, limit 2");
}

pub async fn offline_lanes_stop_at_the_pools_offline_limit(s: Arc<dyn Store>) {
    let pool: drove_core::queue::PoolPatch =
        serde_json::from_str(r#"{"adaptive": {"min": 1, "max": 20}, "offline_min_share": 0.1}"#).unwrap();
    s.put_pool("llm", pool, T0).await.unwrap();
    set_queue(&*s, "live", r#"{"pool": "llm"}"#, T0).await;
    set_queue(&*s, "bulk", r#"{"pool": "llm", "lane": "offline"}"#, T0).await;
    s.set_limit(LimitScope::Pool("llm".into()), Some(12), T0).await.unwrap();
    s.set_offline_limit("llm", Some(5), T0).await.unwrap();
    let p = s.get_pool("llm").await.unwrap().unwrap();
    assert_eq!((p.limit_now, p.offline_limit_now), (Some(12), Some(5)));
    s.submit((0..20).map(|_| job("bulk")).collect(), T0).await.unwrap();
    assert_eq!(claim(&*s, "bulk", 20, at(1)).await.len(), 5, "offline stops at the offline limit");
    s.submit((0..7).map(|_| job("live")).collect(), T0).await.unwrap();
    let live = claim(&*s, "live", 20, at(2)).await;
    assert_eq!(live.len(), 7, "online may use the whole limit");
    for c in &live {
        complete(&*s, c, "null", at(3)).await.unwrap();
    }
    assert!(
        claim(&*s, "bulk", 20, at(4)).await.is_empty(),
        "7 permits free, but offline is at its offline limit"
    );
    s.set_offline_limit("llm", Some(50), T0).await.unwrap();
    let p = s.get_pool("llm").await.unwrap().unwrap();
    assert_eq!(p.offline_limit_now, Some(12), "never above the limit");
    assert_eq!(claim(&*s, "bulk", 20, at(5)).await.len(), 7);
    s.set_offline_limit("llm", None, T0).await.unwrap();
    assert_eq!(s.get_pool("llm").await.unwrap().unwrap().offline_limit_now, None);
    assert!(matches!(s.set_offline_limit("nope", Some(1), T0).await, Err(StoreError::NotFound(_))));
    // Without `adaptive` the pool has no offline limit: its fixed concurrency is all there is.
    let fixed: drove_core::queue::PoolPatch =
        serde_json::from_str(r#"{"adaptive": null, "concurrency": 3}"#).unwrap();
    s.put_pool("llm", fixed, T0).await.unwrap();
    s.set_offline_limit("llm", Some(1), T0).await.unwrap();
    assert_eq!(s.get_pool("llm").await.unwrap().unwrap().offline_limit_now, None);
}

pub async fn offline_lanes_yield_to_online_work_but_keep_their_share(s: Arc<dyn Store>) {
    let pool: drove_core::queue::PoolPatch =
        serde_json::from_str(r#"{"concurrency": 10, "offline_min_share": 0.2}"#).unwrap();
    s.put_pool("dns", pool, T0).await.unwrap();
    set_queue(&*s, "live", r#"{"pool": "dns", "lane": "online"}"#, T0).await;
    set_queue(&*s, "bulk", r#"{"pool": "dns", "lane": "offline"}"#, T0).await;
    s.submit((0..20).map(|_| job("bulk")).collect(), T0).await.unwrap();
    s.submit((0..20).map(|_| job("live")).collect(), T0).await.unwrap();
    let bulk = claim(&*s, "bulk", 10, at(1)).await;
    assert_eq!(bulk.len(), 2, "online work is ready: offline keeps only its share (0.2 x 10)");
    let live = claim(&*s, "live", 20, at(2)).await;
    assert_eq!(live.len(), 8, "online takes everything left");
    assert!(claim(&*s, "bulk", 10, at(3)).await.is_empty());
    // With no online job ready, offline may use every free permit.
    let rest = claim(&*s, "live", 20, at(4)).await;
    assert!(rest.is_empty(), "the pool is full");
    for c in &live {
        complete(&*s, c, "null", at(5)).await.unwrap();
    }
    let more_live = claim(&*s, "live", 20, at(6)).await;
    assert_eq!(more_live.len(), 8, "12 online jobs were still ready");
    for c in &more_live {
        complete(&*s, c, "null", at(7)).await.unwrap();
    }
    let last_live = claim(&*s, "live", 20, at(8)).await;
    assert_eq!(last_live.len(), 4);
    for c in &last_live {
        complete(&*s, c, "null", at(9)).await.unwrap();
    }
    assert_eq!(
        claim(&*s, "bulk", 20, at(10)).await.len(),
        8,
        "no online work: offline gets all free permits"
    );
}

pub async fn an_idle_rated_queue_names_no_time_to_come_back(s: Arc<dyn Store>) {
    // The report: with nothing queued, a claim named the rate's next slot, and long polls woke
    // every interval to run a write transaction for nothing.
    set_queue(&*s, "q", r#"{"rate": {"limit": 100, "period_ms": 1000}}"#, T0).await;
    submit(&*s, job("q"), T0).await;
    assert_eq!(s.claim(req("q", 4), T0).await.unwrap().jobs.len(), 1);
    let idle = s.claim(req("q", 4), at(1)).await.unwrap();
    assert!(idle.jobs.is_empty());
    assert_eq!(idle.retry_at, None, "nothing is ready: wait for a notification, not the rate");
    assert_eq!(s.ready("q", 10).await.unwrap(), Some(0));
    assert_eq!(s.ready("never-used", 10).await.unwrap(), None);
    s.submit(vec![job("q"), job("q")], at(2)).await.unwrap();
    assert_eq!(s.ready("q", 10).await.unwrap(), Some(2));
    assert_eq!(s.ready("q", 1).await.unwrap(), Some(1), "counted up to the bound");
    // With jobs ready and the rate spent, the claim says when.
    let held = s.claim(req("q", 4), at(3)).await.unwrap();
    assert!(held.jobs.is_empty());
    assert_eq!(held.retry_at, Some(at(10)));
    assert_eq!(s.claim(req("q", 4), at(10)).await.unwrap().jobs.len(), 1);
}

pub async fn a_throttle_lowers_the_rate_in_force_for_every_handle(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"rate": {"limit": 50, "period_ms": 1000, "burst": 100}}"#, T0).await;
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().rate_now, Some(50.0));
    s.submit((0..60).map(|_| job("q")).collect(), T0).await.unwrap();
    // 50 succeed within the last two seconds, then the provider pushes back.
    let runs = claim(&*s, "q", 51, at(0)).await;
    assert_eq!(runs.len(), 51);
    for r in &runs[..50] {
        complete(&*s, r, "1", at(500)).await.unwrap();
    }
    fail(&*s, &runs[50], FailKind::Throttled, Some(200), at(1_000)).await.unwrap();
    let q = s.get_queue("q", T0).await.unwrap().unwrap();
    let now = q.rate_now.expect("a rate in force");
    assert_eq!(now, 25.0, "the first throttle after a clean spell halves the rate in force");
    // Another throttle right after is from a call issued before the cut: no second cut.
    s.promote(at(1_200), 100).await.unwrap();
    let more = claim(&*s, "q", 3, at(1_200)).await;
    fail(&*s, &more[0], FailKind::Throttled, Some(10), at(1_300)).await.unwrap();
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().rate_now, Some(now));
    // One that follows it by more than a second: 97% of what the provider accepted over the
    // last second (one success here), never below 45% of the rate in force.
    complete(&*s, &more[1], "1", at(1_900)).await.unwrap();
    fail(&*s, &more[2], FailKind::Throttled, Some(10), at(2_100)).await.unwrap();
    let floor = s.get_queue("q", T0).await.unwrap().unwrap().rate_now.unwrap();
    assert!((11.0..=11.5).contains(&floor), "45% of 25: {floor}");
    // A setting change starts afresh.
    set_queue(&*s, "q", r#"{"rate": {"limit": 40, "period_ms": 1000}}"#, at(2_000)).await;
    assert_eq!(s.get_queue("q", T0).await.unwrap().unwrap().rate_now, Some(40.0));
}

pub async fn a_rate_per_claim_counts_claims_not_jobs(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"rate": {"limit": 2, "period_ms": 1000, "per": "claim"}}"#, T0).await;
    s.submit((0..50).map(|_| job("q")).collect(), T0).await.unwrap();
    assert_eq!(s.claim(req("q", 20), T0).await.unwrap().jobs.len(), 20, "one call of 20 items");
    let next = s.claim(req("q", 20), at(100)).await.unwrap();
    assert!(next.jobs.is_empty());
    assert_eq!(next.retry_at, Some(at(500)));
    assert_eq!(s.claim(req("q", 20), at(500)).await.unwrap().jobs.len(), 20);
}
