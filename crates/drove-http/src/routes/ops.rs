//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// The process answers (never needs the token).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// The store answers (never needs the token).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The store answers"), (status = 503, description = "The store is unreachable")))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st.engine.store().ping().await {
        Ok(()) => {
            axum::Json(json!({ "status": "ready", "store": st.engine.store().backend() })).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": { "code": "store_unavailable", "message": e.to_string() } })),
        )
            .into_response(),
    }
}
