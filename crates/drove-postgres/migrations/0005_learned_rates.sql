-- Drove's schema, version 5: learned rates (drove_core::learned): the emission interval set by
-- the last cut, when, and how many cuts in a row followed a probe; per queue (its `rate`) and
-- per group (the queue's `group_rate`). Runs with search_path set to the store's schema, inside
-- one transaction.

ALTER TABLE queues ADD COLUMN learn_us bigint, ADD COLUMN learn_at bigint, ADD COLUMN learn_strikes bigint;
ALTER TABLE groups ADD COLUMN learn_us bigint, ADD COLUMN learn_at bigint, ADD COLUMN learn_strikes bigint;
