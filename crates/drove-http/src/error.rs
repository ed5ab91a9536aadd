//! The one error type of the API: every failure a client can cause becomes
//! `{"error": {"code", "message", "field"?}}` with a fitting status, never a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drove_core::validation::{ValidationError, ValidationKind};
use drove_store::StoreError;
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_value",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(field: &str, limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("{field} is larger than the limit of {limit} bytes"),
            field: Some(field.to_owned()),
        }
    }

    /// The same error inside entry `i` of a list of jobs (`key` becomes `jobs[3].key`).
    pub fn within_entry(mut self, i: usize) -> ApiError {
        self.field = Some(format!("jobs[{i}].{}", self.field.as_deref().unwrap_or("body")));
        self.message = format!("jobs[{i}].{}", self.message);
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs a token: send Authorization: Bearer TOKEN",
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(v: ValidationError) -> ApiError {
        if v.kind == ValidationKind::TooLarge {
            return ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: format!("{}: {}", v.field, v.message),
                field: Some(v.field),
            };
        }
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_value",
            message: v.to_string(),
            field: Some(v.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::StaleLease => ApiError::new(
                StatusCode::CONFLICT,
                "lease_lost",
                "this lease is not the job's current lease (it expired, the job timed out, or \
                 another worker runs it now); nothing was changed",
            ),
            e @ StoreError::KeyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "key_conflict", e.to_string())
            }
            e @ StoreError::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            StoreError::Invalid(v) => v.into(),
            StoreError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", m)
            }
            StoreError::Internal(m) => {
                tracing::error!(error = %m, "store failure");
                ApiError::internal("the store failed; see the server's log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            Body { error: Inner { code: self.code, message: &self.message, field: self.field.as_deref() } };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
