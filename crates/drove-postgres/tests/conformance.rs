//! The store conformance suite on PostgreSQL: each case in a fresh schema, dropped afterwards.

mod common;

use common::fresh;

drove_store::conformance_tests!(fresh);
