//! What the PostgreSQL tests share: the database from `DROVE_TEST_DATABASE_URL`, a fresh
//! schema per case (dropped when the case ends, however it ends), and the rule for skipping.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drove_postgres::{PostgresOptions, PostgresStore};
use drove_store::conformance::Fixture;

/// Drops its schema when dropped.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop may run inside a runtime (or while a test unwinds): a thread of its own can
        // block on the statement without upsetting it.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    ))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "warning: could not drop test schema {}", self.schema);
        }
    }
}

/// Says once per test binary, on the terminal (not in captured output), why the PostgreSQL
/// tests were skipped; panics instead when `DROVE_REQUIRE_POSTGRES=1`.
fn skip(reason: &str) -> Option<SchemaGuard> {
    if std::env::var("DROVE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("DROVE_REQUIRE_POSTGRES=1 but the PostgreSQL tests cannot run: {reason}");
    }
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::SeqCst) {
        let _ = writeln!(std::io::stderr(), "PostgreSQL tests skipped: {reason}");
    }
    None
}

/// A fresh, empty schema name on the test database, or `None` (after saying why) when there
/// is no database to test against.
pub async fn new_schema() -> Option<SchemaGuard> {
    let Ok(url) = std::env::var("DROVE_TEST_DATABASE_URL") else {
        return skip("DROVE_TEST_DATABASE_URL is not set");
    };
    let connected =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(&url, tokio_postgres::NoTls))
            .await;
    match connected {
        Ok(Ok((_client, _conn))) => {}
        Ok(Err(e)) => {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            return skip(&format!("cannot connect to {url}: {e}{cause}"));
        }
        Err(_) => return skip(&format!("cannot connect to {url}: timed out")),
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "dt_{}_{}_{:06x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..0x100_0000)
    );
    Some(SchemaGuard { url, schema })
}

pub fn options(guard: &SchemaGuard) -> PostgresOptions {
    let mut opts = PostgresOptions::new(guard.url.clone()).with_schema(guard.schema.clone());
    // Tests run side by side, each with a store or three: keep connections modest.
    opts.pool_size = 6;
    opts
}

pub async fn open(guard: &SchemaGuard) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::open(options(guard)).await.expect("open the PostgreSQL store"))
}

/// A store on a fresh schema, for the conformance suite.
pub async fn fresh() -> Option<Fixture> {
    let guard = new_schema().await?;
    let store = open(&guard).await;
    Some(Fixture { store, guard: Box::new(guard) })
}
