-- Drove's schema, version 7: the W3C trace context a job's runs descend from (docs/API.md
-- "Traces"). Runs with search_path set to the store's schema, inside one transaction.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE jobs ADD COLUMN tracestate text;
