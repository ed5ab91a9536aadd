//! `/`: every queue with its counts by state, the last hour's throughput and run times, the
//! limit in force and whether it is paused.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use drove_core::{JobState, Millis};
use drove_store::QueueInfo;
use maud::{Markup, html};

use super::charts::{self, RunStats};
use super::view::{self, Chrome, Nav, PageError, duration, jobs_href, queue_href};
use crate::AppState;

pub async fn page(State(st): State<AppState>) -> Result<Response, PageError> {
    let store = st.engine.store();
    let now = drove_engine::now();
    let queues = store.list_queues(now).await?;
    let mut rows = Vec::with_capacity(queues.len());
    for q in queues {
        // Capped sample (charts::SAMPLE_CAP): a page view reads a bounded number of rows per
        // queue however busy the queue is.
        let runs = store.recent_runs(&q.name, now.minus_ms(charts::WINDOW_MS), charts::SAMPLE_CAP).await?;
        let stats = RunStats::new(&runs, now);
        rows.push((q, stats));
    }
    let chrome =
        Chrome { title: "Overview", nav: Nav::Overview, auth: st.config.token.is_some(), live_ms: 3_000 };
    let body = html! {
        h1 { "Queues" }
        div #overview data-live {
            @if rows.is_empty() {
                p.empty { "No queue yet. A queue exists from its first submit, claim or settings change." }
            } @else {
                (totals(&rows))
                div.table-wrap {
                    table.queues {
                        thead {
                            tr {
                                th { "Queue" } th { "Status" } th.num title="the concurrency limit in force" { "Limit" }
                                @for s in JobState::ALL { th.num { (s.as_str()) } }
                                th { "Runs per minute, last hour" } th { "Run time p50 / p95 / p99" }
                            }
                        }
                        tbody {
                            @for (q, stats) in &rows { (row(q, stats, now)) }
                        }
                    }
                }
                p.note {
                    "Charts read at most " (charts::SAMPLE_CAP) " finished runs per queue; a busier queue's "
                    "charts cover only the most recent part of the hour (greyed before it). "
                    a href="/metrics" { "/metrics" } " has exact totals."
                }
            }
        }
    };
    Ok(view::html_response(StatusCode::OK, view::layout(&chrome, body)))
}

fn totals(rows: &[(QueueInfo, RunStats)]) -> Markup {
    let sum = |s: JobState| rows.iter().map(|(q, _)| q.counts.get(s)).sum::<i64>();
    html! {
        ul.totals {
            @for s in [JobState::Running, JobState::Queued, JobState::Scheduled, JobState::Failed] {
                li { a href={ "/jobs?state=" (s.as_str()) } { strong data-total=(s.as_str()) { (sum(s)) } " " (s.as_str()) } }
            }
            li { a href="/ops" { "operations view →" } }
        }
    }
}

fn row(q: &QueueInfo, stats: &RunStats, now: Millis) -> Markup {
    let name = q.name.as_str();
    html! {
        tr data-queue=(name) {
            th scope="row" { a href=(queue_href(name)) { (name) } }
            td { (status(q, now)) }
            td.num { (limit_text(q)) }
            @for s in JobState::ALL {
                @let n = q.counts.get(s);
                td.num.zero[n == 0] data-state=(s.as_str()) { a href=(jobs_href(name, Some(s))) { (n) } }
            }
            td.chart {
                (charts::throughput_svg(stats))
                span.chart-caption {
                    (format!("{:.1}", stats.per_minute(now))) "/min"
                    @if stats.failures > 0 { " · " span.bad-text { (stats.failures) " failed" } }
                    @if stats.partial > 0 { " · " (stats.partial) " partial" }
                    @if stats.capped { " · sample since " (view::when(Millis(stats.covered_from), now)) }
                }
            }
            td.chart {
                (charts::runtime_svg(stats))
                span.chart-caption {
                    @match (stats.percentile(0.5), stats.percentile(0.95), stats.percentile(0.99)) {
                        (Some(a), Some(b), Some(c)) => { (duration(a)) " / " (duration(b)) " / " (duration(c)) }
                        _ => { span.muted { "no runs in the last hour" } }
                    }
                }
            }
        }
    }
}

/// Paused, held (a throttled outcome), or running.
pub fn status(q: &QueueInfo, now: Millis) -> Markup {
    html! {
        @if q.config.is_paused() {
            span.badge.paused data-paused="true" { "paused" }
        } @else if let Some(h) = q.held_until {
            span.badge.held title="a throttled outcome holds the queue" { "held " (view::when(h, now)) }
        } @else {
            span.badge.active data-paused="false" { "active" }
        }
    }
}

/// The limit in force and where it comes from.
pub fn limit_text(q: &QueueInfo) -> Markup {
    let c = &q.config;
    html! {
        @match q.limit_now {
            Some(l) => { span data-limit=(l) { (l) } }
            None => { span.muted data-limit="none" title="no concurrency limit" { "∞" } }
        }
        @if let Some(r) = &c.rate {
            br; span.muted title="rate limit" { (r.limit) " per " (duration(r.period_ms)) }
        }
        @if c.adaptive.is_some() { br; span.muted { "adaptive" } }
    }
}
