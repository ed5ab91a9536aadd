//! The schema, versioned by `PRAGMA user_version`. Each migration runs once, in order, in the
//! same transaction as the version bump.
//!
//! States are small integers (`JobState::code`, pinned by a test): -1 waiting, 0 scheduled,
//! 1 queued, 2 running, 3 succeeded, 4 failed, 5 cancelled, so `state < 3` is "live" (holds its
//! key) and `state >= 3` "ended" (`queue_counts` also keeps 6: succeeded and partial). Error
//! kinds (`ErrorKind::code`): 0 retryable, 1 permanent, 2 throttled, 3 timeout, 4 lost,
//! 5 transient, 6 dependency. `wait_for` (`WaitingFor::code`): 1 dependencies, 2 children,
//! 3 the key's running job; `links` bits: 1 has dependents, 2 has a follow-up. Times are milliseconds since the epoch; GCRA times
//! (`tat`) are microseconds.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (k, v) VALUES ('next_id', 1), ('next_lease', 1);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT NOT NULL,
    kind             TEXT,
    payload          TEXT NOT NULL,
    key              TEXT,
    grp              TEXT,
    priority         INTEGER NOT NULL,
    state            INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    -- 1: the next claim uses no attempt (the last run was throttled, snoozed or released)
    free_run         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    progress         TEXT,
    checkpoint       TEXT,
    result           TEXT,
    error_kind       INTEGER,
    error_message    TEXT,
    error_at         INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    partial          INTEGER NOT NULL DEFAULT 0,
    timeout_ms       INTEGER,
    -- the current run (running only): fencing token, lease, deadline, and the earlier of the
    -- two, which is when the reaper ends the run
    lease            INTEGER,
    lease_ms         INTEGER,
    lease_expires_at INTEGER,
    deadline         INTEGER,
    reap_at          INTEGER,
    worker           TEXT
);
-- claim: ready jobs without a group, priority then FIFO
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id) WHERE state = 1 AND grp IS NULL;
-- groups: a group's ready head, its running count, listing by group
CREATE INDEX jobs_group ON jobs (queue, grp, state, priority DESC, id) WHERE grp IS NOT NULL;
-- promoter and reaper
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 0;
CREATE INDEX jobs_reap ON jobs (reap_at) WHERE state = 2;
-- one active job per key: the invariant of API.md "Keys", held by the database itself
CREATE UNIQUE INDEX jobs_key_live ON jobs (queue, key)
    WHERE key IS NOT NULL AND state < 3 AND cancel_requested = 0;
-- reuse of a recent success, listing by key
CREATE INDEX jobs_key ON jobs (key, id) WHERE key IS NOT NULL;
-- pruner (per queue, so each queue's reuse window is honoured) and recent-run statistics
CREATE INDEX jobs_finished ON jobs (queue, finished_at) WHERE state >= 3;
-- listing by queue and state, running counts
CREATE INDEX jobs_queue_state ON jobs (queue, state, id);

CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    reuse_ms   INTEGER NOT NULL DEFAULT 0,
    tat        INTEGER,
    held_until INTEGER,
    limit_now  INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE queue_counts (
    queue TEXT NOT NULL,
    state INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

-- Derived state of each group that has ready or running jobs (or rate state), recomputed from
-- the jobs table after every transition that touches the group. `open` = has a ready head and
-- is below group_concurrency, so a claim walks open groups in head order and never scans the
-- backlog of a busy group.
CREATE TABLE groups (
    queue         TEXT NOT NULL,
    grp           TEXT NOT NULL,
    head_priority INTEGER,
    head_id       INTEGER,
    running       INTEGER NOT NULL DEFAULT 0,
    open          INTEGER NOT NULL DEFAULT 0,
    tat           INTEGER,
    held_until    INTEGER,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;
CREATE INDEX groups_open ON groups (queue, head_priority DESC, head_id) WHERE open = 1;

CREATE TABLE pools (
    name      TEXT PRIMARY KEY,
    config    TEXT NOT NULL,
    limit_now INTEGER
) WITHOUT ROWID;
"#,
    // 2: every run that ended in an error is kept in the job's history (the newest 25), by a
    // trigger, so no path that records an error can forget it. A statement records a new error
    // when it names `error_at` and changes the error or its time; the success path names none of
    // the error columns and never fires it.
    r#"
ALTER TABLE jobs ADD COLUMN errors TEXT;
CREATE TRIGGER jobs_error_history AFTER UPDATE OF error_at ON jobs
WHEN NEW.error_at IS NOT NULL AND NEW.error_kind IS NOT NULL AND (
    NEW.error_at IS NOT OLD.error_at OR NEW.error_kind IS NOT OLD.error_kind
    OR NEW.error_message IS NOT OLD.error_message OR NEW.attempt IS NOT OLD.attempt)
BEGIN
    UPDATE jobs SET errors = json_insert(coalesce(errors, '[]'), '$[#]', json_object(
        'attempt', NEW.attempt, 'kind', NEW.error_kind, 'message', NEW.error_message,
        'at', NEW.error_at))
    WHERE id = NEW.id;
    UPDATE jobs SET errors = json_remove(errors, '$[0]')
    WHERE id = NEW.id AND json_array_length(errors) > 25;
END;
"#,
    // 3: an adaptive pool's offline limit (the downstream's capacity estimate): its offline
    // queues stop there, its online queues may use the whole limit.
    r#"
ALTER TABLE pools ADD COLUMN offline_limit INTEGER;
"#,
    // 4: transient failures (a count per job, and the streak since the job last used an
    // attempt, which the transient budget is spent against); partial successes counted apart
    // (`queue_counts` state 6: succeeded and partial); and the outcomes of ended runs per queue
    // and minute, kept past the jobs' retention, for the operations view's windows. `kind` is
    // the error kind of a failed or cancelled job, -1 for none.
    r#"
ALTER TABLE jobs ADD COLUMN transient_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN transient_streak INTEGER NOT NULL DEFAULT 0;
INSERT INTO queue_counts (queue, state, n)
    SELECT queue, 6, count(*) FROM jobs WHERE state = 3 AND partial = 1 GROUP BY queue;
CREATE TABLE outcomes (
    queue   TEXT NOT NULL,
    minute  INTEGER NOT NULL,
    state   INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (queue, minute, state, partial, kind)
) WITHOUT ROWID;
CREATE INDEX outcomes_minute ON outcomes (minute);
INSERT INTO outcomes (queue, minute, state, partial, kind, n)
    SELECT queue, finished_at / 60000, state, partial,
           CASE WHEN state = 3 THEN -1 ELSE coalesce(error_kind, -1) END, count(*)
    FROM jobs WHERE state >= 3 AND finished_at IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5;
"#,
    // 5: learned rates (`drove_core::learned`): the emission interval set by the last cut, when,
    // and how many cuts in a row followed a probe; per queue (its `rate`) and per group (the
    // queue's `group_rate`).
    r#"
ALTER TABLE queues ADD COLUMN learn_us INTEGER;
ALTER TABLE queues ADD COLUMN learn_at INTEGER;
ALTER TABLE queues ADD COLUMN learn_strikes INTEGER;
ALTER TABLE groups ADD COLUMN learn_us INTEGER;
ALTER TABLE groups ADD COLUMN learn_at INTEGER;
ALTER TABLE groups ADD COLUMN learn_strikes INTEGER;
"#,
    // 6: jobs that wait on jobs, and schedules (drove_store::lineage, drove_store::schedules).
    // A child names its parent and sits one level below it; a parent counts its children as
    // they end. A dependent keeps the ids it depends on (`deps`, for reading) and how many it
    // still waits for; `job_deps` finds a job's dependents by index when it ends. A follow-up
    // waits with its key in `follow_key` (at most one per key, by index) until the key's
    // running job ends. Schedules keep their settings as JSON and the next tick not enqueued.
    r#"
ALTER TABLE jobs ADD COLUMN parent_id INTEGER;
ALTER TABLE jobs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN deps TEXT;
ALTER TABLE jobs ADD COLUMN deps_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN dep_failure INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN wait_for INTEGER;
ALTER TABLE jobs ADD COLUMN follow_key TEXT;
ALTER TABLE jobs ADD COLUMN links INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN children_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN children_succeeded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN children_partial INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN children_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN children_cancelled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN fan_in INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_parent ON jobs (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_operations ON jobs (id) WHERE children_total > 0;
CREATE UNIQUE INDEX jobs_follow_up ON jobs (queue, follow_key) WHERE follow_key IS NOT NULL AND state = -1;
CREATE TABLE job_deps (
    dep_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (dep_id, job_id)
) WITHOUT ROWID;
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER,
    last_tick  INTEGER,
    last_job   INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_at) WHERE paused = 0;
"#,
    // 7: the W3C trace context a job's runs descend from (docs/API.md "Traces").
    r#"
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
ALTER TABLE jobs ADD COLUMN tracestate TEXT;
"#,
];

/// Brings the schema up to date. Safe to call on every open.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_every_older_version_upgrades_keeping_its_rows() {
        for from in 1..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = Connection::open(dir.path().join("old.db")).unwrap();
            for (i, sql) in MIGRATIONS.iter().enumerate().take(from) {
                conn.execute_batch(sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).unwrap();
            }
            conn.execute("INSERT INTO pools (name, config, limit_now) VALUES ('api', '{}', 4)", []).unwrap();
            migrate(&mut conn).unwrap();
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64, "from version {from}");
            let row: (String, Option<i64>, Option<i64>) = conn
                .query_row("SELECT config, limit_now, offline_limit FROM pools WHERE name = 'api'", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            assert_eq!(row, ("{}".to_owned(), Some(4), None), "from version {from}");
            // Running it again changes nothing.
            migrate(&mut conn).unwrap();
        }
    }
}
