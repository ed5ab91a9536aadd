-- Drove's schema, version 1. Runs with search_path set to the store's schema, inside one
-- transaction, under the migration advisory lock (see src/schema.rs).
--
-- States are small integers (JobState::code): 0 scheduled, 1 queued, 2 running, 3 succeeded,
-- 4 failed, 5 cancelled. Times are milliseconds since the epoch, given by the caller (never the
-- database's clock); GCRA times (tat) are microseconds.

-- Job ids and lease tokens come from sequences: both only grow, across every node.
CREATE SEQUENCE job_ids;
CREATE SEQUENCE lease_tokens;

CREATE TABLE jobs (
    id               bigint PRIMARY KEY,
    queue            text NOT NULL,
    kind             text,
    payload          text NOT NULL,
    key              text,
    grp              text,
    priority         bigint NOT NULL,
    state            smallint NOT NULL,
    attempt          bigint NOT NULL DEFAULT 0,
    max_attempts     bigint NOT NULL,
    -- true: the next claim uses no attempt (the last run was throttled, snoozed or released)
    free_run         boolean NOT NULL DEFAULT false,
    run_at           bigint NOT NULL,
    created_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    progress         text,
    checkpoint       text,
    result           text,
    error_kind       smallint,
    error_message    text,
    error_at         bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    partial          boolean NOT NULL DEFAULT false,
    timeout_ms       bigint,
    -- the current run (running only): fencing token, lease, deadline, and the earlier of the
    -- two, which is when the reaper ends the run
    lease            bigint,
    lease_ms         bigint,
    lease_expires_at bigint,
    deadline         bigint,
    reap_at          bigint,
    worker           text
);
-- claim: ready jobs without a group, priority then FIFO
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id) WHERE state = 1 AND grp IS NULL;
-- claim and group refresh: a group's ready jobs in claim order
CREATE INDEX jobs_group_ready ON jobs (queue, grp, priority DESC, id) WHERE state = 1 AND grp IS NOT NULL;
-- group refresh (running count) and listing by group
CREATE INDEX jobs_group ON jobs (queue, grp, state, id) WHERE grp IS NOT NULL;
-- promoter and reaper
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 0;
CREATE INDEX jobs_reap ON jobs (reap_at) WHERE state = 2;
-- one active job per key: the invariant of API.md "Keys", held by the database itself
CREATE UNIQUE INDEX jobs_key_live ON jobs (queue, key)
    WHERE key IS NOT NULL AND state < 3 AND NOT cancel_requested;
-- reuse of a recent success, listing by key
CREATE INDEX jobs_key ON jobs (key, id) WHERE key IS NOT NULL;
-- pruner (per queue, so each queue's reuse window is honoured) and recent-run statistics
CREATE INDEX jobs_finished ON jobs (queue, finished_at) WHERE state >= 3;
-- listing by queue and state, running counts under a queue's concurrency limit
CREATE INDEX jobs_queue_state ON jobs (queue, state, id);

-- A queue's settings (config: QueueConfig as JSON) with the few of them SQL needs as columns,
-- and its shared flow-control state: the GCRA time of its rate, a throttled hold, the adaptive
-- limit in force. A claim on a limited queue locks this row: that is what makes the queue's
-- limits hold across nodes.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    config     text NOT NULL DEFAULT '{}',
    pool       text,
    reuse_ms   bigint NOT NULL DEFAULT 0,
    group_cap  bigint,
    tat        bigint,
    held_until bigint,
    limit_now  bigint,
    created_at bigint NOT NULL
);
CREATE INDEX queues_pool ON queues (pool) WHERE pool IS NOT NULL;

-- Jobs per queue and state: a compacted base plus append-only deltas, so transitions of one
-- queue never wait on each other for a counter row (see the crate documentation).
CREATE TABLE queue_counts (
    queue text NOT NULL,
    state smallint NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE count_deltas (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    state smallint NOT NULL,
    n     bigint NOT NULL
);
CREATE INDEX count_deltas_queue ON count_deltas (queue);

-- Derived state of each group that has ready or running jobs (or rate state), recomputed from
-- the jobs table by refresh_groups() after every transition that touches the group. `open` =
-- has a ready head and is below group_concurrency, so a claim walks open groups in head order
-- and never scans the backlog of a busy group. A claim locks a group's row (SKIP LOCKED)
-- before taking its jobs: that is what makes group limits hold across nodes.
CREATE TABLE groups (
    queue         text NOT NULL,
    grp           text NOT NULL,
    head_priority bigint,
    head_id       bigint,
    running       bigint NOT NULL DEFAULT 0,
    open          boolean NOT NULL DEFAULT false,
    tat           bigint,
    held_until    bigint,
    PRIMARY KEY (queue, grp)
);
CREATE INDEX groups_open ON groups (queue, head_priority DESC, head_id) WHERE open;

CREATE TABLE pools (
    name      text PRIMARY KEY,
    config    text NOT NULL,
    limit_now bigint
);

-- Re-derives the rows of the given groups (sorted by the caller, so concurrent callers lock
-- them in one order), first applying a throttled hold or a new GCRA time when given.
--
-- Each group's row is locked before anything is read: in READ COMMITTED every statement of a
-- PL/pgSQL function takes a fresh snapshot, so the head and the running count below see every
-- transaction that changed the group and committed before this one got the lock. A row is
-- deleted once its group has no ready or running job and no rate state in force.
CREATE FUNCTION refresh_groups(
    p_queues text[],
    p_grps   text[],
    p_holds  bigint[],
    p_tats   bigint[],
    p_now    bigint
) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    i   integer;
    q   text;
    g   text;
    cap bigint;
    hp  bigint;
    hid bigint;
    n   bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_queues, 1), 0) LOOP
        q := p_queues[i];
        g := p_grps[i];
        LOOP
            PERFORM 1 FROM groups WHERE queue = q AND grp = g FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO groups (queue, grp) VALUES (q, g) ON CONFLICT DO NOTHING;
            EXIT WHEN FOUND;
        END LOOP;
        IF p_holds[i] IS NOT NULL THEN
            UPDATE groups SET held_until = greatest(coalesce(held_until, 0), p_holds[i])
                WHERE queue = q AND grp = g;
        END IF;
        IF p_tats[i] IS NOT NULL THEN
            UPDATE groups SET tat = p_tats[i] WHERE queue = q AND grp = g;
        END IF;
        SELECT group_cap INTO cap FROM queues WHERE name = q;
        SELECT priority, id INTO hp, hid FROM jobs
            WHERE queue = q AND grp = g AND state = 1 ORDER BY priority DESC, id LIMIT 1;
        -- Running jobs only matter against a cap, and never need counting past it.
        IF cap IS NULL THEN
            n := 0;
        ELSE
            SELECT count(*) INTO n FROM (
                SELECT 1 FROM jobs WHERE queue = q AND grp = g AND state = 2 LIMIT cap
            ) r;
        END IF;
        IF hid IS NULL AND n = 0 THEN
            DELETE FROM groups WHERE queue = q AND grp = g
                AND (tat IS NULL OR tat <= p_now * 1000)
                AND (held_until IS NULL OR held_until <= p_now);
            CONTINUE WHEN FOUND;
        END IF;
        UPDATE groups SET head_priority = hp, head_id = hid, running = n,
                open = (hid IS NOT NULL AND (cap IS NULL OR n < cap))
            WHERE queue = q AND grp = g;
    END LOOP;
END
$$;
