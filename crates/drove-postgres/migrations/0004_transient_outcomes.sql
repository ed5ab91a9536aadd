-- Drove's schema, version 4: transient failures (a count per job, and the streak since the job
-- last used an attempt, which the transient budget is spent against); partial successes counted
-- apart (count state 6: succeeded and partial); and the outcomes of ended runs per queue and
-- minute, kept past the jobs' retention, for the operations view's windows: a compacted base
-- plus append-only deltas, like the counts. `kind` is the error kind of a failed or cancelled
-- job, -1 for none. Runs with search_path set to the store's schema, inside one transaction.

ALTER TABLE jobs ADD COLUMN transient_retries bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN transient_streak bigint NOT NULL DEFAULT 0;

INSERT INTO count_deltas (queue, state, n)
    SELECT queue, 6, count(*) FROM jobs WHERE state = 3 AND partial GROUP BY queue;

CREATE TABLE outcomes (
    queue   text NOT NULL,
    minute  bigint NOT NULL,
    state   smallint NOT NULL,
    partial boolean NOT NULL,
    kind    smallint NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (queue, minute, state, partial, kind)
);
CREATE INDEX outcomes_minute ON outcomes (minute);
CREATE TABLE outcome_deltas (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue   text NOT NULL,
    minute  bigint NOT NULL,
    state   smallint NOT NULL,
    partial boolean NOT NULL,
    kind    smallint NOT NULL,
    n       bigint NOT NULL
);

INSERT INTO outcomes (queue, minute, state, partial, kind, n)
    SELECT queue, floor(finished_at / 60000.0)::bigint, state, partial,
           CASE WHEN state = 3 THEN -1 ELSE coalesce(error_kind, -1) END, count(*)
    FROM jobs WHERE state >= 3 AND finished_at IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5;
