//! Drove's HTTP API (docs/API.md "HTTP endpoints"), its OpenAPI document, `/metrics`, and the dashboard.
//!
//! Key decision: hostile input never reaches a 500. Every extractor answers in the API's own
//! error format (400 malformed, 404 unknown, 413 too large, 422 invalid naming the field), a
//! catch-panic layer turns any bug into a logged 500 without taking the server down, and
//! routes and the OpenAPI document are built from the same `utoipa` annotations so they
//! cannot drift apart. This crate must not know which store backs the engine.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod summary;
pub mod tls;
mod trace;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use drove_engine::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::HostPolicy;
pub use error::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// When set, every endpoint but /healthz and /readyz needs `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Largest request body of single-job endpoints, in bytes.
    pub max_body: usize,
    /// Largest body of the batch endpoints.
    pub max_batch_body: usize,
    /// Which `Host` headers a server without a token answers (DNS rebinding).
    pub hosts: HostPolicy,
    /// The longest any long poll is held (`?wait=`, a claim's `wait_ms`; default 60 s, the
    /// API's maximum). Lower it behind a proxy that cuts idle requests sooner: longer waits are
    /// answered when this runs out, as when the asked wait runs out (202, an empty claim).
    pub max_wait: std::time::Duration,
    /// A request body that sends nothing for this long is cut off (408), so a client that
    /// trickles a body cannot hold a connection for ever (default 30 s).
    pub body_stall: std::time::Duration,
}

impl HttpConfig {
    /// Body limits derived from the store's payload limit.
    pub fn for_payload(max_payload: usize) -> HttpConfig {
        HttpConfig {
            token: None,
            max_body: max_payload + (64 << 10),
            max_batch_body: (max_payload + (64 << 10)).max(32 << 20),
            hosts: HostPolicy::default(),
            max_wait: std::time::Duration::from_secs(60),
            body_stall: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<HttpConfig>,
    /// Renders `/metrics` (`None`: the process's recorder, installed on first scrape).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    pub fn new(engine: Engine, config: HttpConfig) -> AppState {
        AppState { engine, config: Arc::new(config), metrics: Some(metrics::install()) }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Drove", description = "Durable jobs over HTTP: submit and await jobs, run remote workers, inspect queues. The contract is docs/API.md in Drove's repository."),
    tags((name = "jobs"), (name = "queues"), (name = "workers"), (name = "schedules"), (name = "operations"))
)]
struct ApiDoc;

/// The routes of the API and the OpenAPI document describing exactly them.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::jobs::submit, routes::jobs::list))
        .routes(routes!(routes::jobs::batch))
        .routes(routes!(routes::workers::finish_many))
        .routes(routes!(routes::jobs::get))
        .routes(routes!(routes::jobs::cancel))
        .routes(routes!(routes::jobs::retry))
        .routes(routes!(routes::workers::heartbeat))
        .routes(routes!(routes::workers::complete))
        .routes(routes!(routes::workers::fail))
        .routes(routes!(routes::workers::release))
        .routes(routes!(routes::queues::list))
        .routes(routes!(routes::queues::get, routes::queues::put))
        .routes(routes!(routes::workers::claim))
        .routes(routes!(routes::queues::put_pool, routes::queues::get_pool))
        .routes(routes!(routes::schedules::list))
        .routes(routes!(
            routes::schedules::get,
            routes::schedules::put,
            routes::schedules::patch,
            routes::schedules::delete
        ))
        .routes(routes!(routes::schedules::run))
        .routes(routes!(routes::ops::summary))
        .routes(routes!(routes::ops::healthz))
        .routes(routes!(routes::ops::readyz))
        .split_for_parts()
}

/// The OpenAPI document (also served at `/v1/openapi.json`).
pub fn openapi() -> serde_json::Value {
    openapi::complete(serde_json::to_value(api().1).unwrap_or_default())
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    let (routes, doc) = api();
    let doc = openapi::complete(serde_json::to_value(doc).unwrap_or_default());
    let doc = Arc::new(doc.to_string());
    routes
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .route("/metrics", axum::routing::get(metrics::render))
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::auth))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked; answered 500");
            ApiError::internal("the server hit a bug answering this request; it is logged").into_response()
        }))
        .with_state(state)
}
