//! Drove's vocabulary: the job model of the public contract (docs/API.md), the validation rules for
//! names and numbers, and the flow-control arithmetic (backoff, GCRA, adaptive limits).
//!
//! Key decision: everything here is pure. Time comes in as an argument ([`Millis`]), randomness
//! as a number in `[0, 1)`, so every rule can be tested exactly and reused by every store.
//! This crate must not depend on tokio, a database or an HTTP stack.

pub mod adaptive;
pub mod backoff;
pub mod duration;
pub mod gcra;
pub mod job;
pub mod learned;
pub mod name;
pub mod queue;
pub mod schedule;
pub mod time;
pub mod trace;
pub mod validation;

pub use job::{
    AttemptError, Children, ERROR_HISTORY, ErrorKind, FailKind, Job, JobError, JobId, JobState, LeaseToken,
    Links, OnConflict, OnDependencyFailure, Progress, WaitingFor, operation_outcome,
};
pub use queue::{Adaptive, Backoff, Lane, PoolConfig, QueueConfig, RateLimit, Transient};
pub use time::Millis;
pub use trace::TraceContext;
pub use validation::ValidationError;

/// A JSON document kept as the text it arrived in: payloads, results and checkpoints are stored
/// and served without being parsed into a tree and re-encoded.
pub type RawJson = Box<serde_json::value::RawValue>;

/// Builds a [`RawJson`] from text already known to be valid JSON (it came from the store, which
/// only ever holds validated JSON). Falls back to `null` rather than panicking on bad bytes.
pub fn raw_from_stored(text: String) -> RawJson {
    serde_json::value::RawValue::from_string(text).unwrap_or_else(|_| raw_null())
}

/// The JSON `null` as a [`RawJson`].
pub fn raw_null() -> RawJson {
    serde_json::value::RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}
