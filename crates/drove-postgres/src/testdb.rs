//! For unit tests that need the database: the same rules as the integration tests (the URL
//! from `DROVE_TEST_DATABASE_URL`, skipped with one line unless `DROVE_REQUIRE_POSTGRES=1`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::{Client, NoTls};

/// A raw connection to the test database, or `None` after saying why there is none.
pub(crate) async fn connect() -> Option<(String, Client)> {
    let required = std::env::var("DROVE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "DROVE_REQUIRE_POSTGRES=1 but the PostgreSQL tests cannot run: {why}");
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::SeqCst) {
            let _ = writeln!(std::io::stderr(), "PostgreSQL tests skipped: {why}");
        }
        None
    };
    let Ok(url) = std::env::var("DROVE_TEST_DATABASE_URL") else {
        return skip("DROVE_TEST_DATABASE_URL is not set".into());
    };
    match tokio_postgres::connect(&url, NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some((url, client))
        }
        Err(e) => skip(format!("cannot connect to {url}: {}", crate::error::describe(&e))),
    }
}

/// A schema name no other test uses.
pub(crate) fn schema_name() -> String {
    format!("du_{}_{:08x}", std::process::id(), fastrand::u32(..))
}
