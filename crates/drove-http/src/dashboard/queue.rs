//! `/queues/NAME`: a queue's settings (pause/resume, concurrency, rates editable), its charts
//! and its newest jobs in each state.
//!
//! The forms change settings through the same calls as `PUT /v1/queues/NAME`
//! (`QueuePatch::validate`, then `Store::put_queue`), so every node applies them at once. The
//! settings form sends the values it was rendered with alongside the edited ones, and only
//! fields the operator changed go into the patch: saving the concurrency does not overwrite a
//! rate another operator changed in the meantime.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::name::check_queue_name;
use drove_core::queue::QueuePatch;
use drove_core::{JobState, RateLimit};
use drove_store::{JobFilter, QueueInfo};
use maud::{Markup, html};
use serde::Deserialize;

use super::charts::{self, RunStats};
use super::overview::{limit_text, status};
use super::view::{
    self, Chrome, Nav, PageError, PageForm, PageQuery, Seg, duration, flash, job_href, jobs_href, queue_href,
    when,
};
use crate::AppState;

/// Newest jobs shown per state.
const PER_STATE: usize = 10;

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

async fn load(st: &AppState, name: &str) -> Result<QueueInfo, PageError> {
    let missing = || PageError::not_found(format!("queue {name} not found"));
    check_queue_name("name", name).map_err(|_| missing())?;
    st.engine.store().get_queue(name, drove_engine::now()).await?.ok_or_else(missing)
}

pub async fn page(
    State(st): State<AppState>,
    name: Seg,
    PageQuery(q): PageQuery<Done>,
) -> Result<Response, PageError> {
    let queue = load(&st, &name.0).await?;
    render(&st, queue, flash(q.done.as_deref()), StatusCode::OK).await
}

async fn render(
    st: &AppState,
    q: QueueInfo,
    notice: Markup,
    status_code: StatusCode,
) -> Result<Response, PageError> {
    let store = st.engine.store();
    let now = drove_engine::now();
    let runs = store.recent_runs(&q.name, now.minus_ms(charts::WINDOW_MS), charts::SAMPLE_CAP).await?;
    let stats = RunStats::new(&runs, now);
    let pool = match &q.config.pool {
        Some(p) => store.get_pool(p).await?,
        None => None,
    };
    let mut by_state = Vec::new();
    for s in JobState::ALL {
        if q.counts.get(s) == 0 {
            continue;
        }
        // Each page of one state is an index walk of at most PER_STATE + 1 rows.
        let filter = JobFilter { queue: Some(q.name.clone()), state: Some(s), ..Default::default() };
        by_state.push((s, store.list_jobs(filter, PER_STATE, None).await?.jobs));
    }
    let title = format!("Queue {}", q.name);
    let chrome =
        Chrome { title: &title, nav: Nav::Overview, auth: st.config.token.is_some(), live_ms: 2_000 };
    let href = queue_href(&q.name);
    let c = &q.config;
    let body = html! {
        p.crumbs { a href="/" { "Queues" } " / " }
        h1 { "Queue " code { (q.name) } }
        (notice)
        div.columns {
            section.panel {
                h2 { "Now" }
                div #queue-now data-live {
                    p {
                        (status(&q, now)) " limit in force: " (limit_text(&q))
                        @if let (Some(r), Some(cfg)) = (q.rate_now, q.config.rate.as_ref()) {
                            " · rate in force: " span #rate-now { (format!("{r:.1}")) "/s" }
                            @if cfg.is_auto() { " (learned, no ceiling)" }
                            @else if r * 1.001 < cfg.limit as f64 * 1_000.0 / cfg.period_ms as f64 { " (learned beneath the configured rate after throttles)" }
                        }
                    }
                    @if let Some(p) = &pool {
                        p #pool-limits {
                            "Pool " code { (p.name) } ": "
                            @match p.limit_now {
                                Some(l) => { "limit " (l) }
                                None => { "no limit" }
                            }
                            @if let Some(o) = p.offline_limit_now {
                                "; offline queues stop at " span data-offline-limit=(o) { (o) }
                                " (the downstream's estimated capacity)"
                            }
                        }
                    }
                    table.counts {
                        tbody {
                            @for s in JobState::ALL {
                                tr data-state=(s.as_str()) {
                                    th { (view::state_badge(s)) }
                                    td.num { a href=(jobs_href(&q.name, Some(s))) { (q.counts.get(s)) } }
                                }
                                @if s == JobState::Succeeded && q.counts.partial > 0 {
                                    tr data-state="partial" {
                                        th { span.muted { "of which partial" } }
                                        td.num { a href={ "/jobs" (view::query(&[("state", "partial"), ("queue", &q.name)])) } { (q.counts.partial) } }
                                    }
                                }
                            }
                        }
                    }
                    h3 { "Last hour" }
                    (charts::throughput_svg(&stats))
                    (charts::runtime_svg(&stats))
                    p.muted {
                        (stats.runs()) " runs sampled"
                        @if stats.capped { " (capped at " (charts::SAMPLE_CAP) ")" }
                        @if let (Some(a), Some(b)) = (stats.percentile(0.5), stats.percentile(0.95)) {
                            "; p50 " (duration(a)) ", p95 " (duration(b))
                        }
                    }
                }
            }
            section.panel {
                h2 { "Settings" }
                div.actions {
                    @if c.is_paused() {
                        form method="post" action={ (href) "/resume" } {
                            button.primary #resume type="submit" { "Resume" }
                        }
                    } @else {
                        form method="post" action={ (href) "/pause" } {
                            button.danger #pause type="submit" { "Pause" }
                        }
                    }
                }
                (settings_form(&q, &href))
                (settings_table(&q))
            }
        }
        section #queue-jobs data-live {
            h2 { "Jobs by state" }
            @if by_state.is_empty() { p.empty { "This queue holds no job." } }
            @for (s, jobs) in &by_state {
                h3 { (view::state_badge(*s)) " " (q.counts.get(*s)) " "
                    a.more href=(jobs_href(&q.name, Some(*s))) { "all " (s.as_str()) " jobs →" } }
                table.jobs {
                    thead { tr { th { "Job" } th { "Key" } th { "Group" } th { "Attempt" } th { "Created" } th { "Progress / error" } } }
                    tbody {
                        @for j in jobs {
                            tr {
                                td { a href=(job_href(j.id)) { (j.id) } @if let Some(k) = &j.kind { " " span.muted { (view::clip(k, 30)) } } }
                                td { @if let Some(k) = &j.key { (view::clip(k, 40)) } }
                                td { @if let Some(g) = &j.group { (view::clip(g, 30)) } }
                                td.num { (j.attempt) "/" (j.max_attempts) }
                                td { (when(j.created_at, now)) }
                                td {
                                    @if j.state == JobState::Running { (view::progress_bar(j.progress.as_ref(), None)) }
                                    @else if let Some(e) = &j.error { span.bad-text { (e.kind.as_str()) ": " (view::clip(&e.message, 80)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(view::html_response(status_code, view::layout(&chrome, body)))
}

fn num_text(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

fn rate_text(r: Option<&RateLimit>) -> String {
    r.map(|r| format!("{}/{}/{}", r.limit, r.period_ms, r.burst.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap_or_default()
}

fn settings_form(q: &QueueInfo, href: &str) -> Markup {
    let c = &q.config;
    let rate = c.rate.as_ref();
    html! {
        form.settings method="post" action={ (href) "/settings" } {
            input type="hidden" name="orig_concurrency" value=(num_text(c.concurrency));
            input type="hidden" name="orig_group_concurrency" value=(num_text(c.group_concurrency));
            input type="hidden" name="orig_rate" value=(rate_text(rate));
            label { "Concurrency" input #concurrency type="number" min="1" name="concurrency"
                value=(num_text(c.concurrency)) placeholder="no limit"; }
            label { "Per-group concurrency" input type="number" min="1" name="group_concurrency"
                value=(num_text(c.group_concurrency)) placeholder="no limit"; }
            fieldset {
                legend { "Rate limit" }
                label { "Starts" input #rate-limit type="number" min="1" name="rate_limit"
                    value=(num_text(rate.map(|r| r.limit))) placeholder="no limit"; }
                label { "per ms" input type="number" min="1" name="rate_period_ms"
                    value=(num_text(rate.map(|r| r.period_ms))) placeholder="1000"; }
                label { "burst" input type="number" min="1" name="rate_burst"
                    value=(num_text(rate.and_then(|r| r.burst))) placeholder="1"; }
            }
            p.muted { "Empty clears a limit. Only the fields you change are saved." }
            button.primary #save type="submit" { "Save" }
        }
    }
}

fn settings_table(q: &QueueInfo) -> Markup {
    let c = &q.config;
    let opt = |v: Option<i64>| html! { @match v { Some(v) => { (v) } None => { span.muted { "—" } } } };
    let ms = |v: Option<i64>| html! { @match v { Some(v) => { (duration(v)) } None => { span.muted { "default" } } } };
    html! {
        table.settings-table {
            tbody {
                tr { th { "group rate" } td { @match &c.group_rate { Some(r) => { (r.limit) " per " (duration(r.period_ms)) } None => { span.muted { "—" } } } } }
                tr { th { "adaptive" } td { @match &c.adaptive { Some(a) => { (a.min) " to " (a.max) } None => { span.muted { "—" } } } } }
                tr { th { "pool / lane" } td { @match &c.pool { Some(p) => { code { (p) } } None => { span.muted { "—" } } } " / " (format!("{:?}", c.lane()).to_lowercase()) } }
                tr { th { "max attempts" } td { (c.max_attempts()) } }
                tr { th { "backoff" } td { (duration(c.backoff().base_ms)) " doubling, at most " (duration(c.backoff().max_ms)) } }
                tr { th { "timeout" } td { (ms(c.timeout_ms)) } }
                tr { th { "lease" } td { (duration(c.lease_ms())) } }
                tr { th { "reuse successes for" } td { (ms(c.reuse_for_ms)) } }
                tr { th { "group concurrency" } td { (opt(c.group_concurrency)) } }
            }
        }
        p.muted { "Other settings: " code { "PUT /v1/queues/" (q.name) } " or " code { "drove queue " (q.name) " …" } }
    }
}

#[derive(Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    group_concurrency: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    rate_period_ms: String,
    #[serde(default)]
    rate_burst: String,
    #[serde(default)]
    orig_concurrency: String,
    #[serde(default)]
    orig_group_concurrency: String,
    #[serde(default)]
    orig_rate: String,
}

/// A number field: empty clears the setting.
fn field(name: &str, text: &str) -> Result<Option<i64>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>().map(Some).map_err(|_| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name}: must be a whole number, got {text:?}"),
        )
    })
}

impl SettingsForm {
    fn patch(&self) -> Result<QueuePatch, PageError> {
        let mut patch = QueuePatch::default();
        if self.concurrency.trim() != self.orig_concurrency.trim() {
            patch.concurrency = Some(field("concurrency", &self.concurrency)?);
        }
        if self.group_concurrency.trim() != self.orig_group_concurrency.trim() {
            patch.group_concurrency = Some(field("group_concurrency", &self.group_concurrency)?);
        }
        let rate = match field("rate.limit", &self.rate_limit)? {
            None => None,
            Some(limit) => Some(RateLimit {
                limit,
                period_ms: field("rate.period_ms", &self.rate_period_ms)?.unwrap_or(1_000),
                burst: field("rate.burst", &self.rate_burst)?,
                learn: None,
                auto: false,
                per: None,
            }),
        };
        if rate_text(rate.as_ref()) != self.orig_rate.trim() {
            patch.rate = Some(rate);
        }
        Ok(patch)
    }
}

async fn apply(st: &AppState, name: &str, patch: QueuePatch) -> Result<(), PageError> {
    patch.validate()?;
    st.engine.put_queue(name, patch).await?;
    Ok(())
}

pub async fn settings(
    State(st): State<AppState>,
    name: Seg,
    PageForm(form): PageForm<SettingsForm>,
) -> Result<Response, PageError> {
    let queue = load(&st, &name.0).await?;
    let href = queue_href(&queue.name);
    let patch = form.patch().map_err(|e| e.with_back(href.clone(), "Back to the queue"))?;
    if patch == QueuePatch::default() {
        return Ok(view::see_other(&format!("{href}?done=unchanged")));
    }
    match apply(&st, &queue.name, patch).await {
        Ok(()) => Ok(view::see_other(&format!("{href}?done=saved"))),
        // An invalid value: the page again, with the message above the form.
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let notice = html! { p.flash.error-message role="alert" { "Not saved: " (e.message) } };
            render(&st, queue, notice, e.status).await
        }
        Err(e) => Err(e.with_back(href, "Back to the queue")),
    }
}

async fn set_paused(st: AppState, name: Seg, paused: bool) -> Result<Response, PageError> {
    let queue = load(&st, &name.0).await?;
    let patch = QueuePatch { paused: Some(Some(paused)), ..Default::default() };
    apply(&st, &queue.name, patch).await?;
    let done = if paused { "paused" } else { "resumed" };
    Ok(view::see_other(&format!("{}?done={done}", queue_href(&queue.name))))
}

pub async fn pause(State(st): State<AppState>, name: Seg) -> Result<Response, PageError> {
    set_paused(st, name, true).await
}

pub async fn resume(State(st): State<AppState>, name: Seg) -> Result<Response, PageError> {
    set_paused(st, name, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(c: &str, orig_c: &str, limit: &str, orig_rate: &str) -> SettingsForm {
        SettingsForm {
            concurrency: c.into(),
            orig_concurrency: orig_c.into(),
            rate_limit: limit.into(),
            rate_period_ms: "500".into(),
            orig_rate: orig_rate.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_changed_fields_are_patched() {
        let p = form("8", "4", "10", "10/500/").patch().unwrap();
        assert_eq!(p.concurrency, Some(Some(8)));
        assert_eq!(p.rate, None);
        let p = form("", "4", "", "10/500/").patch().unwrap();
        assert_eq!(p.concurrency, Some(None));
        assert_eq!(p.rate, Some(None));
        let p = form("4", "4", "20", "").patch().unwrap();
        assert_eq!(p.concurrency, None);
        assert_eq!(
            p.rate,
            Some(Some(RateLimit {
                limit: 20,
                period_ms: 500,
                burst: None,
                learn: None,
                auto: false,
                per: None
            }))
        );
        assert_eq!(form("x", "4", "", "").patch().unwrap_err().status, StatusCode::UNPROCESSABLE_ENTITY);
        // Values are checked by the same rule as the API.
        assert!(form("0", "4", "", "").patch().unwrap().validate().is_err());
    }
}
