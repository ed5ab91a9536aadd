-- Drove's schema, version 6: jobs that wait on jobs, and schedules (drove_store::lineage,
-- drove_store::schedules). Runs with search_path set to the store's schema, inside one
-- transaction.
--
-- A new state code, -1 waiting, sits below the live codes so `state < 3` still means "holds its
-- key" and `state >= 3` "ended". A child names its parent and sits one level below it; a parent
-- counts its children as they end. A dependent keeps the ids it depends on (`deps`, for reading)
-- and how many it still waits for; `job_deps` finds a job's dependents by index when it ends. A
-- follow-up waits with its key in `follow_key` (at most one per key, by index) until the key's
-- running job ends. `wait_for`: 1 dependencies, 2 children, 3 the key's running job; `links`
-- bits: 1 has dependents, 2 has a follow-up; error kind 6: a dependency failed.

ALTER TABLE jobs
    ADD COLUMN parent_id bigint,
    ADD COLUMN depth bigint NOT NULL DEFAULT 0,
    ADD COLUMN deps text,
    ADD COLUMN deps_pending bigint NOT NULL DEFAULT 0,
    ADD COLUMN dep_failure smallint NOT NULL DEFAULT 0,
    ADD COLUMN wait_for smallint,
    ADD COLUMN follow_key text,
    ADD COLUMN links smallint NOT NULL DEFAULT 0,
    ADD COLUMN children_total bigint NOT NULL DEFAULT 0,
    ADD COLUMN children_succeeded bigint NOT NULL DEFAULT 0,
    ADD COLUMN children_partial bigint NOT NULL DEFAULT 0,
    ADD COLUMN children_failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN children_cancelled bigint NOT NULL DEFAULT 0,
    ADD COLUMN fan_in boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_parent ON jobs (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_operations ON jobs (id) WHERE children_total > 0;
CREATE UNIQUE INDEX jobs_follow_up ON jobs (queue, follow_key) WHERE follow_key IS NOT NULL AND state = -1;

CREATE TABLE job_deps (
    dep_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (dep_id, job_id)
);

-- A schedule's settings (ScheduleSpec as JSON), whether it is paused, the next tick it has not
-- enqueued, and its last enqueued tick and job. A pass locks due rows FOR UPDATE SKIP LOCKED and
-- moves next_at with a compare-and-set in the transaction that creates the tick's job.
CREATE TABLE schedules (
    name       text PRIMARY KEY,
    spec       text NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    next_at    bigint,
    last_tick  bigint,
    last_job   bigint,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_at) WHERE NOT paused;
