//! Extractors that answer bad input in the API's own error format: a JSON body (read whole,
//! with a limit, drained past it so the client sees the 413), and query strings.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// How much of an over-limit body is read and thrown away so that the client sees the 413
/// instead of a reset connection; past this the connection is simply closed.
const DRAIN_MAX: usize = 64 << 20;

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize, content_length: Option<usize>) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > limit + DRAIN_MAX) {
        return Err(ApiError::too_large("body", limit));
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut over = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::malformed(format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if over > 0 || buf.len() + data.len() > limit {
            over += data.len();
            buf.clear();
            if over > DRAIN_MAX {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if over > 0 {
        return Err(ApiError::too_large("body", limit));
    }
    Ok(buf.freeze())
}

fn content_length(parts: &Parts) -> Option<usize> {
    parts.headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Parses JSON, telling malformed JSON (400) from valid JSON with wrong values (422, naming
/// the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("the body must be a JSON object"));
    }
    // Syntax first: a body that is not JSON at all is a 400 even when its first bytes already
    // break the expected shape.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::malformed(format!("malformed JSON: {e}")))?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let msg = inner.to_string();
                let field =
                    if path == "." { quoted_name(&msg).unwrap_or_else(|| "body".into()) } else { path };
                ApiError::invalid(field, strip_position(&msg))
            }
            _ => ApiError::malformed(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::malformed(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The field named in serde's "missing field `x`" or "unknown field `x`".
fn quoted_name(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A JSON body of at most the server's request limit.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, state.config.max_body, content_length(&parts)).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent (an empty body reads as `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default + Send> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, state.config.max_body, content_length(&parts)).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A JSON body for the batch endpoint, which has its own, larger limit.
pub struct BatchJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for BatchJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, state.config.max_batch_body, content_length(&parts)).await?;
        parse_json(&bytes).map(BatchJson)
    }
}

/// A query string: unparseable is a 400, a wrong value a 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let field = if path == "." { quoted_name(&msg).unwrap_or_else(|| "query".into()) } else { path };
            ApiError::malformed(format!("query parameter {field}: {msg}"))
        })
    }
}
