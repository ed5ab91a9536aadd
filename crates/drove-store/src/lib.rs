//! The store seam: the [`Store`] trait that every backend (SQLite, PostgreSQL) implements, the
//! request and outcome types of each state transition, the [`Hub`] through which a store tells
//! the engine what changed, and (feature `conformance`) the test suite every store must pass.
//!
//! Key decision: one method per state transition, each atomic, each given `now` by its caller.
//! Invariants that must hold across processes (one live job per key, group limits, rate limits,
//! lease fencing) are the store's to enforce inside its transactions; nothing above the store
//! may rely on memory for them. This crate must not depend on a database driver.

pub mod admission;
pub mod error;
pub mod hub;
pub mod limits;
pub mod lineage;
pub mod listing;
pub mod request;
pub mod row;
pub mod schedules;
mod store;
pub mod transition;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::StoreError;
pub use hub::{Event, Hub, JobWatch};
pub use request::*;
pub use store::{LimitScope, Store};
