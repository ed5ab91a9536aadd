//! The web dashboard served at `/` (issue 6): queues, jobs, progress bars and failures.
//!
//! Key decisions:
//! - **Server-rendered HTML** (maud: templates are Rust code, compiled with the crate, escaping
//!   by default). Every page's data is in the HTML the server returns: it works with
//!   JavaScript off and `curl` sees it. The CSS and one small script are embedded in the binary.
//! - **Reads only what the API reads** (`Store` methods the /v1 routes use: `list_queues`,
//!   `get_queue`, `list_jobs` with the API's cursors, `get_job`, `recent_runs`), and changes
//!   state only through the calls the API makes (`put_queue` after `QueuePatch::validate`,
//!   `cancel`, `retry`). Nothing is kept in the node, so every node shows the same picture.
//! - **Live updates by short polling**: `live.js` re-fetches the page every 1 to 5 s while the
//!   tab is visible and swaps the regions marked `data-live`. Chosen over a server-sent event
//!   stream because it needs no long-lived connection (HTTP/1.1 browsers allow six per host; a
//!   few open tabs would exhaust them, and graceful shutdown would wait on them), it sees
//!   changes the hub does not publish (settings, limits, pruning, other nodes' writes on any
//!   backend), and its failure mode is simply a later refresh. Every read is bounded, so the
//!   cost per refresh is bounded too.
//! - **Security** (see `crate::auth`): a login cookie when a token is configured, cross-origin
//!   state-changing requests refused, a strict Content-Security-Policy (no inline script can
//!   run) on every page.

mod charts;
mod job;
mod jobs;
mod login;
mod ops;
mod overview;
mod queue;
mod schedules;
pub(crate) mod view;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/live.js");

/// The dashboard's routes, merged into the application by `crate::app`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/queues", get(|| async { view::see_other("/") }))
        .route("/queues/{name}", get(queue::page))
        .route("/queues/{name}/settings", post(queue::settings))
        .route("/queues/{name}/pause", post(queue::pause))
        .route("/queues/{name}/resume", post(queue::resume))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/cancel", post(job::cancel))
        .route("/jobs/{id}/retry", post(job::retry))
        .route("/ops", get(ops::page))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/schedules/{name}/run", post(schedules::run))
        .route("/login", get(login::login_form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/assets/live.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Short: a new binary's assets are picked up within minutes without versioned names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}
