//! Queues and pools: counts, settings, and the limit in force.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use drove_core::name::check_queue_name;
use drove_core::queue::{PoolPatch, QueuePatch};
use serde::Serialize;

use super::Segment;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::OptionalJson;

/// Every queue with its settings, counts and limit in force.
#[utoipa::path(operation_id = "list_queues", get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = crate::wire::QueueListDoc)))]
pub async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Out {
        queues: Vec<drove_store::QueueInfo>,
    }
    let queues = st.engine.store().list_queues(drove_engine::now()).await?;
    Ok(axum::Json(Out { queues }).into_response())
}

/// One queue (404 for a name never used).
#[utoipa::path(operation_id = "get_queue", get, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, body = crate::wire::QueueDoc), (status = 404, body = crate::wire::ErrorBodyDoc)))]
pub async fn get(State(st): State<AppState>, name: Segment) -> Result<Response, ApiError> {
    let q = st
        .engine
        .store()
        .get_queue(&name.0, drove_engine::now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("queue {} not found", name.0)))?;
    Ok(axum::Json(q).into_response())
}

/// Change a queue's settings (all optional; `null` clears one). Applies to every node at once.
#[utoipa::path(operation_id = "put_queue", put, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path)),
    request_body(content = crate::wire::QueueSettingsDoc, description = "Every field optional: absent keeps a setting, null clears it"),
    responses((status = 200, body = crate::wire::QueueDoc), (status = 422, body = crate::wire::ErrorBodyDoc)))]
pub async fn put(
    State(st): State<AppState>,
    name: Segment,
    OptionalJson(patch): OptionalJson<QueuePatch>,
) -> Result<Response, ApiError> {
    check_queue_name("name", &name.0)?;
    patch.validate()?;
    let q = st.engine.put_queue(&name.0, patch).await?;
    Ok(axum::Json(q).into_response())
}

/// Change a pool's settings: its concurrency and adaptive limit are shared by its queues.
#[utoipa::path(operation_id = "put_pool", put, path = "/v1/pools/{name}", tag = "queues", params(("name" = String, Path)),
    request_body(content = crate::wire::PoolSettingsDoc, description = "Every field optional: absent keeps a setting, null clears it"),
    responses((status = 200, body = crate::wire::PoolDoc), (status = 422, body = crate::wire::ErrorBodyDoc)))]
pub async fn put_pool(
    State(st): State<AppState>,
    name: Segment,
    OptionalJson(patch): OptionalJson<PoolPatch>,
) -> Result<Response, ApiError> {
    check_queue_name("name", &name.0)?;
    patch.validate()?;
    let p = st.engine.put_pool(&name.0, patch).await?;
    Ok(axum::Json(p).into_response())
}

/// One pool (an addition).
#[utoipa::path(operation_id = "get_pool", get, path = "/v1/pools/{name}", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, body = crate::wire::PoolDoc), (status = 404, body = crate::wire::ErrorBodyDoc)))]
pub async fn get_pool(State(st): State<AppState>, name: Segment) -> Result<Response, ApiError> {
    let p = st
        .engine
        .store()
        .get_pool(&name.0)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pool {} not found", name.0)))?;
    Ok(axum::Json(p).into_response())
}
