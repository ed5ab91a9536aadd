//! Running transitions: one transaction per call, retried whole on transient errors with
//! bounded full-jitter backoff, and a COMMIT whose outcome was lost reconciled by asking the
//! database what became of the transaction, never by running it again blindly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use drove_core::{JobId, Millis};
use drove_store::{Hub, StoreError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{TxError, Verdict, classify, connection_lost, db_verdict, describe};
use crate::notify;
use crate::tx::{Effects, Marker, Tx};

/// A transition's body: borrows the transaction for as long as it runs.
pub(crate) type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, TxError>> + Send + 't>>;

/// Attempts per call, and the time after which no new attempt starts.
const MAX_TRIES: u32 = 8;
const RETRY_BUDGET: Duration = Duration::from_secs(5);
/// Full jitter: each pause is uniform in `[0, min(CAP, BASE * 2^n)]`. A small base suits
/// deadlocks and serialization failures, which clear in milliseconds; the cap and the budget
/// bound how long a call waits for a database that went away before answering `Unavailable`.
const BACKOFF_BASE_MS: u64 = 10;
const BACKOFF_CAP_MS: u64 = 1_000;
/// How long a lost COMMIT is reconciled for before the call answers `Unavailable`.
const RECONCILE_BUDGET: Duration = Duration::from_secs(15);

pub(crate) fn backoff(tries: u32) -> Duration {
    let ceiling = BACKOFF_BASE_MS.saturating_mul(1 << tries.min(16)).min(BACKOFF_CAP_MS);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// What every call of one store instance shares.
pub(crate) struct Shared {
    pub pool: Pool,
    pub hub: Arc<Hub>,
    pub max_payload: usize,
    /// Lines for other nodes, sent by the listener task (see `notify`).
    pub outbox: mpsc::UnboundedSender<notify::Outgoing>,
}

/// What became of a transaction whose COMMIT got no answer.
enum Fate {
    Committed,
    Aborted,
    Unknown(String),
}

impl Shared {
    /// Runs `op` in a transaction, retrying the whole of it on transient errors, and tells the
    /// hubs what it changed once it committed.
    pub async fn write<T, F>(&self, now: Millis, mut op: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t, 'c> FnMut(&'t mut Tx<'c>) -> TxFuture<'t, T> + Send,
    {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            match self.attempt(now, &mut op).await {
                Ok((value, fx)) => {
                    self.deliver(fx);
                    return Ok(value);
                }
                Err(v) => self.after_failure(v, &mut tries, started).await?,
            }
        }
    }

    /// Runs a read on a pooled connection (no explicit transaction), retried like a write.
    pub async fn read<T, F>(&self, mut op: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'c> FnMut(&'c Object) -> TxFuture<'c, T> + Send,
    {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            let result = match self.pool.get().await {
                Ok(client) => op(&client).await.map_err(|e| {
                    if let TxError::Db(db) = &e
                        && connection_lost(db)
                    {
                        discard(client);
                    }
                    classify(e)
                }),
                Err(e) => Err(classify(e.into())),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(v) => self.after_failure(v, &mut tries, started).await?,
            }
        }
    }

    /// Decides after a failed attempt: back off and try again, or answer.
    async fn after_failure(&self, v: Verdict, tries: &mut u32, started: Instant) -> Result<(), StoreError> {
        match v {
            Verdict::Answer(e) => Err(e),
            Verdict::Fatal(m) => {
                tracing::error!(error = %m, "store error");
                Err(StoreError::Internal(m))
            }
            Verdict::Unavailable(m) => Err(StoreError::Unavailable(m)),
            Verdict::Retry(m) => {
                *tries += 1;
                if *tries >= MAX_TRIES || started.elapsed() >= RETRY_BUDGET {
                    tracing::warn!(error = %m, tries = *tries, "giving up on a transient database error");
                    return Err(StoreError::Unavailable(m));
                }
                tracing::debug!(error = %m, tries = *tries, "transient database error; trying again");
                tokio::time::sleep(backoff(*tries)).await;
                Ok(())
            }
        }
    }

    async fn attempt<T, F>(&self, now: Millis, op: &mut F) -> Result<(T, Effects), Verdict>
    where
        F: for<'t, 'c> FnMut(&'t mut Tx<'c>) -> TxFuture<'t, T>,
    {
        let mut client = self.pool.get().await.map_err(|e| classify(e.into()))?;
        // A connection that fails here is closed, and the pool drops closed connections.
        let db = client.transaction().await.map_err(|e| db_verdict(&e))?;
        let mut tx = Tx::new(db, self, now);
        // On an error the transaction is dropped, which rolls it back.
        let body = async {
            let value = op(&mut tx).await?;
            let marker = tx.finalize().await?;
            Ok::<_, TxError>((value, marker))
        }
        .await;
        let (value, marker) = match body {
            Ok(v) => v,
            Err(e) => {
                let broken = matches!(&e, TxError::Db(db) if connection_lost(db));
                drop(tx);
                if broken {
                    discard(client);
                }
                return Err(classify(e));
            }
        };
        let (db, fx) = tx.into_parts();
        match db.commit().await {
            Ok(()) => Ok((value, fx)),
            Err(e) => {
                discard(client);
                let Some(marker) = marker else {
                    // Nothing was written: running it again cannot do anything twice.
                    return Err(Verdict::Retry(describe(&e)));
                };
                tracing::warn!(error = %describe(&e), xid = %marker.xid, "COMMIT got no answer; reconciling");
                match self.reconcile(&marker).await {
                    Fate::Committed => Ok((value, fx)),
                    Fate::Aborted => Err(Verdict::Retry(describe(&e))),
                    Fate::Unknown(m) => {
                        Err(Verdict::Unavailable(format!("the outcome of a commit is unknown: {m}")))
                    }
                }
            }
        }
    }

    /// Asks the database what became of the transaction `marker` names. While it is still in
    /// progress (its COMMIT may not have reached the server, whose process then waits for a
    /// client that is gone), its process is ended after a moment, which aborts it.
    async fn reconcile(&self, marker: &Marker) -> Fate {
        let started = Instant::now();
        let mut tries = 0;
        let mut last = String::new();
        while started.elapsed() < RECONCILE_BUDGET {
            if tries > 0 {
                tokio::time::sleep(backoff(tries)).await;
            }
            tries += 1;
            let client = match self.pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = client
                .query_one("SELECT pg_xact_status($1::text::xid8)", &[&marker.xid])
                .await
                .and_then(|r| r.try_get::<_, Option<String>>(0));
            match status.as_ref().map(|s| s.as_deref()) {
                Ok(Some("committed")) => return Fate::Committed,
                Ok(Some("aborted")) => return Fate::Aborted,
                Ok(Some(_in_progress)) => {
                    if started.elapsed() > Duration::from_secs(1) {
                        let ended = client
                            .execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                 WHERE pid = $1 AND backend_xid = xid($2::text::xid8)",
                                &[&marker.pid, &marker.xid],
                            )
                            .await;
                        if let Err(e) = ended {
                            last = describe(&e);
                        }
                    }
                }
                Ok(None) => {
                    return Fate::Unknown(format!("transaction {} is unknown to the database", marker.xid));
                }
                Err(e) => {
                    last = describe(e);
                    if connection_lost(e) {
                        discard(client);
                    }
                }
            }
        }
        Fate::Unknown(last)
    }

    /// Tells this node's hub at once, and the other nodes through the listener's NOTIFY.
    fn deliver(&self, fx: Effects) {
        let lines = notify::lines_for_others(&fx);
        if !lines.is_empty() {
            // The listener task is gone only once the store closed: nobody is left to tell.
            let _ = self.outbox.send(notify::Outgoing::Lines(lines));
        }
        let recheck: Vec<i64> =
            fx.unwatched.into_iter().filter(|id| self.hub.is_watched(JobId(*id))).collect();
        if !recheck.is_empty() {
            let _ = self.outbox.send(notify::Outgoing::Recheck(recheck));
        }
        let hub = &self.hub;
        for q in &fx.ready {
            hub.queue_ready(q);
        }
        if let Some(at) = fx.scheduled {
            hub.scheduled(at);
        }
        if fx.schedules {
            hub.schedule_written();
        }
        for job in fx.finished {
            hub.job_finished(Arc::new(job));
        }
        for e in fx.events {
            hub.publish(e);
        }
    }
}

/// Takes a connection out of the pool for good (it is broken, or its state is unknown).
pub(crate) fn discard(client: Object) {
    drop(Object::take(client));
}

#[cfg(test)]
mod tests {
    use drove_store::Store;

    use super::*;
    use crate::{PostgresOptions, PostgresStore, testdb};

    async fn marker(c: &tokio_postgres::Client, schema: &str) -> Marker {
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO \"{schema}\".pools (name, config) VALUES ('p' || random(), '{{}}')"
        ))
        .await
        .unwrap();
        let r = c
            .query_one("SELECT pg_current_xact_id_if_assigned()::text, pg_backend_pid()", &[])
            .await
            .unwrap();
        Marker { xid: r.get(0), pid: r.get(1) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_commit_is_reconciled_by_the_fate_of_its_transaction() {
        let Some((url, admin)) = testdb::connect().await else { return };
        let schema = testdb::schema_name();
        let store =
            PostgresStore::open(PostgresOptions::new(url.clone()).with_schema(schema.clone())).await.unwrap();
        let (other, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(conn);

        let m = marker(&other, &schema).await;
        other.batch_execute("COMMIT").await.unwrap();
        assert!(matches!(store.shared.reconcile(&m).await, Fate::Committed));

        let m = marker(&other, &schema).await;
        other.batch_execute("ROLLBACK").await.unwrap();
        assert!(matches!(store.shared.reconcile(&m).await, Fate::Aborted));

        // A transaction whose COMMIT never arrived stays in progress: its process is ended,
        // which aborts it, and the answer is "aborted" (so running it again is safe).
        let m = marker(&other, &schema).await;
        assert!(matches!(store.shared.reconcile(&m).await, Fate::Aborted));
        assert!(other.batch_execute("SELECT 1").await.is_err(), "its connection was ended");
        let _ = driver.await;

        store.close().await;
        admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.unwrap();
    }
}
