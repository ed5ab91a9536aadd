//! Schedules: recurring jobs, one per tick across the fleet (drove_store::schedules).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drove_core::name::check_queue_name;
use drove_store::schedules::ScheduleSpec;
use serde::Serialize;
use utoipa::ToSchema;

use super::Segment;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, parse_json};
use crate::wire::JobOut;

/// A schedule's settings (`PUT /v1/schedules/{name}`; `PATCH` takes any of them).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ScheduleBodyDoc {
    /// A cron pattern: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds
    /// first; nicknames `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; or `@every N`
    /// with a unit (`ms`, `s`, `m`, `h`, `d`), at least 1 s.
    #[schema(min_length = 1, max_length = 256)]
    pub cron: String,
    /// An IANA time zone (`Europe/Berlin`); default UTC.
    pub timezone: Option<String>,
    /// The queue each tick's job goes to.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    pub queue: String,
    /// The job's payload (default null).
    #[schema(value_type = Option<Value>)]
    pub payload: Option<serde_json::Value>,
    /// The `kind` of each tick's job, as in `POST /v1/jobs` (default none).
    pub kind: Option<String>,
    /// A key for each tick's job: a tick whose key is still held joins the live job.
    pub key: Option<String>,
    /// The `group` of each tick's job, as in `POST /v1/jobs` (default none).
    pub group: Option<String>,
    /// The `priority` of each tick's job; higher runs first (default 0).
    pub priority: Option<i64>,
    /// Attempts of each tick's job (1 to 10^9; default the queue's, else 20).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_attempts: Option<i64>,
    /// Run time limit, in ms, of each tick's job (1 to 10 years; default the queue's, else none).
    #[schema(minimum = 1, maximum = 315_360_000_000_i64)]
    pub timeout_ms: Option<i64>,
    /// Missed ticks (the server was down): `none` skips them, `last` (default) runs the newest
    /// once, `all` runs each (the newest 100).
    #[schema(value_type = Option<String>, pattern = "^(none|last|all)$")]
    pub catch_up: Option<String>,
    /// A paused schedule enqueues nothing; resuming skips the ticks missed meanwhile.
    pub paused: Option<bool>,
}

/// A schedule, as stored.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ScheduleDoc {
    /// The schedule's name.
    pub name: String,
    /// The cron pattern, nickname or `@every` interval its ticks follow.
    pub cron: String,
    /// The IANA time zone the pattern is read in; present only when set (default UTC).
    pub timezone: Option<String>,
    /// The queue each tick's job goes to.
    pub queue: String,
    /// Each tick's job's payload (any JSON).
    #[schema(value_type = Value)]
    pub payload: serde_json::Value,
    /// The `kind` of each tick's job; present only when set.
    pub kind: Option<String>,
    /// The `key` of each tick's job; present only when set.
    pub key: Option<String>,
    /// The `group` of each tick's job; present only when set.
    pub group: Option<String>,
    /// The `priority` of each tick's job.
    pub priority: i64,
    /// Attempts of each tick's job; present only when set (else the queue's, else 20).
    pub max_attempts: Option<i64>,
    /// Run time limit, in ms, of each tick's job; present only when set.
    pub timeout_ms: Option<i64>,
    /// Which missed ticks run: `none`, `last` or `all`.
    pub catch_up: String,
    /// A paused schedule enqueues nothing.
    pub paused: bool,
    /// The next tick to enqueue (null: the pattern has no more).
    #[schema(format = DateTime)]
    pub next_at: Option<String>,
    /// The last tick a job was enqueued for.
    #[schema(format = DateTime)]
    pub last_tick_at: Option<String>,
    /// The last job it enqueued (a tick or "run now"), and that job's state while it is kept.
    pub last_job: Option<String>,
    /// The state of `last_job` while that job is kept, else null.
    pub last_job_state: Option<String>,
    /// When the schedule was created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the schedule was last written (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ScheduleListDoc {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleDoc>,
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!("schedule {name} not found"))
}

/// A name no schedule can have is simply not found (as for queues and pools): reads, deletes
/// and "run now" answer 404 for it, and only a PUT, which would create it, answers 422.
fn existing(name: &str) -> Result<(), ApiError> {
    check_queue_name("name", name).map_err(|_| missing(name))
}

/// Every schedule, by name.
#[utoipa::path(operation_id = "list_schedules", get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleListDoc)))]
pub async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Out {
        schedules: Vec<drove_store::schedules::ScheduleInfo>,
    }
    Ok(axum::Json(Out { schedules: st.engine.store().list_schedules().await? }).into_response())
}

/// One schedule.
#[utoipa::path(operation_id = "get_schedule", get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleDoc), (status = 404, body = crate::wire::ErrorBodyDoc)))]
pub async fn get(State(st): State<AppState>, name: Segment) -> Result<Response, ApiError> {
    existing(&name.0)?;
    let s = st.engine.store().get_schedule(&name.0).await?.ok_or_else(|| missing(&name.0))?;
    Ok(axum::Json(s).into_response())
}

/// Create or replace a schedule (201 when created). Its next tick is the first after now; an
/// edit that keeps its pattern and time zone keeps its next tick.
#[utoipa::path(operation_id = "put_schedule", put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)), request_body = ScheduleBodyDoc,
    responses((status = 200, description = "Replaced", body = ScheduleDoc), (status = 201, description = "Created", body = ScheduleDoc),
        (status = 422, body = crate::wire::ErrorBodyDoc)))]
pub async fn put(
    State(st): State<AppState>,
    name: Segment,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> Result<Response, ApiError> {
    check_queue_name("name", &name.0)?;
    let (info, created) = st.engine.put_schedule(&name.0, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(info)).into_response())
}

/// Change some of a schedule's settings (a JSON merge patch: `{"paused": true}` pauses it).
#[utoipa::path(operation_id = "patch_schedule", patch, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    request_body(content = ScheduleBodyDoc, description = "Any of the settings; null clears an optional one"),
    responses((status = 200, body = ScheduleDoc), (status = 404, body = crate::wire::ErrorBodyDoc),
        (status = 422, body = crate::wire::ErrorBodyDoc)))]
pub async fn patch(
    State(st): State<AppState>,
    name: Segment,
    ApiJson(patch): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    existing(&name.0)?;
    let old = st.engine.store().get_schedule(&name.0).await?.ok_or_else(|| missing(&name.0))?;
    let mut merged = match serde_json::to_value(&old.spec) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(ApiError::internal("a stored schedule did not serialize")),
    };
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let text = serde_json::Value::Object(merged).to_string();
    let spec: ScheduleSpec = parse_json(text.as_bytes())?;
    let (info, _) = st.engine.put_schedule(&name.0, spec).await?;
    Ok(axum::Json(info).into_response())
}

/// Delete a schedule; the jobs it enqueued stay.
#[utoipa::path(operation_id = "delete_schedule", delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::wire::ErrorBodyDoc)))]
pub async fn delete(State(st): State<AppState>, name: Segment) -> Result<Response, ApiError> {
    existing(&name.0)?;
    if st.engine.delete_schedule(&name.0).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(missing(&name.0))
    }
}

/// Enqueue the schedule's job now ("run now"); its ticks are unchanged. Answers the job (a key
/// still held answers the live job, 200).
#[utoipa::path(operation_id = "run_schedule", post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 201, description = "Created", body = crate::wire::JobDoc),
        (status = 200, description = "Joined the live job of its key", body = crate::wire::JobDoc),
        (status = 404, body = crate::wire::ErrorBodyDoc)))]
pub async fn run(State(st): State<AppState>, name: Segment) -> Result<Response, ApiError> {
    existing(&name.0)?;
    let sub = st.engine.run_schedule(&name.0).await?;
    let status = if sub.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(JobOut::submitted(&sub))).into_response())
}
