//! The store conformance suite on SQLite: each case on a fresh database file.

use std::sync::Arc;

use drove_sqlite::{SqliteOptions, SqliteStore};
use drove_store::conformance::Fixture;

async fn fresh() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("drove.db"))).expect("open");
    Some(Fixture { store: Arc::new(store), guard: Box::new(dir) })
}

drove_store::conformance_tests!(fresh);
