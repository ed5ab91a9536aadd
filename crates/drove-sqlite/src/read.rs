//! Reads, on their own connections: WAL lets them run beside the writer without waiting on it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drove_core::{Job, JobId, JobState, Millis};
use drove_store::listing::{self, ListPlan};
use drove_store::{Counts, JobFilter, JobPage, OutcomeCount, PoolInfo, QueueInfo, RunSample, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::row::{JOB_COLS, QUEUE_COLS, db_err, job_from_row, queue_from_row};
use crate::writer::{PoolRow, QueueRow};

/// A small pool of read-only connections, used from blocking threads.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl Readers {
    pub fn new(path: PathBuf, max_idle: usize) -> Arc<Readers> {
        Arc::new(Readers { path, idle: Mutex::new(Vec::new()), max_idle })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` on an idle connection on a blocking thread.
    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = match me.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some(c) => c,
                None => me.open()?,
            };
            let result = f(&conn);
            let mut idle = me.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < me.max_idle {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

pub(crate) fn get_job(conn: &Connection, id: JobId) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(sql!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.0], job_from_row).optional())
        .map_err(db_err)
}

pub(crate) fn next_due(conn: &Connection) -> Result<(Option<Millis>, Option<Millis>), StoreError> {
    let scheduled: Option<i64> = conn
        .prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 0")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err)?;
    let reap: Option<i64> = conn
        .prepare_cached("SELECT min(reap_at) FROM jobs WHERE state = 2")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err)?;
    Ok((scheduled.map(Millis), reap.map(Millis)))
}

fn counts(conn: &Connection, queue: &str) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT state, n FROM queue_counts WHERE queue = ?1")
        .and_then(|mut s| s.query_map([queue], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)?;
    for (code, n) in rows {
        counts.add_code(code, n)?;
    }
    Ok(counts)
}

pub(crate) fn get_queue(conn: &Connection, name: &str, now: Millis) -> Result<Option<QueueInfo>, StoreError> {
    let row = conn
        .prepare_cached(sql!("SELECT {QUEUE_COLS} FROM queues WHERE name = ?1"))
        .and_then(|mut s| s.query_row([name], |r| queue_from_row(name, r, 0)).optional())
        .map_err(db_err)?;
    row.map(|q| Ok(q.info(name, counts(conn, name)?, now))).transpose()
}

pub(crate) fn list_queues(conn: &Connection, now: Millis) -> Result<Vec<QueueInfo>, StoreError> {
    let rows: Vec<(String, QueueRow)> = conn
        .prepare_cached(sql!("SELECT name, {QUEUE_COLS} FROM queues ORDER BY name"))
        .and_then(|mut s| {
            s.query_map([], |r| {
                let name: String = r.get(0)?;
                let q = queue_from_row(&name, r, 1)?;
                Ok((name, q))
            })?
            .collect()
        })
        .map_err(db_err)?;
    rows.into_iter().map(|(name, q)| Ok(q.info(&name, counts(conn, &name)?, now))).collect()
}

pub(crate) fn get_pool(conn: &Connection, name: &str) -> Result<Option<PoolInfo>, StoreError> {
    let found: Option<(String, Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT config, limit_now, offline_limit FROM pools WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(db_err)?;
    let Some((config, limit_now, offline_limit)) = found else {
        return Ok(None);
    };
    let row = PoolRow {
        config: serde_json::from_str(&config).map_err(|e| StoreError::Internal(e.to_string()))?,
        limit_now,
        offline_limit,
    };
    let queues = conn
        .prepare_cached("SELECT name FROM queues WHERE json_extract(config, '$.pool') = ?1 ORDER BY name")
        .and_then(|mut s| s.query_map([name], |r| r.get(0))?.collect())
        .map_err(db_err)?;
    Ok(Some(row.info(name, queues)))
}

/// Jobs matching `filter`, newest first. Each shape of filter is served by an index walked in
/// id order; filters no index leads with are split per queue (or per state) and merged, so a
/// page costs about `limit` rows per branch however many finished jobs are kept.
pub(crate) fn list_jobs(
    conn: &Connection,
    filter: &JobFilter,
    limit: usize,
    before: Option<JobId>,
) -> Result<JobPage, StoreError> {
    let before = before.map_or(i64::MAX, |b| b.0);
    let fetch = listing::fetch(limit);
    let jobs = match listing::plan(filter) {
        ListPlan::One => query(conn, filter, before, fetch)?,
        ListPlan::EachState => {
            let mut all = Vec::new();
            for f in listing::each_state(filter) {
                all.extend(query(conn, &f, before, fetch)?);
            }
            all
        }
        ListPlan::EachQueue => {
            let queues: Vec<String> = conn
                .prepare_cached("SELECT name FROM queues")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(db_err)?;
            let mut all = Vec::new();
            for q in queues {
                let f = JobFilter { queue: Some(q), ..filter.clone() };
                all.extend(query(conn, &f, before, fetch)?);
            }
            all
        }
    };
    Ok(listing::page(jobs, limit))
}

/// Runs that ended at or after `since`, per queue, state, partial and error kind.
pub(crate) fn outcomes(conn: &Connection, since: Millis) -> Result<Vec<OutcomeCount>, StoreError> {
    let rows: Vec<(String, i64, bool, i64, i64)> = conn
        .prepare_cached(
            "SELECT queue, state, partial, kind, sum(n) FROM outcomes WHERE minute >= ?1 \
             GROUP BY queue, state, partial, kind",
        )
        .and_then(|mut s| {
            s.query_map([since.0.div_euclid(60_000)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(db_err)?;
    rows.into_iter().map(|(q, s, p, k, n)| OutcomeCount::from_stored(q, s, p, k, n)).collect()
}

fn query(conn: &Connection, f: &JobFilter, before: i64, fetch: usize) -> Result<Vec<Job>, StoreError> {
    let mut sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id < ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![before.into()];
    let mut add = |clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(k) = &f.key {
        add("key =", k.clone().into());
    }
    if let Some(q) = &f.queue {
        add("queue =", q.clone().into());
    }
    if let Some(g) = &f.group {
        add("grp =", g.clone().into());
    }
    if let Some(s) = f.state {
        add("state =", s.code().into());
    }
    if let Some(p) = f.partial {
        add("state = 3 AND partial =", i64::from(p).into());
    }
    if let Some(p) = f.parent {
        add("parent_id =", p.0.into());
    }
    if f.operations {
        sql.push_str(" AND children_total > 0");
    }
    args.push((fetch as i64).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_map(rusqlite::params_from_iter(args), job_from_row)?.collect())
        .map_err(db_err)
}

pub(crate) fn recent_runs(
    conn: &Connection,
    queue: &str,
    since: Millis,
    limit: usize,
) -> Result<Vec<RunSample>, StoreError> {
    conn.prepare_cached(
        "SELECT id, state, run_at, started_at, finished_at, partial FROM jobs \
         WHERE queue = ?1 AND state >= 3 AND finished_at >= ?2 AND started_at IS NOT NULL \
         ORDER BY finished_at DESC LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(rusqlite::params![queue, since.0, limit as i64], |r| {
            let state: i64 = r.get(1)?;
            Ok(RunSample {
                id: JobId(r.get(0)?),
                state: JobState::from_code(state).unwrap_or(JobState::Failed),
                run_at: Millis(r.get(2)?),
                started_at: Millis(r.get(3)?),
                finished_at: Millis(r.get(4)?),
                partial: r.get::<_, i64>(5)? != 0,
            })
        })?
        .collect()
    })
    .map_err(db_err)
}

/// How many jobs of `queue` are ready, up to `up_to` (`None`: no such queue).
pub(crate) fn ready(conn: &Connection, queue: &str, up_to: i64) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 1 LIMIT ?2)) \
         FROM queues WHERE name = ?1",
    )
    .and_then(|mut s| s.query_row(rusqlite::params![queue, up_to.max(1)], |r| r.get::<_, i64>(0)).optional())
    .map_err(db_err)
}

pub(crate) fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err)
}
