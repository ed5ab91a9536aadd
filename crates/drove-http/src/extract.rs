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

/// The whole body must arrive within this long (and no gap between two of its chunks may be
/// longer than `HttpConfig::body_stall`), so a client that trickles a body (slowloris) cannot
/// hold a connection and a task for ever.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

fn body_timeout(stall: std::time::Duration) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body stalled for {} ms or took over {} s",
            stall.as_millis(),
            BODY_DEADLINE.as_secs()
        ),
    )
}

/// Reads a whole body of at most `limit` bytes, cut off when it stalls for `stall`.
pub async fn read_body(
    body: Body,
    limit: usize,
    content_length: Option<usize>,
    stall: std::time::Duration,
) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > limit + DRAIN_MAX) {
        return Err(ApiError::too_large("body", limit));
    }
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut over = 0usize;
    loop {
        let stalled = tokio::time::Instant::now() + stall;
        let frame = match tokio::time::timeout_at(stalled.min(deadline), body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(body_timeout(stall)),
        };
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

/// A body's `Content-Type` must say JSON (`application/json`, `*/*+json`), or be one of the two
/// defaults that common clients send with JSON text (`application/x-www-form-urlencoded`, curl's
/// `-d`; `text/plain`, fetch's for a string body), or be absent. Anything else (multipart
/// forms, XML, octets) is refused with 415 rather than read as JSON by accident.
pub fn check_content_type(parts: &Parts) -> Result<(), ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::CONTENT_TYPE) else { return Ok(()) };
    let text = value.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = text.split(';').next().unwrap_or("").trim();
    let json =
        essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json || matches!(essence, "text/json" | "application/x-www-form-urlencoded" | "text/plain") {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "the body must be JSON (Content-Type: application/json), not {}",
            if essence.is_empty() { "an empty type" } else { essence }
        ),
    ))
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
    objects_are_objects(bytes)?;
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

/// Every request body of the API is an object, and so is every structured field in one (`rate`,
/// `error`, `progress`, each entry of `jobs` or `finish`); arrays appear only as those two
/// lists and inside the fields that hold any JSON (`payload`, `result`, `checkpoint`). serde fills a struct from an
/// array too (`[5, 1000]` as a rate), which would let a typo pass silently, so arrays anywhere
/// else are refused here, naming the field. Walks the (already syntax-checked) text once.
fn objects_are_objects(bytes: &[u8]) -> Result<(), ApiError> {
    use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// What the value at `path` may be.
    #[derive(Clone, Copy, PartialEq)]
    enum Slot {
        /// The body itself, or an entry of `jobs`: an object.
        Object,
        /// Any field of an object but the ones below: anything but an array.
        Field,
        /// `jobs` or `finish` at the top: an array of objects.
        Jobs,
        /// `depends_on` (of the body or of an entry): an array of scalars (job ids).
        Ids,
    }
    struct Check<'p> {
        slot: Slot,
        path: &'p str,
    }
    impl<'de> DeserializeSeed<'de> for Check<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Check<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            self.scalar()
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            self.scalar()
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            self.scalar()
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            self.scalar()
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            self.scalar()
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let element = match self.slot {
                Slot::Jobs => Slot::Object,
                Slot::Ids => Slot::Field,
                _ => {
                    return Err(A::Error::custom(format!(
                        "{}\u{0}must be an object, not an array",
                        self.path
                    )));
                }
            };
            let mut i = 0usize;
            loop {
                let path = format!("{}[{i}]", self.path);
                if seq.next_element_seed(Check { slot: element, path: &path })?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let top = self.path == "body";
            while let Some(key) = map.next_key::<String>()? {
                if matches!(key.as_str(), "payload" | "result" | "checkpoint") {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let slot = match key.as_str() {
                    "jobs" | "finish" if top => Slot::Jobs,
                    "depends_on" if self.slot == Slot::Object => Slot::Ids,
                    _ => Slot::Field,
                };
                let path = if top { key } else { format!("{}.{key}", self.path) };
                map.next_value_seed(Check { slot, path: &path })?;
            }
            Ok(())
        }
    }
    impl Check<'_> {
        fn scalar<E: Error>(self) -> Result<(), E> {
            match self.slot {
                Slot::Field => Ok(()),
                Slot::Object | Slot::Jobs | Slot::Ids => {
                    let what = match self.slot {
                        Slot::Jobs => "an array of objects",
                        Slot::Ids => "an array of job ids",
                        _ => "a JSON object",
                    };
                    Err(E::custom(format!("{}\u{0}must be {what}", self.path)))
                }
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Check { slot: Slot::Object, path: "body" }.deserialize(&mut de).map_err(|e| {
        let text = e.to_string();
        let text = strip_position(&text);
        match text.split_once('\u{0}') {
            Some((field, message)) => ApiError::invalid(field, message),
            None => ApiError::malformed(format!("malformed JSON: {text}")),
        }
    })
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
        let bytes =
            read_body(body, state.config.max_body, content_length(&parts), state.config.body_stall).await?;
        check_content_type(&parts)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent (an empty body reads as `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default + Send> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes =
            read_body(body, state.config.max_body, content_length(&parts), state.config.body_stall).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        check_content_type(&parts)?;
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A JSON body that may be absent, with the batch endpoints' larger limit (a claim that carries
/// the ends of many runs).
pub struct OptionalBatchJson<T>(pub T);

impl<T: DeserializeOwned + Default + Send> FromRequest<AppState> for OptionalBatchJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes =
            read_body(body, state.config.max_batch_body, content_length(&parts), state.config.body_stall)
                .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBatchJson(T::default()));
        }
        check_content_type(&parts)?;
        parse_json(&bytes).map(OptionalBatchJson)
    }
}

/// A JSON body for the batch endpoint, which has its own, larger limit.
pub struct BatchJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for BatchJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes =
            read_body(body, state.config.max_batch_body, content_length(&parts), state.config.body_stall)
                .await?;
        check_content_type(&parts)?;
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
