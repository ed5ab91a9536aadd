//! `/jobs/ID`: one job's payload, result, error, progress, checkpoint and what the store keeps
//! of its history, with the actions that fit its state (cancel, retry). The actions call the
//! same store methods as `POST /v1/jobs/ID/cancel` and `/retry`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::{Job, JobState, Millis};
use maud::{Markup, html};
use serde::Deserialize;

use super::view::{self, Chrome, Nav, PageError, PageQuery, Seg, duration, job_href, queue_href, when};
use crate::AppState;

/// Payloads, results and checkpoints are shown up to this size; the API serves the rest.
const SHOW_MAX: usize = 64 << 10;

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

pub async fn page(
    State(st): State<AppState>,
    id: Seg,
    PageQuery(q): PageQuery<Done>,
) -> Result<Response, PageError> {
    let id = id.job_id()?;
    let job = st
        .engine
        .store()
        .get_job(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("job {id} not found (it may have been pruned)")))?;
    let now = drove_engine::now();
    let title = format!("Job {id}");
    // A finished job changes only if someone retries it: a slower refresh is enough.
    let live_ms = if job.state.is_terminal() { 5_000 } else { 1_000 };
    let chrome = Chrome { title: &title, nav: Nav::Jobs, auth: st.config.token.is_some(), live_ms };
    let body = html! {
        p.crumbs { a href="/jobs" { "Jobs" } " / " a href=(queue_href(&job.queue)) { (job.queue) } " / " }
        h1 { "Job " code { (job.id) } @if let Some(k) = &job.kind { " " span.muted { (k) } } }
        (view::flash(q.done.as_deref()))
        div #job-live data-live { (live(&job, now)) }
        div.columns {
            section.panel {
                h2 { "Payload" }
                (view::json_block(Some(&job.payload), SHOW_MAX))
            }
            section.panel {
                h2 { "Checkpoint" }
                div #job-checkpoint data-live { (view::json_block(job.checkpoint.as_ref(), SHOW_MAX)) }
            }
        }
        p.muted { "As JSON: " a href={ "/v1/jobs/" (job.id) } { "/v1/jobs/" (job.id) } }
    };
    Ok(view::html_response(StatusCode::OK, view::layout(&chrome, body)))
}

/// The parts of the page that change while the job runs.
fn live(job: &Job, now: Millis) -> Markup {
    html! {
        div.job-head {
            span #job-state { (view::state_badge(job.state)) }
            @if job.cancel_requested && job.state == JobState::Running {
                " " span.badge.held #cancel-requested { "cancel requested" }
            }
            @if job.partial { " " span.badge.partial #partial { "partial success" } }
            (actions(job))
        }
        @if job.state == JobState::Running || job.progress.is_some() {
            section.panel {
                h2 { "Progress" }
                (view::progress_bar(job.progress.as_ref(), Some("job-progress")))
                @if job.state == JobState::Running { " " (view::progress_pace(job, drove_engine::now())) }
            }
        }
        div.columns {
            section.panel {
                h2 { "Details" }
                table.details {
                    tbody {
                        tr { th { "queue" } td { a href=(queue_href(&job.queue)) { (job.queue) } } }
                        tr { th { "key" } td #job-key { @match &job.key { Some(k) => { code { (k) } } None => { span.muted { "—" } } } } }
                        tr { th { "group" } td #job-group { @match &job.group { Some(g) => { code { (g) } } None => { span.muted { "—" } } } } }
                        tr { th { "priority" } td { (job.priority) } }
                        tr { th { "attempt" } td #job-attempt { (job.attempt) " of " (job.max_attempts) } }
                        tr { th { "created" } td { (when(job.created_at, now)) } }
                        tr { th { "due" } td { (when(job.run_at, now)) } }
                        tr { th { "last run started" } td { (view::opt_when(job.started_at, now)) } }
                        tr { th { "last run ended" } td { (view::opt_when(job.finished_at, now)) } }
                        @if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
                            tr { th { "last run took" } td { (duration(f.since(s))) } }
                        } @else if let (Some(s), JobState::Running) = (job.started_at, job.state) {
                            tr { th { "running for" } td { (duration(now.since(s))) } }
                        }
                        @if let Some(w) = &job.worker { tr { th { "worker" } td { code { (w) } } } }
                        @if let Some(l) = job.lease_expires_at { tr { th { "lease ends" } td { (when(l, now)) } } }
                        @if let Some(t) = job.timeout_ms { tr { th { "timeout" } td { (duration(t)) } } }
                        @if let Some(w) = job.waiting_for {
                            tr { th { "waiting for" } td #job-waiting-for { (view::waiting_text(w)) } }
                        }
                        @if let Some(p) = job.parent {
                            tr { th { "parent" } td { a href=(job_href(p)) { (p) } } }
                        }
                        @if !job.depends_on.is_empty() {
                            tr { th { "depends on" } td #job-depends-on { @for d in &job.depends_on { a href=(job_href(*d)) { (d) } " " } } }
                        }
                        @if let Some(c) = &job.children {
                            tr { th { "children" } td #job-children { (view::children_summary(job.id, job.state, c)) } }
                        }
                    }
                }
            }
            section.panel {
                h2 { "Last error" }
                @match &job.error {
                    Some(e) => {
                        p { span.badge.state-failed { (e.kind.as_str()) } " " (when(e.at, now)) }
                        pre.error-text #job-error { (e.message) }
                    }
                    None => { p.muted { "none" } }
                }
                h2 { "Result" }
                div #job-result { (view::json_block(job.result.as_ref(), SHOW_MAX)) }
            }
        }
        section.panel #job-history {
            h2 { "Runs that failed" }
            @if job.errors.is_empty() {
                p.muted { "none" }
            } @else {
                div.table-wrap { table.jobs {
                    thead { tr { th { "attempt" } th { "outcome" } th { "when" } th { "error" } } }
                    tbody {
                        @for e in job.errors.iter().rev() {
                            tr {
                                td { (e.attempt) }
                                td { span.badge.state-failed { (e.kind.as_str()) } }
                                td { (when(e.at, now)) }
                                td { span.error-text { (view::clip(&e.message, 300)) } }
                            }
                        }
                    }
                } }
                p.muted { "Newest first; the last " (drove_core::ERROR_HISTORY) " are kept. Runs that succeeded, were released or snoozed are not listed." }
            }
        }
    }
}

fn actions(job: &Job) -> Markup {
    let href = job_href(job.id);
    let cancellable = matches!(job.state, JobState::Waiting | JobState::Scheduled | JobState::Queued)
        || (job.state == JobState::Running && !job.cancel_requested);
    let retryable = matches!(job.state, JobState::Failed | JobState::Cancelled);
    html! {
        span.actions {
            @if cancellable {
                form method="post" action={ (href) "/cancel" } {
                    button.danger #cancel type="submit" title=(if job.state == JobState::Running {
                        "ask the worker to stop; the job is cancelled when its run ends"
                    } else { "cancel now" }) { "Cancel" }
                }
            }
            @if retryable {
                form method="post" action={ (href) "/retry" } {
                    button.primary #retry type="submit" title="queue it again with attempt 0" { "Retry" }
                }
            }
        }
    }
}

pub async fn cancel(State(st): State<AppState>, id: Seg) -> Result<Response, PageError> {
    let id = id.job_id()?;
    let job = st.engine.cancel(id).await.map_err(|e| back(e.into(), id))?;
    let done = if job.state == JobState::Cancelled { "cancelled" } else { "cancel_requested" };
    Ok(view::see_other(&format!("{}?done={done}", job_href(id))))
}

pub async fn retry(State(st): State<AppState>, id: Seg) -> Result<Response, PageError> {
    let id = id.job_id()?;
    st.engine.retry(id).await.map_err(|e| back(e.into(), id))?;
    Ok(view::see_other(&format!("{}?done=retried", job_href(id))))
}

fn back(e: PageError, id: drove_core::JobId) -> PageError {
    e.with_back(job_href(id), "Back to the job")
}
