//! How a job listing is read, decided once for both stores: which index-friendly queries make
//! up a page, and how their rows become the page.
//!
//! A listing is newest first, by id below a cursor. A query that names a key, a parent, only
//! operations, or a queue and a state, walks one index in id order. A queue alone is read state by state (each from the
//! `(queue, state, id)` index), and a state or group alone queue by queue, so no listing ever
//! sorts the whole table; the parts are merged and cut to the page.

use drove_core::{Job, JobState};

use crate::request::{JobFilter, JobPage};

/// The queries that make up one page of `filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPlan {
    /// One query of the filter as it is.
    One,
    /// One query per state of the filter's queue.
    EachState,
    /// One query per queue (the store lists its queues).
    EachQueue,
}

/// Chooses the queries for a listing.
pub fn plan(filter: &JobFilter) -> ListPlan {
    let narrowed = filter.state.is_some() || filter.group.is_some() || filter.partial.is_some();
    if filter.key.is_some() || filter.parent.is_some() || filter.operations {
        ListPlan::One
    } else if filter.queue.is_some() {
        if narrowed { ListPlan::One } else { ListPlan::EachState }
    } else if narrowed {
        ListPlan::EachQueue
    } else {
        ListPlan::One
    }
}

/// The filters of an [`ListPlan::EachState`] listing, one per state.
pub fn each_state(filter: &JobFilter) -> impl Iterator<Item = JobFilter> + '_ {
    JobState::ALL.into_iter().map(|st| JobFilter { state: Some(st), ..filter.clone() })
}

/// How many rows each query of a page asks for: one more than the page tells whether a next
/// page exists.
pub fn fetch(limit: usize) -> usize {
    limit + 1
}

/// Merges the rows of a page's queries into the page.
pub fn page(mut jobs: Vec<Job>, limit: usize) -> JobPage {
    jobs.sort_unstable_by_key(|j| std::cmp::Reverse(j.id));
    jobs.dedup_by_key(|j| j.id);
    jobs.truncate(fetch(limit));
    let next_before = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    JobPage { jobs, next_before }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_walk_indexes_never_the_whole_table() {
        let f = |queue: Option<&str>, state: Option<JobState>, key: Option<&str>| JobFilter {
            queue: queue.map(Into::into),
            state,
            key: key.map(Into::into),
            ..Default::default()
        };
        assert_eq!(plan(&f(None, None, Some("k"))), ListPlan::One);
        assert_eq!(plan(&f(Some("q"), None, None)), ListPlan::EachState);
        assert_eq!(plan(&f(Some("q"), Some(JobState::Failed), None)), ListPlan::One);
        assert_eq!(plan(&f(None, Some(JobState::Failed), None)), ListPlan::EachQueue);
        assert_eq!(plan(&JobFilter { partial: Some(true), ..Default::default() }), ListPlan::EachQueue);
        assert_eq!(plan(&f(None, None, None)), ListPlan::One);
        assert_eq!(each_state(&f(Some("q"), None, None)).count(), JobState::ALL.len());
        let children =
            JobFilter { parent: Some(drove_core::JobId(4)), queue: Some("q".into()), ..Default::default() };
        assert_eq!(plan(&children), ListPlan::One);
    }
}
