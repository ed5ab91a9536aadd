//! Errors inside the store, and what each means for the call that met it: answer the caller,
//! run the whole transaction again, or give up.

use drove_store::StoreError;
use tokio_postgres::error::SqlState;

/// An error met while running a transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxError {
    /// The call's own answer (stale lease, not found, conflict): the transaction is rolled
    /// back and the error returned as it is.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database or the connection to it failed; [`classify`] says whether to retry.
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What the runner does about a failed attempt.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The answer to the call.
    Answer(StoreError),
    /// Nothing was committed and trying again may succeed (a deadlock, a serialization
    /// failure, a lost connection before COMMIT, a unique-index race).
    Retry(String),
    /// A bug or bad data: retrying will not help.
    Fatal(String),
    /// Stop and answer `Unavailable` without trying again (a commit whose outcome could not
    /// be learned: running it again might do it twice).
    Unavailable(String),
}

/// SQLSTATEs after which running the whole transaction again is safe and may succeed.
fn retryable_code(code: &SqlState) -> bool {
    // 40001 serialization_failure and 40P01 deadlock_detected: the database rolled the
    // transaction back and asks for a retry. 23505 unique_violation: every unique index a
    // transition can hit (one live job per key, queue and group names) is checked first by
    // the transition itself, so a violation means a concurrent commit raced that check, and a
    // fresh run of the transaction sees it and answers accordingly (join, key conflict).
    // Class 08 (connection exceptions), 57P01-57P03 (the server is shutting down or
    // starting), 53300 (too many connections) and 55P03 (lock not available) are the
    // database being unavailable for a moment.
    let s = code.code();
    matches!(s, "40001" | "40P01" | "23505" | "57P01" | "57P02" | "57P03" | "53300" | "55P03")
        || s.starts_with("08")
}

/// Whether a driver error without an SQLSTATE is about the connection (and so transient)
/// rather than a mismatch between the code and the schema (a bug).
fn connection_trouble(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    // The driver's kinds are private; these are the texts of Io, Connect, Timeout and Tls.
    let text = e.to_string();
    [
        "error communicating",
        "error connecting",
        "timeout waiting",
        "error performing TLS",
        "connection closed",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// Whether the error leaves the connection unusable (lost, or ended by the server), so it
/// must not go back to the pool. A deadlock or a constraint error leaves it usable.
pub(crate) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let s = code.code();
            s.starts_with("08") || matches!(s, "57P01" | "57P02" | "57P03")
        }
        None => connection_trouble(e),
    }
}

pub(crate) fn db_verdict(e: &tokio_postgres::Error) -> Verdict {
    match e.code() {
        Some(code) if retryable_code(code) => Verdict::Retry(describe(e)),
        // 22021 (a NUL byte in text), 22P05 (a character the encoding cannot hold) and 22003 (a
        // number out of range) come from a value the caller gave that the transition did not
        // check: the caller's mistake, not the store's. Every input is validated before it gets
        // here; this is the safety net that keeps one that slipped through from becoming a 500.
        // (Other data exceptions, such as a division by zero, are bugs.)
        Some(code) if matches!(code.code(), "22021" | "22P05" | "22003") => {
            Verdict::Answer(StoreError::Invalid(drove_core::ValidationError::new(
                "input",
                format!("the database refused a value: {}", describe(e)),
            )))
        }
        Some(_) => Verdict::Fatal(describe(e)),
        None if connection_trouble(e) => Verdict::Retry(describe(e)),
        None => Verdict::Fatal(describe(e)),
    }
}

pub(crate) fn classify(e: TxError) -> Verdict {
    match e {
        TxError::Store(e) => Verdict::Answer(e),
        TxError::Db(e) => db_verdict(&e),
        TxError::Pool(e) => pool_verdict(&e),
    }
}

fn pool_verdict(e: &deadpool_postgres::PoolError) -> Verdict {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Backend(db) => match db_verdict(db) {
            // A connection that cannot be opened is the database being unreachable, whatever
            // the driver says (refused, authentication pending a restart, ...).
            Verdict::Fatal(m) => Verdict::Retry(m),
            v => v,
        },
        P::Closed => Verdict::Answer(StoreError::Unavailable("the store is closed".into())),
        other => Verdict::Retry(other.to_string()),
    }
}

/// The error's text, with the server's message when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb;

    #[tokio::test]
    async fn deadlocks_and_lost_connections_are_retried_and_bugs_are_not() {
        let Some((url, a)) = testdb::connect().await else { return };
        let (b, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let table = format!("{}_t", testdb::schema_name());
        a.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1), (2)"
        ))
        .await
        .unwrap();

        // Two transactions locking two rows in opposite orders: one of them is chosen as the
        // deadlock's victim.
        a.batch_execute(&format!("BEGIN; UPDATE {table} SET id = id WHERE id = 1")).await.unwrap();
        b.batch_execute(&format!("BEGIN; UPDATE {table} SET id = id WHERE id = 2")).await.unwrap();
        let (sa, sb) = (
            format!("UPDATE {table} SET id = id WHERE id = 2"),
            format!("UPDATE {table} SET id = id WHERE id = 1"),
        );
        let (ra, rb) = tokio::join!(a.batch_execute(&sa), b.batch_execute(&sb));
        let victim = ra.err().or(rb.err()).expect("a deadlock victim");
        assert_eq!(victim.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
        assert!(matches!(db_verdict(&victim), Verdict::Retry(_)));
        a.batch_execute("ROLLBACK").await.unwrap();
        b.batch_execute("ROLLBACK").await.unwrap();

        let dup = a.batch_execute(&format!("INSERT INTO {table} VALUES (1)")).await.unwrap_err();
        assert!(matches!(db_verdict(&dup), Verdict::Retry(_)), "a unique-index race runs again");
        let bug = a.batch_execute("SELECT 1 / 0").await.unwrap_err();
        assert!(matches!(db_verdict(&bug), Verdict::Fatal(_)));
        let typo = a.query_one("SELECT $1::int", &[&"text"]).await.unwrap_err();
        assert!(matches!(db_verdict(&typo), Verdict::Fatal(_)), "a type mismatch is a bug");

        a.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
        let refused = tokio_postgres::connect("postgres://postgres@127.0.0.1:1/x", tokio_postgres::NoTls)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(matches!(db_verdict(&refused), Verdict::Retry(_)));
        // The session `a` ended by the server: what follows on it is a lost connection.
        let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        b.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
        let lost = a.batch_execute("SELECT 1").await.unwrap_err();
        assert!(matches!(db_verdict(&lost), Verdict::Retry(_)), "{lost:?}");
    }
}
