//! The v1 endpoints, one module per resource.

pub mod jobs;
pub mod ops;
pub mod queues;
pub mod schedules;
pub mod workers;

use std::time::Duration;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drove_core::duration::{WaitError, parse_wait};
use drove_core::{Job, JobId};
use serde::Deserialize;

use crate::error::ApiError;
use crate::wire::JobOut;

/// A path segment (`{id}`, `{name}`), with undecodable text answered as 404.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Segment(s))
            .map_err(|_| ApiError::not_found("no such resource"))
    }
}

impl Segment {
    /// The job id in the path; text that is not an id we issued is an unknown job.
    pub fn job_id(&self) -> Result<JobId, ApiError> {
        self.0.parse().map_err(|_| ApiError::not_found(format!("job {} not found", self.0)))
    }
}

/// `?wait=DURATION`
#[derive(Debug, Deserialize, Default)]
pub struct WaitQuery {
    #[serde(default)]
    pub wait: Option<String>,
}

impl WaitQuery {
    /// The wait asked for; `?wait=0` is no wait at all (docs/API.md "Long polls"), the same as none.
    pub fn duration(&self) -> Result<Option<Duration>, ApiError> {
        let wait = self
            .wait
            .as_deref()
            .map(|w| {
                parse_wait(w).map_err(|e| match e {
                    WaitError::Malformed => ApiError::malformed(format!("wait: {e}")),
                    WaitError::TooLong => ApiError::invalid("wait", e),
                })
            })
            .transpose()?;
        Ok(wait.filter(|w| !w.is_zero()))
    }
}

/// A job response with a status.
pub fn job_response(status: StatusCode, job: &Job, deduplicated: Option<bool>) -> Response {
    (status, axum::Json(JobOut { deduplicated, ..JobOut::of(job) })).into_response()
}

/// 202: the wait ran out before the job finished.
pub fn still_running(job: &Job, deduplicated: Option<bool>) -> Response {
    let mut resp = job_response(StatusCode::ACCEPTED, job, deduplicated);
    let headers = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        headers.insert(header::LOCATION, loc);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
