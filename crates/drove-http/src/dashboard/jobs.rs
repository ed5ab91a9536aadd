//! `/jobs`: the job list with filters and cursor paging.
//!
//! It reads through `Store::list_jobs` with the API's cursors, so a page costs about `limit`
//! index rows per branch however many finished jobs are kept (no OFFSET, no COUNT). Paging is
//! forward only ("next page" carries the last id seen); "newest" goes back to the start.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::{Job, JobId, JobState, Millis};
use drove_store::JobFilter;
use maud::{Markup, html};
use serde::Deserialize;

use super::view::{self, Chrome, Nav, PageError, PageQuery, job_href, queue_href, when};
use crate::AppState;
use crate::routes::jobs::{decode_cursor, encode_cursor};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
}

pub async fn list(
    State(st): State<AppState>,
    PageQuery(q): PageQuery<ListQuery>,
) -> Result<Response, PageError> {
    // "partial" is offered beside the states: the succeeded jobs that left items undone.
    let partial = (q.state == "partial").then_some(true);
    let state = match q.state.as_str() {
        "" => None,
        "partial" => Some(JobState::Succeeded),
        s => Some(s.parse::<JobState>().map_err(|_| {
            PageError::bad_request(
                "state: must be waiting, scheduled, queued, running, succeeded, partial, failed or cancelled",
            )
        })?),
    };
    let limit = match q.limit.trim() {
        "" => DEFAULT_LIMIT,
        t => t.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            PageError::bad_request(format!("limit: must be a whole number from 1 to {MAX_LIMIT}"))
        })?,
    };
    let before = match q.cursor.as_str() {
        "" => None,
        c => Some(decode_cursor(c).ok_or_else(|| PageError::bad_request("cursor: unreadable"))?),
    };
    let store = st.engine.store();
    let trimmed = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let (jobs, next) = if let Some(id) = trimmed(&q.id) {
        // An id is one point read; the other filters still apply to what it finds.
        let job = match id.parse::<JobId>() {
            Ok(id) => store.get_job(id).await?,
            Err(()) => None,
        };
        let fits = |j: &Job| {
            state.is_none_or(|s| j.state == s)
                && partial.is_none_or(|p| j.partial == p)
                && trimmed(&q.queue).is_none_or(|x| j.queue == x)
                && trimmed(&q.key).is_none_or(|x| j.key.as_deref() == Some(x.as_str()))
                && trimmed(&q.group).is_none_or(|x| j.group.as_deref() == Some(x.as_str()))
        };
        (job.into_iter().filter(fits).collect(), None)
    } else {
        let filter = JobFilter {
            queue: trimmed(&q.queue),
            state,
            key: trimmed(&q.key),
            group: trimmed(&q.group),
            partial,
            parent: match trimmed(&q.parent) {
                Some(p) => Some(
                    p.parse::<JobId>().map_err(|()| PageError::bad_request("parent: must be a job id"))?,
                ),
                None => None,
            },
            ..Default::default()
        };
        let page = store.list_jobs(filter, limit, before).await?;
        (page.jobs, page.next_before)
    };
    let now = drove_engine::now();
    let queues = store.list_queues(now).await?;
    let limit_text = if limit == DEFAULT_LIMIT { String::new() } else { limit.to_string() };
    let filters = [
        ("state", q.state.as_str()),
        ("queue", q.queue.trim()),
        ("key", q.key.trim()),
        ("group", q.group.trim()),
        ("id", q.id.trim()),
        ("parent", q.parent.trim()),
        ("limit", limit_text.as_str()),
    ];
    let next_href = next.map(|id| {
        let cursor = encode_cursor(id);
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", &cursor));
        format!("/jobs{}", view::query(&pairs))
    });
    let chrome = Chrome { title: "Jobs", nav: Nav::Jobs, auth: st.config.token.is_some(), live_ms: 5_000 };
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/jobs" {
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[state == Some(s) && partial.is_none()] { (s.as_str()) }
                        @if s == JobState::Succeeded {
                            option value="partial" selected[partial.is_some()] { "succeeded, partial" }
                        }
                    }
                }
            }
            label { "Queue" input type="text" name="queue" list="queue-names" value=(q.queue.trim()) maxlength="64"; }
            datalist #queue-names { @for qi in &queues { option value=(qi.name) {} } }
            label { "Key" input type="text" name="key" value=(q.key.trim()) maxlength="128"; }
            label { "Group" input type="text" name="group" value=(q.group.trim()) maxlength="128"; }
            label { "Id" input type="text" name="id" value=(q.id.trim()) inputmode="numeric" maxlength="19"; }
            label { "Parent" input type="text" name="parent" value=(q.parent.trim()) inputmode="numeric" maxlength="19"; }
            @if limit != DEFAULT_LIMIT { input type="hidden" name="limit" value=(limit); }
            button.primary type="submit" { "Filter" }
            " " a href="/jobs" { "clear" }
        }
        div #job-list data-live {
            (table(&jobs, now))
            p.pager {
                @if before.is_some() { a href={ "/jobs" (view::query(&filters)) } { "← newest" } " " }
                @if let Some(href) = &next_href { a #next-page href=(href) { "next page →" } }
                @else if !jobs.is_empty() { span.muted { "end of the list" } }
            }
        }
    };
    Ok(view::html_response(StatusCode::OK, view::layout(&chrome, body)))
}

pub fn table(jobs: &[Job], now: Millis) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.empty { "No job matches." }
        } @else {
            div.table-wrap {
                table.jobs {
                    thead {
                        tr { th { "Job" } th { "Queue" } th { "State" } th { "Key" } th { "Group" } th.num { "Attempt" }
                             th { "Created" } th { "Started / finished" } th { "Progress / error" } }
                    }
                    tbody {
                        @for j in jobs {
                            tr data-job=(j.id) {
                                td { a href=(job_href(j.id)) { (j.id) } @if let Some(k) = &j.kind { br; span.muted { (view::clip(k, 30)) } } }
                                td { a href=(queue_href(&j.queue)) { (j.queue) } }
                                td { (view::state_badge(j.state)) @if j.cancel_requested { " " span.badge.held { "cancel requested" } }
                                     @if j.partial { " " span.badge.partial { "partial" } } }
                                td { @if let Some(k) = &j.key { (view::clip(k, 40)) } }
                                td { @if let Some(g) = &j.group { (view::clip(g, 30)) } }
                                td.num { (j.attempt) "/" (j.max_attempts) }
                                td { (when(j.created_at, now)) }
                                td { @if let Some(f) = j.finished_at { (when(f, now)) } @else { (view::opt_when(j.started_at, now)) } }
                                td {
                                    @if j.state == JobState::Running { (view::progress_bar(j.progress.as_ref(), None)) }
                                    @else if let Some(w) = j.waiting_for { span.muted { "waiting for " (view::waiting_text(w)) } }
                                    @else if let Some(e) = &j.error { span.bad-text { (e.kind.as_str()) ": " (view::clip(&e.message, 80)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
