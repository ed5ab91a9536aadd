//! `/schedules`: every schedule with its pattern, next and last tick and its last job, with
//! pause, resume and "run now".

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::Millis;
use drove_store::schedules::ScheduleInfo;
use maud::{Markup, html};
use serde::Deserialize;

use super::view::{self, Chrome, Nav, PageError, PageQuery, Seg, job_href, queue_href};
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct Query {
    #[serde(default)]
    done: Option<String>,
}

pub async fn page(State(st): State<AppState>, PageQuery(q): PageQuery<Query>) -> Result<Response, PageError> {
    let schedules = st.engine.store().list_schedules().await?;
    let now = drove_engine::now();
    let chrome =
        Chrome { title: "Schedules", nav: Nav::Schedules, auth: st.config.token.is_some(), live_ms: 5_000 };
    let body = html! {
        h1 { "Schedules" }
        (view::flash(q.done.as_deref()))
        div #schedules data-live { (table(&schedules, now)) }
        p.note { "Each tick enqueues exactly one job, whichever node is up. Set them with "
            code { "PUT /v1/schedules/NAME" } " or " code { "drove schedule set" } "." }
    };
    Ok(view::html_response(StatusCode::OK, view::layout(&chrome, body)))
}

fn table(schedules: &[ScheduleInfo], now: Millis) -> Markup {
    html! {
        @if schedules.is_empty() { p.empty { "No schedule yet." } } @else {
            div.table-wrap { table.jobs {
                thead { tr { th { "Schedule" } th { "Pattern" } th { "Queue" } th { "Next tick" } th { "Last tick" }
                    th { "Last job" } th { "Catch-up" } th {} } }
                tbody {
                    @for s in schedules {
                        tr data-schedule=(s.name) {
                            td { strong { (s.name) } @if s.spec.paused { " " span.badge.paused { "paused" } } }
                            td { code { (s.spec.cron) } @if let Some(tz) = &s.spec.timezone { br; span.muted { (tz) } } }
                            td { a href=(queue_href(&s.spec.queue)) { (s.spec.queue) } }
                            td.next { @if s.spec.paused { span.muted { "—" } } @else { (view::opt_when(s.next_at, now)) } }
                            td { (view::opt_when(s.last_tick_at, now)) }
                            td { @if let Some(id) = s.last_job {
                                a href=(job_href(id)) { (id) }
                                @if let Some(st) = s.last_job_state { " " (view::state_badge(st)) }
                            } }
                            td { (format!("{:?}", s.spec.catch_up).to_lowercase()) }
                            td.actions {
                                @let base = format!("/schedules/{}", view::path_seg(&s.name));
                                @if s.spec.paused {
                                    form method="post" action={ (base) "/resume" } { button type="submit" { "Resume" } }
                                } @else {
                                    form method="post" action={ (base) "/pause" } { button type="submit" { "Pause" } }
                                }
                                form method="post" action={ (base) "/run" } { button.primary type="submit" title="enqueue its job now" { "Run now" } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

async fn set_paused(st: &AppState, name: &str, paused: bool) -> Result<(), PageError> {
    let info = st
        .engine
        .store()
        .get_schedule(name)
        .await?
        .ok_or_else(|| PageError::not_found(format!("schedule {name} not found")))?;
    let spec = drove_store::schedules::ScheduleSpec { paused, ..info.spec };
    st.engine.put_schedule(name, spec).await?;
    Ok(())
}

pub async fn pause(State(st): State<AppState>, name: Seg) -> Result<Response, PageError> {
    set_paused(&st, &name.0, true).await?;
    Ok(view::see_other("/schedules?done=schedule_paused"))
}

pub async fn resume(State(st): State<AppState>, name: Seg) -> Result<Response, PageError> {
    set_paused(&st, &name.0, false).await?;
    Ok(view::see_other("/schedules?done=schedule_resumed"))
}

pub async fn run(State(st): State<AppState>, name: Seg) -> Result<Response, PageError> {
    let sub = st.engine.run_schedule(&name.0).await?;
    Ok(view::see_other(&format!("{}?done=schedule_run", job_href(sub.job.id))))
}
