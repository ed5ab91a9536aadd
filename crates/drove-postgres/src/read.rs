//! Reads: single statements on pooled connections, outside any transaction.

use deadpool_postgres::Object;
use drove_core::{Job, JobId, Millis};
use drove_store::listing::{self, ListPlan};
use drove_store::{Counts, JobFilter, JobPage, OutcomeCount, PoolInfo, QueueInfo, RunSample, StoreError};
use tokio_postgres::Row;

use crate::error::TxError;
use crate::ops::admin::{COUNTS_SQL, add_count};
use crate::row::{JOB_COLS, job_from_row, state_of};
use crate::tx::{Params, PoolRow, QUEUE_COL_COUNT, QUEUE_COLS, queue_from_row};

async fn query(c: &Object, sql: &str, params: Params<'_>) -> Result<Vec<Row>, TxError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

async fn query_opt(c: &Object, sql: &str, params: Params<'_>) -> Result<Option<Row>, TxError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

pub(crate) async fn get_job(c: &Object, id: JobId) -> Result<Option<Job>, TxError> {
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
    query_opt(c, &sql, &[&id.0]).await?.as_ref().map(job_from_row).transpose()
}

pub(crate) async fn next_due(c: &Object) -> Result<(Option<Millis>, Option<Millis>), TxError> {
    let rows = query(
        c,
        "SELECT (SELECT min(run_at) FROM jobs WHERE state = 0), (SELECT min(reap_at) FROM jobs WHERE state = 2)",
        &[],
    )
    .await?;
    let r = rows.first().ok_or_else(|| StoreError::Internal("next_due returned no row".into()))?;
    Ok((r.try_get::<_, Option<i64>>(0)?.map(Millis), r.try_get::<_, Option<i64>>(1)?.map(Millis)))
}

async fn counts(c: &Object, queue: &str) -> Result<Counts, TxError> {
    let mut counts = Counts::default();
    for r in query(c, COUNTS_SQL, &[&queue]).await? {
        add_count(&mut counts, r.try_get(0)?, r.try_get::<_, Option<i64>>(1)?.unwrap_or(0))?;
    }
    Ok(counts)
}

fn info(name: String, row: &Row, counts: Counts, now: Millis) -> Result<QueueInfo, TxError> {
    Ok(queue_from_row(&name, row)?.info(&name, counts, now))
}

pub(crate) async fn get_queue(c: &Object, name: &str, now: Millis) -> Result<Option<QueueInfo>, TxError> {
    let sql = format!("SELECT {QUEUE_COLS} FROM queues WHERE name = $1");
    let Some(row) = query_opt(c, &sql, &[&name]).await? else {
        return Ok(None);
    };
    let counts = counts(c, name).await?;
    info(name.to_owned(), &row, counts, now).map(Some)
}

pub(crate) async fn list_queues(c: &Object, now: Millis) -> Result<Vec<QueueInfo>, TxError> {
    let sql = format!("SELECT {QUEUE_COLS}, name FROM queues ORDER BY name");
    let rows = query(c, &sql, &[]).await?;
    let mut all = std::collections::HashMap::<String, Counts>::new();
    for r in query(
        c,
        "SELECT queue, state, sum(n)::bigint FROM (SELECT queue, state, n FROM queue_counts \
         UNION ALL SELECT queue, state, n FROM count_deltas) c GROUP BY queue, state",
        &[],
    )
    .await?
    {
        let counts = all.entry(r.try_get(0)?).or_default();
        add_count(counts, r.try_get(1)?, r.try_get::<_, Option<i64>>(2)?.unwrap_or(0))?;
    }
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(QUEUE_COL_COUNT)?;
            let counts = all.remove(&name).unwrap_or_default();
            info(name, r, counts, now)
        })
        .collect()
}

pub(crate) async fn get_pool(c: &Object, name: &str) -> Result<Option<PoolInfo>, TxError> {
    let Some(row) =
        query_opt(c, "SELECT config, limit_now, offline_limit FROM pools WHERE name = $1", &[&name]).await?
    else {
        return Ok(None);
    };
    let config: String = row.try_get(0)?;
    let row = PoolRow {
        config: serde_json::from_str(&config).map_err(|e| StoreError::Internal(e.to_string()))?,
        limit_now: row.try_get(1)?,
        offline_limit: row.try_get(2)?,
    };
    let queues = query(c, "SELECT name FROM queues WHERE pool = $1 ORDER BY name", &[&name])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Some(row.info(name, queues)))
}

/// Jobs matching `filter`, newest first. Each shape of filter is served by an index walked in
/// id order; filters no index leads with are split per queue (or per state) and merged, so a
/// page costs about `limit` rows per branch however many finished jobs are kept.
pub(crate) async fn list_jobs(
    c: &Object,
    filter: &JobFilter,
    limit: usize,
    before: Option<JobId>,
) -> Result<JobPage, TxError> {
    let before = before.map_or(i64::MAX, |b| b.0);
    let fetch = listing::fetch(limit);
    let jobs = match listing::plan(filter) {
        ListPlan::One => select(c, filter, before, fetch).await?,
        ListPlan::EachState => {
            let mut all = Vec::new();
            for f in listing::each_state(filter) {
                all.extend(select(c, &f, before, fetch).await?);
            }
            all
        }
        ListPlan::EachQueue => {
            let queues: Vec<String> = query(c, "SELECT name FROM queues", &[])
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut all = Vec::new();
            for q in queues {
                let f = JobFilter { queue: Some(q), ..filter.clone() };
                all.extend(select(c, &f, before, fetch).await?);
            }
            all
        }
    };
    Ok(listing::page(jobs, limit))
}

/// Runs that ended at or after `since`, per queue, state, partial and error kind: the compacted
/// base and the deltas not yet folded into it.
pub(crate) async fn outcomes(c: &Object, since: Millis) -> Result<Vec<OutcomeCount>, TxError> {
    let rows = query(
        c,
        "SELECT queue, state, partial, kind, sum(n)::bigint FROM ( \
           SELECT queue, state, partial, kind, n FROM outcomes WHERE minute >= $1 \
           UNION ALL SELECT queue, state, partial, kind, n FROM outcome_deltas WHERE minute >= $1) o \
         GROUP BY queue, state, partial, kind",
        &[&since.0.div_euclid(60_000)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(OutcomeCount::from_stored(
            r.try_get(0)?,
            i64::from(r.try_get::<_, i16>(1)?),
            r.try_get(2)?,
            i64::from(r.try_get::<_, i16>(3)?),
            r.try_get(4)?,
        )?);
    }
    Ok(out)
}

async fn select(c: &Object, f: &JobFilter, before: i64, fetch: usize) -> Result<Vec<Job>, TxError> {
    let mut sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id < $1");
    let state = f.state.map(|s| s.code() as i16);
    let parent = f.parent.map(|p| p.0);
    let fetch = fetch as i64;
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&before];
    if let Some(k) = &f.key {
        args.push(k);
        sql.push_str(&format!(" AND key = ${}", args.len()));
    }
    if let Some(q) = &f.queue {
        args.push(q);
        sql.push_str(&format!(" AND queue = ${}", args.len()));
    }
    if let Some(g) = &f.group {
        args.push(g);
        sql.push_str(&format!(" AND grp = ${}", args.len()));
    }
    if let Some(s) = &state {
        args.push(s);
        sql.push_str(&format!(" AND state = ${}", args.len()));
    }
    if let Some(p) = &f.partial {
        args.push(p);
        sql.push_str(&format!(" AND state = 3 AND partial = ${}", args.len()));
    }
    if let Some(p) = &parent {
        args.push(p);
        sql.push_str(&format!(" AND parent_id = ${}", args.len()));
    }
    if f.operations {
        sql.push_str(" AND children_total > 0");
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len() + 1));
    args.push(&fetch);
    query(c, &sql, &args).await?.iter().map(job_from_row).collect()
}

pub(crate) async fn recent_runs(
    c: &Object,
    queue: &str,
    since: Millis,
    limit: usize,
) -> Result<Vec<RunSample>, TxError> {
    let rows = query(
        c,
        "SELECT id, state, run_at, started_at, finished_at, partial FROM jobs \
         WHERE queue = $1 AND state >= 3 AND finished_at >= $2 AND started_at IS NOT NULL \
         ORDER BY finished_at DESC LIMIT $3",
        &[&queue, &since.0, &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RunSample {
                id: JobId(r.try_get(0)?),
                state: state_of(r.try_get(1)?)?,
                run_at: Millis(r.try_get(2)?),
                started_at: Millis(r.try_get(3)?),
                finished_at: Millis(r.try_get(4)?),
                partial: r.try_get(5)?,
            })
        })
        .collect()
}

/// How many jobs of `queue` are ready, up to `up_to` (`None`: no such queue).
pub(crate) async fn ready(c: &Object, queue: &str, up_to: i64) -> Result<Option<i64>, TxError> {
    let rows = query(
        c,
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = $1 AND state = 1 LIMIT $2) r) \
         FROM queues WHERE name = $1",
        &[&queue, &up_to.max(1)],
    )
    .await?;
    Ok(match rows.first() {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// Proves the database takes writes, not only reads, and still holds Drove's schema: a
/// transaction that reads the schema's migrations table and is given an id (a read-only
/// replica, a full disk, a dropped database or schema refuse it), and commits.
pub(crate) async fn ping(c: &Object) -> Result<(), TxError> {
    let probe = c
        .batch_execute("BEGIN; SELECT 1 FROM schema_migrations LIMIT 1; SELECT txid_current(); COMMIT")
        .await;
    if probe.is_err() {
        // A failed statement leaves the transaction open (and aborted) on a pooled connection.
        let _ = c.batch_execute("ROLLBACK").await;
    }
    probe?;
    Ok(())
}
