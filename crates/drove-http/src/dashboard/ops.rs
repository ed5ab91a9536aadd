//! `/ops`: what needs a person. First the counts (every run that ended in the last hour, day and
//! week: succeeded, partial, failed, cancelled, from the store's per-minute outcomes, per queue
//! for the chosen window), then jobs running now (longest first, with progress, rate and ETA),
//! failures grouped by error message ("what broke last night" is the default 24-hour window),
//! and partial successes.
//!
//! Every list is a bounded read (the caps below, stated on the page): failures are the newest
//! failed jobs by id, partial successes the newest partial ones.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::{ErrorKind, Job, JobId, JobState, Millis};
use drove_store::JobFilter;
use maud::{Markup, html};
use serde::Deserialize;

use super::view::{self, Chrome, Nav, PageError, PageQuery, duration, job_href, jobs_href, queue_href, when};
use crate::AppState;

/// Running jobs read (the store bounds them by concurrency anyway).
const RUNNING_CAP: usize = 200;
/// Newest failed jobs read for the grouping.
const FAILED_CAP: usize = 300;
/// Partial successes shown (the newest).
const PARTIAL_SHOWN: usize = 30;
/// Example jobs linked per failure group.
const EXAMPLES: usize = 5;
/// Operations (parents with children) shown, the newest.
const OPERATIONS_SHOWN: usize = 30;

#[derive(Deserialize, Default)]
pub struct OpsQuery {
    #[serde(default)]
    since: String,
}

const WINDOWS: [(&str, i64); 3] = [("1h", 3_600_000), ("24h", 86_400_000), ("7d", 7 * 86_400_000)];

/// Failures that look alike: same kind and same message once numbers are blanked out, so
/// "timeout after 3012 ms" and "timeout after 2987 ms" count as one problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Signature {
    kind: ErrorKind,
    text: String,
}

fn signature(kind: ErrorKind, message: &str) -> Signature {
    let mut text = String::new();
    let mut in_number = false;
    for c in message.chars().take(300) {
        if c.is_ascii_digit() {
            if !in_number {
                text.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            text.push(c);
        }
    }
    Signature { kind, text: text.trim().to_owned() }
}

struct Group {
    sample: String,
    kind: ErrorKind,
    count: usize,
    queues: BTreeSet<String>,
    first: Millis,
    last: Millis,
    examples: Vec<JobId>,
}

fn group_failures(jobs: &[Job], since: Millis) -> Vec<Group> {
    let mut groups: HashMap<Signature, Group> = HashMap::new();
    for j in jobs {
        let Some(e) = &j.error else { continue };
        let at = j.finished_at.unwrap_or(e.at);
        if at < since {
            continue;
        }
        let g = groups.entry(signature(e.kind, &e.message)).or_insert_with(|| Group {
            sample: e.message.clone(),
            kind: e.kind,
            count: 0,
            queues: BTreeSet::new(),
            first: at,
            last: at,
            examples: Vec::new(),
        });
        g.count += 1;
        g.queues.insert(j.queue.clone());
        g.first = g.first.min(at);
        g.last = g.last.max(at);
        if g.examples.len() < EXAMPLES {
            g.examples.push(j.id);
        }
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last.cmp(&a.last)));
    out
}

pub async fn page(
    State(st): State<AppState>,
    PageQuery(q): PageQuery<OpsQuery>,
) -> Result<Response, PageError> {
    let (window, window_ms) = match q.since.as_str() {
        "" => WINDOWS[1],
        s => *WINDOWS
            .iter()
            .find(|(name, _)| *name == s)
            .ok_or_else(|| PageError::bad_request("since: must be 1h, 24h or 7d"))?,
    };
    let store = st.engine.store();
    let now = drove_engine::now();
    let since = now.minus_ms(window_ms);

    let running = JobFilter { state: Some(JobState::Running), ..Default::default() };
    let mut running = store.list_jobs(running, RUNNING_CAP, None).await?.jobs;
    running.sort_by_key(|j| j.started_at.unwrap_or(now));

    let failed = JobFilter { state: Some(JobState::Failed), ..Default::default() };
    let failed = store.list_jobs(failed, FAILED_CAP, None).await?.jobs;
    let groups = group_failures(&failed, since);

    let partial = JobFilter { partial: Some(true), ..Default::default() };
    let mut partial = store.list_jobs(partial, PARTIAL_SHOWN, None).await?.jobs;
    partial.retain(|j| j.finished_at.is_some_and(|f| f >= since));

    let operations = JobFilter { operations: true, ..Default::default() };
    let operations = store.list_jobs(operations, OPERATIONS_SHOWN, None).await?.jobs;

    let mut totals = Vec::with_capacity(WINDOWS.len());
    for (name, ms) in WINDOWS {
        totals.push((name, crate::summary::summary(&**store, name, ms, now).await?));
    }
    let chosen = totals.iter().find(|(name, _)| *name == window).map(|(_, s)| s.clone());

    let chrome =
        Chrome { title: "Operations", nav: Nav::Ops, auth: st.config.token.is_some(), live_ms: 5_000 };
    let body = html! {
        h1 { "Operations" }
        p.window {
            "Failures and partial successes of the last "
            @for (name, _) in WINDOWS {
                @if name == window { strong { (name) } } @else { a href={ "/ops?since=" (name) } { (name) } }
                " "
            }
        }
        div #ops data-live {
            section.panel #ops-totals {
                h2 { "Ended runs" }
                table.totals {
                    tbody {
                        @for (name, s) in &totals {
                            tr data-window=(name) {
                                th { "last " (name) }
                                td { (outcome_sentence(&s.totals, None)) }
                            }
                        }
                    }
                }
                @if let Some(s) = &chosen {
                    @if !s.queues.is_empty() {
                        h3 { "By queue, last " (window) }
                        div.table-wrap { table.jobs {
                            thead { tr { th { "Queue" } th { "Ended runs" } th { "Failures by kind" } } }
                            tbody {
                                @for q in &s.queues {
                                    tr data-queue=(q.name) {
                                        td { a href=(queue_href(&q.name)) { (q.name) } }
                                        td { (outcome_sentence(&q.tally, Some(&q.name))) }
                                        td { @for (kind, n) in &q.tally.failed_by_kind { span.badge.state-failed { (n) " " (kind) } " " } }
                                    }
                                }
                            }
                        } }
                    }
                }
            }
            section.panel #operations {
                h2 { "Operations" span.muted { " a parent and its children, newest first" } }
                (operations_table(&operations, now))
                p.note { "The newest " (OPERATIONS_SHOWN) " jobs with children; progress is children ended of total." }
            }
            section.panel {
                h2 { "Running now" span.muted { " " (running.len()) ", longest first" } }
                (running_table(&running, now))
            }
            section.panel {
                h2 { "Failures by error" span.muted { " last " (window) } }
                (failure_table(&groups, now))
                p.note { "Grouped from the newest " (FAILED_CAP) " failed jobs; messages that differ only in numbers count as one." }
            }
            section.panel {
                h2 { "Partial successes" span.muted { " last " (window) } }
                (partial_table(&partial, now))
                p.note { "The newest " (PARTIAL_SHOWN) " partial successes, " a href="/jobs?state=partial" { "all of them" } "." }
            }
        }
    };
    Ok(view::html_response(StatusCode::OK, view::layout(&chrome, body)))
}

/// "25 succeeded (5 partial) · 5 failed": each number next to its word, the words linking to the
/// jobs behind them (of `queue` when given).
fn outcome_sentence(t: &crate::summary::Tally, queue: Option<&str>) -> Markup {
    let link = |state: &str| match queue {
        Some(q) => format!("/jobs{}", view::query(&[("state", state), ("queue", q)])),
        None => format!("/jobs{}", view::query(&[("state", state)])),
    };
    html! {
        span.outcomes {
            a.good-text href=(link("succeeded")) { strong { (t.succeeded) } " succeeded" }
            @if t.partial > 0 { " (" a href=(link("partial")) { strong { (t.partial) } " partial" } ")" }
            " · "
            a.bad-text href=(link("failed")) { strong { (t.failed) } " failed" }
            @if t.cancelled > 0 { " · " a href=(link("cancelled")) { strong { (t.cancelled) } " cancelled" } }
        }
    }
}

fn operations_table(jobs: &[Job], now: Millis) -> Markup {
    html! {
        @if jobs.is_empty() { p.empty { "No operation yet: a job becomes one when it has children." } } @else {
            div.table-wrap { table.jobs {
                thead { tr { th { "Operation" } th { "Queue" } th { "Key" } th { "Parent" } th { "Children" } th { "Created" } } }
                tbody {
                    @for j in jobs {
                        tr data-operation=(j.id) {
                            td { a href=(job_href(j.id)) { (j.id) } @if let Some(k) = &j.kind { " " span.muted { (view::clip(k, 30)) } } }
                            td { a href=(queue_href(&j.queue)) { (j.queue) } }
                            td { @if let Some(k) = &j.key { (view::clip(k, 40)) } }
                            td { (view::state_badge(j.state)) }
                            td { @if let Some(c) = &j.children { (view::children_summary(j.id, j.state, c)) } }
                            td { (when(j.created_at, now)) }
                        }
                    }
                }
            } }
        }
    }
}

fn running_table(jobs: &[Job], now: Millis) -> Markup {
    html! {
        @if jobs.is_empty() { p.empty { "Nothing is running." } } @else {
            div.table-wrap { table.jobs {
                thead { tr { th { "Job" } th { "Queue" } th { "Key" } th { "Running for" } th { "Progress" } th { "Worker" } } }
                tbody {
                    @for j in jobs {
                        tr data-job=(j.id) {
                            td { a href=(job_href(j.id)) { (j.id) } @if j.cancel_requested { " " span.badge.held { "cancel requested" } } }
                            td { a href=(queue_href(&j.queue)) { (j.queue) } }
                            td { @if let Some(k) = &j.key { (view::clip(k, 40)) } }
                            td.num { @if let Some(s) = j.started_at { (duration(now.since(s))) } }
                            td { (view::progress_bar(j.progress.as_ref(), None)) " " (view::progress_pace(j, now)) }
                            td { @if let Some(w) = &j.worker { code { (view::clip(w, 30)) } } }
                        }
                    }
                }
            } }
        }
    }
}

fn failure_table(groups: &[Group], now: Millis) -> Markup {
    html! {
        @if groups.is_empty() { p.empty { "No failure in this window." } } @else {
            div.table-wrap { table.failures {
                thead { tr { th.num { "Jobs" } th { "Error" } th { "Queues" } th { "Last" } th { "First" } th { "Examples" } } }
                tbody {
                    @for g in groups {
                        tr {
                            td.num.bad-text { strong { (g.count) } }
                            td { span.badge.state-failed { (g.kind.as_str()) } " " span.error-text { (view::clip(&g.sample, 200)) } }
                            td { @for q in &g.queues { a href=(jobs_href(q, Some(JobState::Failed))) { (q) } " " } }
                            td { (when(g.last, now)) }
                            td { (when(g.first, now)) }
                            td { @for id in &g.examples { a href=(job_href(*id)) { (id) } " " } }
                        }
                    }
                }
            } }
        }
    }
}

fn partial_table(jobs: &[Job], now: Millis) -> Markup {
    html! {
        @if jobs.is_empty() { p.empty { "No partial success in this window." } } @else {
            div.table-wrap { table.jobs {
                thead { tr { th { "Job" } th { "Queue" } th { "Key" } th { "Finished" } th { "Progress" } th { "Result" } } }
                tbody {
                    @for j in jobs {
                        tr {
                            td { a href=(job_href(j.id)) { (j.id) } }
                            td { a href=(queue_href(&j.queue)) { (j.queue) } }
                            td { @if let Some(k) = &j.key { (view::clip(k, 40)) } }
                            td { (view::opt_when(j.finished_at, now)) }
                            td { (view::progress_bar(j.progress.as_ref(), None)) }
                            td { @if let Some(r) = &j.result { code { (view::clip(r.get(), 80)) } } }
                        }
                    }
                }
            } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drove_core::JobError;

    fn failed(id: i64, queue: &str, message: &str, at: i64) -> Job {
        let mut job = base(id);
        job.queue = queue.into();
        job.error = Some(JobError { kind: ErrorKind::Retryable, message: message.into(), at: Millis(at) });
        job.finished_at = Some(Millis(at));
        job
    }

    fn base(id: i64) -> Job {
        let new = drove_store::NewJob::new("", drove_core::raw_null());
        let mut job = new.into_job(JobId(id), &drove_core::QueueConfig::default(), Millis(0));
        job.state = JobState::Failed;
        job.attempt = 1;
        job.max_attempts = 1;
        job
    }

    #[test]
    fn failures_group_by_message_shape() {
        let jobs = vec![
            failed(5, "a", "timeout after 3012 ms", 500),
            failed(4, "b", "timeout after 2987 ms", 400),
            failed(3, "a", "disk full", 300),
            failed(2, "a", "timeout after 1 ms", 50), // before the window
        ];
        let groups = group_failures(&jobs, Millis(100));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].queues.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((groups[0].first, groups[0].last), (Millis(400), Millis(500)));
        assert_eq!(groups[0].examples, [JobId(5), JobId(4)]);
        assert_eq!(groups[1].sample, "disk full");
    }
}
