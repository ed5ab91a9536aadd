//! Submitting and reading jobs.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use drove_core::{JobId, JobState};
use drove_store::{JobFilter, MAX_SUBMIT_BATCH};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{Segment, WaitQuery, job_response, still_running};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, BatchJson};
use crate::trace;
use crate::wire::{BatchBody, JobOut, SubmitBody};

/// Submit a job; with `?wait=` hold the answer until it is terminal.
#[utoipa::path(operation_id = "submit_job", post, path = "/v1/jobs", tag = "jobs", request_body = SubmitBody,
    params(("wait" = Option<String>, Query, pattern = r"^[0-9]{1,5}(ms|s|m)?$", description = "N, Nms, Ns or Nm (at most 60 s; 0: no wait): answer once the job is terminal or the time is up")),
    responses(
        (status = 201, description = "Created (and, with wait, finished)", body = crate::wire::JobDoc),
        (status = 200, description = "Joined or reused an existing job (deduplicated)", body = crate::wire::JobDoc),
        (status = 202, description = "The wait ran out; Location names the job", body = crate::wire::JobDoc),
        (status = 409, description = "on_conflict reject: the key is held", body = crate::wire::ErrorBodyDoc),
        (status = 413, description = "Payload too large", body = crate::wire::ErrorBodyDoc),
        (status = 422, description = "Invalid value", body = crate::wire::ErrorBodyDoc)))]
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<Response, ApiError> {
    let wait = q.duration()?.map(|w| w.min(st.config.max_wait));
    let mut job = body.into_new_job(drove_engine::now())?;
    let given = job.trace.take().or_else(|| trace::from_headers(&headers));
    let span = trace::submit_span(&job.queue, 1, given.as_ref());
    // The job's runs descend from the submit span when it is exported, else from the caller.
    job.trace = drove_trace::context_of(&span).or(given);
    let sub = st.engine.submit(vec![job]).instrument(span.clone()).await?;
    let sub = sub.into_iter().next().ok_or_else(|| ApiError::internal("no answer"))?;
    span.record("drove.job.id", sub.job.id.to_string()).record("drove.deduplicated", !sub.created);
    drop(span);
    let dedup = Some(!sub.created);
    let status = if sub.created { StatusCode::CREATED } else { StatusCode::OK };
    if sub.refresh.is_some() {
        // A stale success, answered at once while its refresh runs.
        return Ok((status, axum::Json(JobOut::submitted(&sub))).into_response());
    }
    let Some(wait) = wait.filter(|_| !sub.job.state.is_terminal()) else {
        return Ok(job_response(status, &sub.job, dedup));
    };
    match st.engine.wait_job(sub.job.id, wait).await? {
        Some(done) if done.state.is_terminal() => Ok(job_response(status, &done, dedup)),
        Some(current) => Ok(still_running(&current, dedup)),
        None => Ok(still_running(&sub.job, dedup)), // pruned meanwhile: answer what we knew
    }
}

/// Submit up to 1,000 jobs at once; one invalid entry rejects the whole batch.
#[utoipa::path(operation_id = "submit_batch", post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchBody,
    responses((status = 200, description = "The jobs, in order", body = crate::wire::BatchDoc),
        (status = 422, description = "An entry is invalid (the field names its index)", body = crate::wire::ErrorBodyDoc)))]
pub async fn batch(
    State(st): State<AppState>,
    headers: HeaderMap,
    BatchJson(body): BatchJson<BatchBody>,
) -> Result<Response, ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_SUBMIT_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("must hold 1 to {MAX_SUBMIT_BATCH} jobs, got {}", body.jobs.len()),
        ));
    }
    let now = drove_engine::now();
    let mut jobs = Vec::with_capacity(body.jobs.len());
    for (i, entry) in body.jobs.into_iter().enumerate() {
        jobs.push(entry.into_new_job(now).map_err(|e| e.within_entry(i))?);
    }
    let one = jobs.len() == 1;
    let given = trace::from_headers(&headers);
    let span = trace::submit_span(&jobs[0].queue, jobs.len(), given.as_ref());
    // An entry's own traceparent wins; the others descend from the request's.
    if let Some(tc) = drove_trace::context_of(&span).or(given) {
        for job in jobs.iter_mut().filter(|j| j.trace.is_none()) {
            job.trace = Some(tc.clone());
        }
    }
    // The store names a batch's entries (`jobs[3].key`), except the one entry of a batch of one.
    let subs = st.engine.submit(jobs).instrument(span).await.map_err(|e| {
        let e = ApiError::from(e);
        if one && e.field.as_deref().is_some_and(|f| !f.starts_with("jobs[")) { e.within_entry(0) } else { e }
    })?;
    #[derive(Serialize)]
    struct Out<'a> {
        jobs: Vec<JobOut<'a>>,
    }
    let out = Out { jobs: subs.iter().map(JobOut::submitted).collect() };
    Ok(axum::Json(out).into_response())
}

/// Read a job; with `?wait=` hold the answer until it is terminal.
#[utoipa::path(operation_id = "get_job", get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path), ("wait" = Option<String>, Query, pattern = r"^[0-9]{1,5}(ms|s|m)?$", description = "N, Nms, Ns or Nm (at most 60 s; 0: no wait)")),
    responses((status = 200, description = "The job (terminal, or no wait asked)", body = crate::wire::JobDoc),
        (status = 202, description = "The wait ran out", body = crate::wire::JobDoc),
        (status = 404, description = "Unknown job", body = crate::wire::ErrorBodyDoc)))]
pub async fn get(
    State(st): State<AppState>,
    id: Segment,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = id.job_id()?;
    let wait = q.duration()?.map(|w| w.min(st.config.max_wait));
    let job = st
        .engine
        .wait_job(id, wait.unwrap_or_default())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    if wait.is_some() && !job.state.is_terminal() {
        return Ok(still_running(&job, None));
    }
    Ok(job_response(StatusCode::OK, &job, None))
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    queue: Option<String>,
    state: Option<String>,
    key: Option<String>,
    group: Option<String>,
    partial: Option<String>,
    parent: Option<String>,
    operations: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Cursors are opaque to clients: the last id of the page, in hex behind a version tag.
pub fn encode_cursor(id: JobId) -> String {
    format!("c1{:x}", id.0)
}

pub fn decode_cursor(text: &str) -> Option<JobId> {
    let hex = text.strip_prefix("c1")?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    i64::from_str_radix(hex, 16).ok().filter(|v| *v > 0).map(JobId)
}

/// List jobs, newest first, with filters and cursor paging.
#[utoipa::path(operation_id = "list_jobs", get, path = "/v1/jobs", tag = "jobs",
    params(("queue" = Option<String>, Query), ("state" = Option<String>, Query), ("key" = Option<String>, Query),
        ("group" = Option<String>, Query),
        ("partial" = Option<bool>, Query, description = "true: only partial successes; false: only full ones (both imply state succeeded)"),
        ("limit" = Option<i64>, Query, description = "1 to 1,000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "A page of jobs", body = crate::wire::JobListDoc),
        (status = 400, description = "Unreadable cursor", body = crate::wire::ErrorBodyDoc)))]
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => {
            let n: i64 = text.parse().map_err(|_| ApiError::malformed("limit: must be a whole number"))?;
            drove_core::validation::within("limit", n, 1, 1_000)?
        }
    };
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<JobState>().map_err(|_| {
            ApiError::invalid(
                "state",
                "must be waiting, scheduled, queued, running, succeeded, failed or cancelled",
            )
        })?),
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::malformed("cursor: unreadable"))?),
    };
    let partial = match q.partial.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid("partial", "must be true or false")),
    };
    let parent = match q.parent.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(text.parse::<JobId>().map_err(|_| ApiError::invalid("parent", "must be a job id"))?)
        }
    };
    let operations = match q.operations.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("operations", "must be true or false")),
    };
    let empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = JobFilter {
        queue: empty(q.queue),
        state,
        key: empty(q.key),
        group: empty(q.group),
        partial,
        parent,
        operations,
    };
    let page = st.engine.store().list_jobs(filter, limit as usize, before).await?;
    #[derive(Serialize)]
    struct Out<'a> {
        jobs: Vec<JobOut<'a>>,
        next_cursor: Option<String>,
    }
    let out = Out {
        jobs: page.jobs.iter().map(JobOut::of).collect(),
        next_cursor: page.next_before.map(encode_cursor),
    };
    Ok(axum::Json(out).into_response())
}

/// Cancel a job: scheduled or queued at once; running: cancel_requested.
#[utoipa::path(operation_id = "cancel_job", post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = crate::wire::JobDoc), (status = 404, body = crate::wire::ErrorBodyDoc),
        (status = 409, description = "Already terminal", body = crate::wire::ErrorBodyDoc)))]
pub async fn cancel(State(st): State<AppState>, id: Segment) -> Result<Response, ApiError> {
    let job = st.engine.cancel(id.job_id()?).await?;
    Ok(job_response(StatusCode::OK, &job, None))
}

/// Queue a failed or cancelled job again with attempt 0.
#[utoipa::path(operation_id = "retry_job", post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = crate::wire::JobDoc), (status = 404, body = crate::wire::ErrorBodyDoc),
        (status = 409, description = "Not failed or cancelled, or its key is held", body = crate::wire::ErrorBodyDoc)))]
pub async fn retry(State(st): State<AppState>, id: Segment) -> Result<Response, ApiError> {
    let job = st.engine.retry(id.job_id()?).await?;
    Ok(job_response(StatusCode::OK, &job, None))
}
