//! Groups: per-group concurrency, FIFO within a group, no head-of-line blocking across groups.

use std::sync::Arc;

use super::*;

fn grouped(queue: &str, group: &str, payload: &str) -> NewJob {
    job_with(queue, payload).with_group(group)
}

pub async fn group_concurrency_one_runs_a_group_in_order(s: Arc<dyn Store>) {
    set_queue(&*s, "joins", r#"{"group_concurrency": 1}"#, T0).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&*s, grouped("joins", "room:7", &i.to_string()), at(i)).await.job.id);
    }
    let mut order = Vec::new();
    for step in 0..4 {
        let got = claim(&*s, "joins", 10, at(10 + step)).await;
        assert_eq!(got.len(), 1, "one at a time in a group");
        assert!(claim(&*s, "joins", 10, at(10 + step)).await.is_empty());
        order.push(got[0].job.id);
        complete(&*s, &got[0], "null", at(10 + step)).await.unwrap();
    }
    assert_eq!(order, ids, "FIFO within the group");
}

pub async fn busy_group_does_not_hold_back_other_groups(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"group_concurrency": 1}"#, T0).await;
    // A long backlog in one group, submitted first, then one job in each of three other groups
    // and two jobs with no group.
    let batch: Vec<NewJob> = (0..200).map(|i| grouped("q", "hot", &i.to_string())).collect();
    s.submit(batch, T0).await.unwrap();
    for g in ["a", "b", "c"] {
        submit(&*s, grouped("q", g, "1"), at(1)).await;
    }
    s.submit(vec![job("q"), job("q")], at(2)).await.unwrap();
    let got = claim(&*s, "q", 100, at(3)).await;
    let mut groups: Vec<_> = got.iter().map(|c| c.job.group.clone()).collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![None, None, Some("a".into()), Some("b".into()), Some("c".into()), Some("hot".into())]
    );
    // The hot group's first job went first (FIFO across the queue within limits).
    assert_eq!(got[0].job.group.as_deref(), Some("hot"));
    assert_eq!(got[0].job.payload.get(), "0");
    // Priority within a group: a higher-priority job of "hot" overtakes its backlog.
    let mut urgent = grouped("q", "hot", "\"urgent\"");
    urgent.priority = 9;
    submit(&*s, urgent, at(4)).await;
    let hot = got.iter().find(|c| c.job.group.as_deref() == Some("hot")).unwrap();
    complete(&*s, hot, "null", at(5)).await.unwrap();
    let next = claim(&*s, "q", 100, at(6)).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job.payload.get(), "\"urgent\"");
}

pub async fn group_limit_change_applies_to_existing_groups(s: Arc<dyn Store>) {
    s.submit((0..6).map(|_| grouped("q", "g", "0")).collect(), T0).await.unwrap();
    let first = claim(&*s, "q", 2, at(1)).await;
    assert_eq!(first.len(), 2, "no group limit yet");
    set_queue(&*s, "q", r#"{"group_concurrency": 3}"#, at(2)).await;
    assert_eq!(claim(&*s, "q", 10, at(3)).await.len(), 1, "2 running + 1 = the new limit");
    set_queue(&*s, "q", r#"{"group_concurrency": 4}"#, at(4)).await;
    assert_eq!(claim(&*s, "q", 10, at(5)).await.len(), 1);
    set_queue(&*s, "q", r#"{"group_concurrency": null}"#, at(6)).await;
    assert_eq!(claim(&*s, "q", 10, at(7)).await.len(), 2);
}

pub async fn jobs_without_group_are_not_group_limited(s: Arc<dyn Store>) {
    set_queue(&*s, "q", r#"{"group_concurrency": 1}"#, T0).await;
    s.submit((0..5).map(|_| job("q")).collect(), T0).await.unwrap();
    assert_eq!(claim(&*s, "q", 10, at(1)).await.len(), 5);
}
