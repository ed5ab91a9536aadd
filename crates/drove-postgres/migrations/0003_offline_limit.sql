-- Drove's schema, version 3: an adaptive pool's offline limit (the downstream's capacity
-- estimate): its offline queues stop there, its online queues may use the whole limit. Runs
-- with search_path set to the store's schema, inside one transaction.

ALTER TABLE pools ADD COLUMN offline_limit bigint;
