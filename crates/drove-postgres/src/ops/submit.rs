//! Submitting: create, or join / reuse / replace / follow up by key (docs/API.md "Keys"), with a
//! parent and dependencies (drove_store::lineage decides; this applies it).
//!
//! One live job per (queue, key) is the partial unique index `jobs_key_live`. A keyed entry
//! first looks for the live job; when there is none it inserts with `ON CONFLICT DO NOTHING`,
//! which waits for a concurrent insert of the same key and, if that one committed, inserts
//! nothing: the entry then looks again and joins the job that won. Keyed entries are handled
//! in (queue, key) order so that two batches racing on the same keys wait for each other in
//! one order instead of deadlocking; ids are drawn up front so they still follow the batch.
//!
//! Rows other jobs' ends change are locked before they are read: a parent (its children are
//! counted by an UPDATE), the jobs depended on (their `links` are set by an UPDATE that returns
//! their state), a key's running job before a follow-up is put behind it. So a job that ends
//! concurrently either ended before (its state says so here) or sees this submit's rows when it
//! looks for its dependents, children or follow-up.

use std::collections::BTreeMap;

use drove_core::{Job, JobId, JobState, Links, Millis, ValidationError, WaitingFor};
use drove_store::lineage::{self, KeyAction, KeyWindows};
use drove_store::{MAX_CHILDREN, MAX_DEPTH, NewJob, StoreError, Submitted};

use super::{find_live, update_returning};
use crate::error::TxError;
use crate::row::{JOB_COLS, job_from_row, state_of};
use crate::tx::Tx;

/// How often a keyed entry looks again after losing an insert race before giving up.
const KEY_RACE_ROUNDS: usize = 5;

/// Plain jobs of the batch (no key, no dependencies), inserted together by one statement.
#[derive(Default)]
struct Rows<'j> {
    id: Vec<i64>,
    queue: Vec<&'j str>,
    kind: Vec<Option<&'j str>>,
    payload: Vec<&'j str>,
    grp: Vec<Option<&'j str>>,
    priority: Vec<i64>,
    state: Vec<i16>,
    max_attempts: Vec<i64>,
    run_at: Vec<i64>,
    timeout_ms: Vec<Option<i64>>,
    parent_id: Vec<Option<i64>>,
    depth: Vec<i64>,
    traceparent: Vec<Option<&'j str>>,
    tracestate: Vec<Option<&'j str>>,
}

fn plain(new: &NewJob) -> bool {
    new.key.is_none() && new.depends_on.is_empty()
}

pub(crate) async fn submit(tx: &mut Tx<'_>, jobs: &[NewJob]) -> Result<Vec<Submitted>, TxError> {
    drove_store::validate_submit(jobs, tx.shared.max_payload).map_err(StoreError::Invalid)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let many = jobs.len() > 1;
    let named = |i: usize, e: TxError| match e {
        TxError::Store(StoreError::Invalid(v)) if many => {
            StoreError::Invalid(v.within(&format!("jobs[{i}]"))).into()
        }
        e => e,
    };
    // New queues are created in name order, for the same reason keys are taken in order.
    let mut names: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        tx.queue(name).await?;
    }
    let mut ids: Vec<i64> = tx
        .query("SELECT nextval('job_ids') FROM generate_series(1, $1::int)", &[&(jobs.len() as i32)])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    // The parents of the batch's plain children, each locked and counted once for all of them,
    // in id order.
    let mut per_parent: BTreeMap<i64, (i64, usize)> = BTreeMap::new();
    for (i, j) in jobs.iter().enumerate() {
        if let (true, Some(p)) = (plain(j), j.parent) {
            per_parent.entry(p.0).or_insert((0, i)).0 += 1;
        }
    }
    let mut depth_of = BTreeMap::new();
    for (p, (n, first)) in per_parent {
        let depth = adopt(tx, JobId(p), n).await.map_err(|e| named(first, e))?;
        depth_of.insert(p, depth);
    }

    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        let k = |i: usize| jobs[i].key.as_ref().map(|k| (jobs[i].queue.as_str(), k.as_str()));
        k(a).cmp(&k(b))
    });
    let mut out: Vec<Option<Submitted>> = vec![None; jobs.len()];
    let mut rows = Rows::default();
    for i in order {
        let new = &jobs[i];
        out[i] = Some(if let Some(key) = &new.key {
            submit_keyed(tx, new, key, ids[i]).await.map_err(|e| named(i, e))?
        } else if !new.depends_on.is_empty() {
            let job = create(tx, new, ids[i], false).await.map_err(|e| named(i, e))?;
            Submitted::created(
                job.ok_or_else(|| StoreError::Internal("an unkeyed insert conflicted".into()))?,
            )
        } else {
            let job = prepare(tx, new, ids[i]).await?;
            let depth = new.parent.and_then(|p| depth_of.get(&p.0).copied()).unwrap_or(0);
            rows.add(new, &job, depth);
            created(tx, &job).await?;
            Submitted::created(job)
        });
    }
    if !rows.id.is_empty() {
        tx.execute(
            "INSERT INTO jobs (id, queue, kind, payload, grp, priority, state, max_attempts, run_at, \
             created_at, timeout_ms, parent_id, depth, traceparent, tracestate) \
             SELECT id, queue, kind, payload, grp, priority, state, max_attempts, run_at, $11, timeout_ms, \
             parent_id, depth, traceparent, tracestate \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
             $7::smallint[], $8::bigint[], $9::bigint[], $10::bigint[], $12::bigint[], $13::bigint[], \
             $14::text[], $15::text[]) \
             AS u(id, queue, kind, payload, grp, priority, state, max_attempts, run_at, timeout_ms, parent_id, depth, \
             traceparent, tracestate)",
            &[
                &rows.id,
                &rows.queue,
                &rows.kind,
                &rows.payload,
                &rows.grp,
                &rows.priority,
                &rows.state,
                &rows.max_attempts,
                &rows.run_at,
                &rows.timeout_ms,
                &tx.now.0,
                &rows.parent_id,
                &rows.depth,
                &rows.traceparent,
                &rows.tracestate,
            ],
        )
        .await?;
    }
    Ok(out.into_iter().map(|s| s.expect("every entry answered")).collect())
}

impl<'j> Rows<'j> {
    fn add(&mut self, new: &'j NewJob, job: &Job, depth: i64) {
        self.id.push(job.id.0);
        self.queue.push(&new.queue);
        self.kind.push(new.kind.as_deref());
        self.payload.push(new.payload.get());
        self.grp.push(new.group.as_deref());
        self.priority.push(new.priority);
        self.state.push(job.state.code() as i16);
        self.max_attempts.push(job.max_attempts);
        self.run_at.push(job.run_at.0);
        self.timeout_ms.push(job.timeout_ms);
        self.parent_id.push(new.parent.map(|p| p.0));
        self.depth.push(depth);
        self.traceparent.push(new.trace.as_ref().map(|t| t.traceparent.as_str()));
        self.tracestate.push(new.trace.as_ref().and_then(|t| t.tracestate.as_deref()));
    }
}

/// The job a submit creates, with the queue's defaults applied (not yet inserted).
async fn prepare(tx: &mut Tx<'_>, new: &NewJob, id: i64) -> Result<Job, TxError> {
    let queue = tx.queue(&new.queue).await?;
    Ok(new.clone().into_job(JobId(id), &queue.config, tx.now))
}

/// Bookkeeping for a created job.
async fn created(tx: &mut Tx<'_>, job: &Job) -> Result<(), TxError> {
    tx.moved(&job.queue, None, Some(job.state));
    if job.state == JobState::Queued {
        if let Some(g) = &job.group {
            tx.touch_group(&job.queue, g);
        }
        tx.ready(&job.queue);
    }
    tx.changed(job);
    if job.state.is_terminal() {
        // Born ended (a dependency had failed): counted, and its parent told.
        tx.ended(job);
        super::lineage::on_ended(tx, job).await?;
    }
    Ok(())
}

/// Counts `n` new children of `parent` (its row locked by the update); returns their depth.
async fn adopt(tx: &mut Tx<'_>, parent: JobId, n: i64) -> Result<i64, TxError> {
    let row = tx
        .query_opt(
            "UPDATE jobs SET children_total = children_total + $2 WHERE id = $1 RETURNING state, depth, children_total",
            &[&parent.0, &n],
        )
        .await?;
    let Some(row) = row else {
        return Err(StoreError::Invalid(ValidationError::new("parent", format!("no job {parent}"))).into());
    };
    let state = state_of(row.try_get(0)?)?;
    let depth: i64 = row.try_get(1)?;
    let total: i64 = row.try_get(2)?;
    if state.is_terminal() {
        return Err(StoreError::WrongState { job: parent, state, action: "add children to" }.into());
    }
    if depth + 1 > MAX_DEPTH {
        let e = ValidationError::new("parent", format!("children nest at most {MAX_DEPTH} deep"));
        return Err(StoreError::Invalid(e).into());
    }
    if total > MAX_CHILDREN {
        let e = ValidationError::new("parent", format!("a job has at most {MAX_CHILDREN} children"));
        return Err(StoreError::Invalid(e).into());
    }
    Ok(depth + 1)
}

/// Locks the jobs `new` depends on (marking them as having dependents) and reads their states.
async fn dependencies(tx: &Tx<'_>, new: &NewJob) -> Result<Vec<(JobId, JobState)>, TxError> {
    if new.depends_on.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = new.depends_on.iter().map(|d| d.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            "UPDATE jobs SET links = links | $2 WHERE id IN (SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             RETURNING id, state",
            &[&ids, &(Links::DEPENDENTS as i16)],
        )
        .await?;
    let mut found = BTreeMap::new();
    for r in &rows {
        found.insert(r.try_get::<_, i64>(0)?, state_of(r.try_get(1)?)?);
    }
    let mut deps = Vec::with_capacity(found.len());
    for (i, id) in new.depends_on.iter().enumerate() {
        match found.get(&id.0) {
            Some(state) if !deps.iter().any(|(d, _)| d == id) => deps.push((*id, *state)),
            Some(_) => {}
            None => {
                let e = ValidationError::new(format!("depends_on[{i}]"), format!("no job {id}"));
                return Err(StoreError::Invalid(e).into());
            }
        }
    }
    Ok(deps)
}

/// Creates one job that needs more than the batch insert: a key (`None`: a concurrent submit of
/// the key won), dependencies, a parent counted alone.
async fn create(tx: &mut Tx<'_>, new: &NewJob, id: i64, keyed: bool) -> Result<Option<Job>, TxError> {
    let deps = dependencies(tx, new).await?;
    let depth = match new.parent {
        Some(p) => {
            let row = tx.query_opt("SELECT depth FROM jobs WHERE id = $1", &[&p.0]).await?;
            row.map(|r| r.try_get::<_, i64>(0)).transpose()?.map_or(0, |d| d + 1)
        }
        None => 0,
    };
    let mut job = prepare(tx, new, id).await?;
    let pending = lineage::start_after(&mut job, &deps, tx.now);
    if !insert(tx, &job, depth, pending, None, keyed).await? {
        return Ok(None);
    }
    if let Some(p) = new.parent {
        adopt(tx, p, 1).await?;
    }
    if pending > 0 {
        let waits: Vec<i64> = deps.iter().filter(|(_, s)| !s.is_terminal()).map(|(d, _)| d.0).collect();
        tx.execute(
            "INSERT INTO job_deps (dep_id, job_id) SELECT d, $2 FROM unnest($1::bigint[]) AS d ON CONFLICT DO NOTHING",
            &[&waits, &job.id.0],
        )
        .await?;
    }
    let job = super::load_job_locked(tx, job.id)
        .await?
        .ok_or_else(|| StoreError::Internal("submitted job vanished".into()))?;
    created(tx, &job).await?;
    Ok(Some(job))
}

/// Inserts one job; `false` when `keyed` and a live job holds its key (or, for a follow-up, one
/// already waits behind it).
async fn insert(
    tx: &Tx<'_>,
    job: &Job,
    depth: i64,
    deps_pending: i64,
    follow_key: Option<&str>,
    keyed: bool,
) -> Result<bool, TxError> {
    let deps = (!job.depends_on.is_empty())
        .then(|| serde_json::to_string(&job.depends_on.iter().map(|d| d.0).collect::<Vec<_>>()))
        .transpose()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let (error_kind, error_message, error_at) = match &job.error {
        Some(e) => (Some(e.kind.code() as i16), Some(e.message.as_str()), Some(e.at.0)),
        None => (None, None, None),
    };
    let conflict = match (keyed, follow_key) {
        (false, _) => "",
        (true, None) => {
            "ON CONFLICT (queue, key) WHERE key IS NOT NULL AND state < 3 AND NOT cancel_requested DO NOTHING"
        }
        (true, Some(_)) => {
            "ON CONFLICT (queue, follow_key) WHERE follow_key IS NOT NULL AND state = -1 DO NOTHING"
        }
    };
    let sql = format!(
        "INSERT INTO jobs (id, queue, kind, payload, key, grp, priority, state, max_attempts, run_at, created_at, \
         timeout_ms, parent_id, depth, deps, deps_pending, dep_failure, wait_for, follow_key, finished_at, \
         error_kind, error_message, error_at, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
         $22, $23, $24, $25) {conflict} RETURNING id"
    );
    let row = tx
        .query_opt(
            &sql,
            &[
                &job.id.0,
                &job.queue,
                &job.kind,
                &job.payload.get(),
                &if follow_key.is_some() { None } else { job.key.as_deref() },
                &job.group,
                &job.priority,
                &(job.state.code() as i16),
                &job.max_attempts,
                &job.run_at.0,
                &job.created_at.0,
                &job.timeout_ms,
                &job.parent.map(|p| p.0),
                &depth,
                &deps,
                &deps_pending,
                &(job.on_dependency_failure.code() as i16),
                &job.waiting_for.map(|w| w.code() as i16),
                &follow_key,
                &job.finished_at.map(|t| t.0),
                &error_kind,
                &error_message,
                &error_at,
                &job.trace.as_ref().map(|t| t.traceparent.as_str()),
                &job.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
            ],
        )
        .await?;
    Ok(row.is_some())
}

async fn submit_keyed(tx: &mut Tx<'_>, new: &NewJob, key: &str, id: i64) -> Result<Submitted, TxError> {
    let now = tx.now;
    for _ in 0..KEY_RACE_ROUNDS {
        let live = find_live(tx, &new.queue, key).await?;
        let queue = tx.queue(&new.queue).await?;
        let windows = KeyWindows {
            reuse_ms: new.reuse_for_ms.unwrap_or_else(|| queue.config.reuse_for_ms()),
            stale_ms: new.stale_for_ms.unwrap_or(0),
        };
        let recent = match windows.since(now) {
            Some(since) => find_recent_success(tx, &new.queue, key, since).await?,
            None => None,
        };
        match lineage::key_action(new, live, recent, windows, now) {
            KeyAction::Join(live) => return Ok(Submitted::existing(live)),
            KeyAction::Reject(live) => {
                return Err(StoreError::KeyConflict { key: key.to_owned(), job: live.id }.into());
            }
            KeyAction::Replace(live) => match replace(tx, live, new).await? {
                Some(done) => return Ok(done),
                // The job started or ended meanwhile: look again.
                None => continue,
            },
            KeyAction::FollowUp { holder } => match follow_up(tx, holder, new, key, id).await? {
                Some(done) => return Ok(done),
                None => continue,
            },
            KeyAction::Reuse(done) => return Ok(Submitted::existing(done)),
            KeyAction::Stale { done, live: Some(live) } => {
                return Ok(Submitted { job: done, created: false, refresh: Some(live) });
            }
            KeyAction::Stale { done, live: None } => {
                if let Some(job) = create(tx, new, id, true).await? {
                    return Ok(Submitted { job: done, created: false, refresh: Some(job.id) });
                }
            }
            KeyAction::Create => {
                if let Some(job) = create(tx, new, id, true).await? {
                    return Ok(Submitted::created(job));
                }
            }
        }
        // A concurrent submit of this key committed first: look again.
    }
    Err(StoreError::Unavailable(format!("key {key:?} kept changing hands; try again")).into())
}

/// `on_conflict: replace` (and a follow-up of a job not yet started): a scheduled or queued job
/// takes the new payload, run_at and priority; any other is joined unchanged. `None`: the job
/// left scheduled/queued between the look-up and the lock.
async fn replace(tx: &mut Tx<'_>, live: Job, new: &NewJob) -> Result<Option<Submitted>, TxError> {
    if !matches!(live.state, JobState::Scheduled | JobState::Queued) {
        return Ok(Some(Submitted::existing(live)));
    }
    let Some(row) = tx
        .query_opt(
            "SELECT state FROM jobs WHERE id = $1 AND state IN (0, 1) AND NOT cancel_requested FOR UPDATE",
            &[&live.id.0],
        )
        .await?
    else {
        return Ok(None);
    };
    let before = state_of(row.try_get(0)?)?;
    let now = tx.now;
    let run_at = new.run_at.unwrap_or(now);
    let state = lineage::ready_state(run_at, now);
    let job = update_returning(
        tx,
        &format!(
            "UPDATE jobs SET payload = $2, run_at = $3, priority = $4, state = $5, \
             kind = coalesce($6, kind) WHERE id = $1 RETURNING {JOB_COLS}"
        ),
        &[&live.id.0, &new.payload.get(), &run_at.0, &new.priority, &(state.code() as i16), &new.kind],
    )
    .await?;
    if before != state {
        tx.moved(&job.queue, Some(before), Some(state));
    }
    if let Some(g) = &job.group {
        tx.touch_group(&job.queue, g);
    }
    if state == JobState::Queued {
        tx.ready(&job.queue);
    }
    tx.changed(&job);
    Ok(Some(Submitted::existing(job)))
}

/// `on_conflict: follow_up` while the key's job runs: with that job locked (its end waits for
/// this), the one follow-up behind it takes the newest payload, or is created. `None`: the job
/// ended meanwhile, or a concurrent submit created the follow-up: look again.
async fn follow_up(
    tx: &mut Tx<'_>,
    holder: Job,
    new: &NewJob,
    key: &str,
    id: i64,
) -> Result<Option<Submitted>, TxError> {
    let locked = tx
        .query_opt(
            "UPDATE jobs SET links = links | $2 WHERE id = $1 AND state = 2 RETURNING id",
            &[&holder.id.0, &(Links::FOLLOW_UP as i16)],
        )
        .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let sql =
        format!("SELECT {JOB_COLS} FROM jobs WHERE queue = $1 AND follow_key = $2 AND state = -1 FOR UPDATE");
    if let Some(row) = tx.query_opt(&sql, &[&new.queue, &key]).await? {
        let next = job_from_row(&row)?;
        let job = update_returning(
            tx,
            &format!(
                "UPDATE jobs SET payload = $2, priority = $3, kind = coalesce($4, kind) WHERE id = $1 RETURNING {JOB_COLS}"
            ),
            &[&next.id.0, &new.payload.get(), &new.priority, &new.kind],
        )
        .await?;
        tx.changed(&job);
        return Ok(Some(Submitted::existing(job)));
    }
    let depth = match new.parent {
        Some(p) => adopt(tx, p, 1).await?,
        None => 0,
    };
    let mut job = prepare(tx, new, id).await?;
    job.state = JobState::Waiting;
    job.waiting_for = Some(WaitingFor::Key);
    if !insert(tx, &job, depth, 0, Some(key), true).await? {
        return Ok(None);
    }
    let job = super::load_job_locked(tx, job.id)
        .await?
        .ok_or_else(|| StoreError::Internal("follow-up vanished".into()))?;
    created(tx, &job).await?;
    Ok(Some(Submitted::created(job)))
}

/// The newest job with `key` that succeeded at or after `since`.
async fn find_recent_success(
    tx: &Tx<'_>,
    queue: &str,
    key: &str,
    since: Millis,
) -> Result<Option<Job>, TxError> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE key = $2 AND queue = $1 AND state = 3 \
         AND finished_at >= $3 ORDER BY id DESC LIMIT 1"
    );
    tx.query_opt(&sql, &[&queue, &key, &since.0]).await?.as_ref().map(job_from_row).transpose()
}
