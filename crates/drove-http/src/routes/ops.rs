//! Liveness, readiness, and the operations summary.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiQuery;

#[derive(serde::Deserialize, Default)]
pub struct SummaryQuery {
    #[serde(default)]
    window: Option<String>,
}

/// How many runs succeeded (partially or not), failed (by error kind) and were cancelled in a
/// window, per queue and in total: what alerts are built on.
#[utoipa::path(get, path = "/v1/ops", operation_id = "ops_summary", tag = "operations",
    params(("window" = Option<String>, Query, pattern = r"^[0-9]{1,6}[mhd]$", description = "Nm, Nh or Nd, at most 7d (default 24h)")),
    responses((status = 200, body = crate::summary::OpsSummary),
        (status = 422, description = "A window that is not Nm, Nh or Nd up to 7 days", body = crate::wire::ErrorBodyDoc)))]
pub async fn summary(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Response, ApiError> {
    let window = q.window.filter(|w| !w.is_empty()).unwrap_or_else(|| "24h".to_owned());
    let ms = crate::summary::parse_window(&window)
        .ok_or_else(|| ApiError::invalid("window", "must be Nm, Nh or Nd, at most 7d"))?;
    let s = crate::summary::summary(&**st.engine.store(), &window, ms, drove_engine::now()).await?;
    Ok(axum::Json(s).into_response())
}

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
