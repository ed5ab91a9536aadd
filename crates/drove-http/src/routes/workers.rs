//! Remote workers: claim, heartbeat, and the end of a run, each fenced by the run's lease.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use drove_core::JobId;
use drove_core::name::{check_label, check_queue_name};
use drove_core::validation::within;
use drove_store::{ClaimRequest, Finish, Heartbeat, MAX_BATCH, Outcome};
use serde::Serialize;

use super::{Segment, job_response};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, BatchJson, OptionalBatchJson};
use crate::trace;
use crate::wire::{
    ClaimBody, CompleteBody, FailBody, FinishBody, FinishEntry, HeartbeatBody, JobOut, ReleaseBody,
    complete_outcome, fail_outcome, lease_ms,
};
use axum::http::HeaderMap;
use tracing::Instrument;

/// Lease up to `max` jobs; long-polls up to `wait_ms` when nothing may start.
#[utoipa::path(operation_id = "claim_jobs", post, path = "/v1/queues/{name}/claim", tag = "workers", params(("name" = String, Path)),
    request_body = ClaimBody,
    responses((status = 200, description = "{jobs: [job + lease + lease_expires_at]} (empty when the wait ran out)", body = crate::wire::ClaimDoc),
        (status = 422, body = crate::wire::ErrorBodyDoc)))]
pub async fn claim(
    State(st): State<AppState>,
    name: Segment,
    OptionalBatchJson(mut body): OptionalBatchJson<ClaimBody>,
) -> Result<Response, ApiError> {
    check_queue_name("name", &name.0)?;
    let worker = body.worker.clone().unwrap_or_else(|| "anonymous".into());
    check_label("worker", &worker)?;
    let max = within("max", body.max.unwrap_or(1), 1, MAX_BATCH as i64)?;
    let wait = body.wait_ms()?;
    let req = ClaimRequest { queue: name.0, worker, max, lease_ms: lease_ms(body.lease_ms)? };
    let wait = Duration::from_millis(wait as u64).min(st.config.max_wait);
    let linger = Duration::from_millis(body.linger_ms()? as u64).min(st.config.max_wait);
    // The runs this worker ended ride on its next claim: one request per cycle. They end first,
    // so the slots and capacity they free count for this claim; only a claim that is valid
    // as a whole ends any (a 422 means none of them was touched).
    let finished = match body.finish.take() {
        Some(entries) if !entries.is_empty() => Some(end_runs(&st, "finish", entries).await?),
        _ => None,
    };
    let (queue, worker) = (req.queue.clone(), req.worker.clone());
    let out = st.engine.claim_batch(req, wait, linger).await?;
    trace::claimed(&queue, &worker, &out.jobs);
    #[derive(Serialize)]
    struct Out<'a> {
        jobs: Vec<JobOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        finished: Option<Vec<Ended>>,
    }
    let jobs = out.jobs.iter().map(|c| JobOut { lease: Some(c.lease), ..JobOut::of(&c.job) }).collect();
    Ok(axum::Json(Out { jobs, finished }).into_response())
}

/// Extend the lease; store progress and a checkpoint (durable once answered).
#[utoipa::path(operation_id = "heartbeat_run", post, path = "/v1/jobs/{id}/heartbeat", tag = "workers", params(("id" = String, Path)),
    request_body = HeartbeatBody,
    responses((status = 200, body = crate::wire::HeartbeatDoc),
        (status = 409, description = "Not the job's current lease", body = crate::wire::ErrorBodyDoc)))]
pub async fn heartbeat(
    State(st): State<AppState>,
    id: Segment,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Response, ApiError> {
    let hb = Heartbeat {
        id: id.job_id()?,
        lease: body.lease.token(),
        progress: body.progress(),
        checkpoint: body.checkpoint,
        lease_ms: lease_ms(body.lease_ms)?,
    };
    if let Some(p) = &hb.progress
        && let Some(m) = &p.message
    {
        check_message("progress.message", m)?;
    }
    let ack = st.engine.heartbeat(hb).await?;
    Ok(axum::Json(ack).into_response())
}

fn check_message(field: &str, m: &str) -> Result<(), ApiError> {
    if m.len() > 1_024 {
        return Err(ApiError::invalid(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

async fn finish_one(
    st: &AppState,
    headers: &HeaderMap,
    what: &str,
    id: JobId,
    f: Finish,
) -> Result<Response, ApiError> {
    f.validate(st.engine.store().max_payload())?;
    let span = trace::finish_span(&id.to_string(), what, trace::from_headers(headers).as_ref());
    let job = st.engine.finish(vec![f]).instrument(span.clone()).await?;
    let job = job.into_iter().next().ok_or_else(|| ApiError::internal("no answer"))??;
    span.record("drove.state", job.state.as_str());
    debug_assert_eq!(job.id, id);
    Ok(job_response(axum::http::StatusCode::OK, &job, None))
}

/// Complete a run with its result.
#[utoipa::path(operation_id = "complete_run", post, path = "/v1/jobs/{id}/complete", tag = "workers", params(("id" = String, Path)),
    request_body = CompleteBody,
    responses((status = 200, body = crate::wire::JobDoc),
        (status = 409, description = "Not the job's current lease: nothing changed", body = crate::wire::ErrorBodyDoc)))]
pub async fn complete(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Segment,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Response, ApiError> {
    let id = id.job_id()?;
    let outcome = complete_outcome(body.result, body.partial, body.await_children)?;
    finish_one(&st, &headers, "complete", id, Finish { id, lease: body.lease.token(), outcome }).await
}

/// Fail a run: retryable (default), transient, permanent, throttled or snooze.
#[utoipa::path(operation_id = "fail_run", post, path = "/v1/jobs/{id}/fail", tag = "workers", params(("id" = String, Path)),
    request_body = FailBody,
    responses((status = 200, body = crate::wire::JobDoc),
        (status = 409, description = "Not the job's current lease: nothing changed", body = crate::wire::ErrorBodyDoc)))]
pub async fn fail(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Segment,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<Response, ApiError> {
    let id = id.job_id()?;
    let outcome = fail_outcome(body.error, body.retry_after_ms);
    finish_one(&st, &headers, "fail", id, Finish { id, lease: body.lease.token(), outcome }).await
}

/// Hand a run back unrun: queued again at once, no attempt used, checkpoint kept.
#[utoipa::path(operation_id = "release_run", post, path = "/v1/jobs/{id}/release", tag = "workers", params(("id" = String, Path)),
    request_body = ReleaseBody,
    responses((status = 200, body = crate::wire::JobDoc),
        (status = 409, description = "Not the job's current lease: nothing changed", body = crate::wire::ErrorBodyDoc)))]
pub async fn release(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Segment,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<Response, ApiError> {
    let id = id.job_id()?;
    finish_one(
        &st,
        &headers,
        "release",
        id,
        Finish { id, lease: body.lease.token(), outcome: Outcome::Release },
    )
    .await
}

/// `POST /v1/jobs/finish` as read: its entries are parsed one by one (see [`FinishBody`] for
/// their shape).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFinishBody {
    jobs: Vec<Box<serde_json::value::RawValue>>,
}

/// The id of an entry that could not be read whole.
#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: serde_json::Value,
}

impl IdOnly {
    /// The entry's id as the client wrote it (a string or a number), to name it in the answer.
    fn text(self) -> String {
        match self.id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        }
    }
}

/// End many runs in one request (an addition for fast workers); each entry stands alone.
#[utoipa::path(operation_id = "finish_runs", post, path = "/v1/jobs/finish", tag = "workers", request_body = FinishBody,
    responses((status = 200, description = "{jobs: [{id, state} | {id, error}]} in order", body = crate::wire::FinishListDoc)))]
pub async fn finish_many(
    State(st): State<AppState>,
    BatchJson(body): BatchJson<RawFinishBody>,
) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Out {
        jobs: Vec<Ended>,
    }
    Ok(axum::Json(Out { jobs: end_runs(&st, "jobs", body.jobs).await? }).into_response())
}

/// One entry of a finish answer: the job's new state, or why this entry was refused.
#[derive(Serialize)]
pub struct Ended {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<drove_core::JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<EndedError>,
}

#[derive(Serialize)]
struct EndedError {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// Ends runs (the entries of `POST /v1/jobs/finish`, or the `finish` of a claim), each on its
/// own: an entry that cannot be read, or whose lease is stale, is refused alone.
/// `field` names the list in errors (`jobs`, or a claim's `finish`).
async fn end_runs(
    st: &AppState,
    field: &str,
    raw: Vec<Box<serde_json::value::RawValue>>,
) -> Result<Vec<Ended>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_BATCH {
        return Err(ApiError::invalid(field, format!("must hold 1 to {MAX_BATCH} entries")));
    }
    let max_payload = st.engine.store().max_payload();
    let mut ids = Vec::with_capacity(raw.len());
    let mut entries: Vec<Option<Ended>> = Vec::with_capacity(raw.len());
    let mut finishes = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        // Each entry is read on its own: one that cannot be read (an unknown error kind, a
        // missing lease) is refused alone, like one with a stale lease.
        let parsed = crate::extract::parse_json::<FinishEntry>(raw.get().as_bytes()).map_err(|mut e| {
            e.field = Some(format!("{field}[{i}].{}", e.field.as_deref().unwrap_or("body")));
            e.message = format!("{field}[{i}]: {}", e.message);
            e
        });
        let id_text = match &parsed {
            Ok(e) => e.id.clone(),
            Err(_) => serde_json::from_str::<IdOnly>(raw.get()).map(IdOnly::text).unwrap_or_default(),
        };
        match parsed
            .and_then(FinishEntry::into_finish)
            .and_then(|f| f.validate(max_payload).map(|()| f).map_err(ApiError::from))
        {
            Ok(f) => {
                ids.push(id_text);
                entries.push(None);
                finishes.push(f);
            }
            Err(err) => entries.push(Some(Ended {
                id: id_text,
                state: None,
                error: Some(EndedError { code: err.code, message: err.message, field: err.field }),
            })),
        }
    }
    let results = if finishes.is_empty() {
        Vec::new()
    } else {
        let span = trace::finish_batch_span(finishes.len());
        st.engine.finish(finishes).instrument(span).await?
    };
    let mut results = ids.into_iter().zip(results);
    Ok(entries
        .into_iter()
        .map(|slot| match slot {
            Some(done) => done,
            None => {
                let (id, r) = results.next().expect("one result per finish");
                match r {
                    Ok(job) => Ended { id, state: Some(job.state), error: None },
                    Err(e) => {
                        let e: ApiError = e.into();
                        Ended {
                            id,
                            state: None,
                            error: Some(EndedError { code: e.code, message: e.message, field: e.field }),
                        }
                    }
                }
            }
        })
        .collect())
}
