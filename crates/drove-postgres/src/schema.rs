//! Versioned migrations: SQL files embedded in the binary, applied in order, each in its own
//! transaction together with its row in `schema_migrations`.
//!
//! Nodes starting together take turns: the whole run holds a session advisory lock keyed by the
//! schema's name, so a second node waits for the first, then finds every version applied.

use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::describe;

/// Every migration, in order: (version, name, SQL).
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "error_history", include_str!("../migrations/0002_error_history.sql")),
    (3, "offline_limit", include_str!("../migrations/0003_offline_limit.sql")),
    (4, "transient_outcomes", include_str!("../migrations/0004_transient_outcomes.sql")),
    (5, "learned_rates", include_str!("../migrations/0005_learned_rates.sql")),
    (6, "lineage_schedules", include_str!("../migrations/0006_lineage_schedules.sql")),
    (7, "trace_context", include_str!("../migrations/0007_trace_context.sql")),
];

/// The advisory lock key of a schema's migrations: a stable hash (FNV-1a) of its name, so
/// stores in different schemas of one database do not wait for each other.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "drove-migrate:".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("{}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("the database schema is at version {found}, newer than this binary knows ({known})")]
    TooNew { found: i32, known: i32 },
}

/// Connects once and brings `schema` up to date; returns the versions it applied.
pub(crate) async fn migrate(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: &str,
) -> Result<Vec<i32>, MigrateError> {
    let (mut client, connection) = config.connect(tls).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection ended");
        }
    });
    let result = run(&mut client, schema).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn run(client: &mut Client, schema: &str) -> Result<Vec<i32>, MigrateError> {
    let key = lock_key(schema);
    client.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
    let applied = apply_all(client, schema).await;
    // The lock is a session lock: released here, or by the server when the connection ends.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply_all(client: &mut Client, schema: &str) -> Result<Vec<i32>, MigrateError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\";
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await?;
    let found: i32 =
        client.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?.get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > known {
        return Err(MigrateError::TooNew { found, known });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        tracing::info!(schema, version, name, "applied migration");
        applied.push(*version);
    }
    Ok(applied)
}
