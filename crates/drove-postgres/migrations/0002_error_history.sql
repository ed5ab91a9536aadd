-- Drove's schema, version 2: every run that ended in an error is kept in the job's history
-- (the newest 25), by a trigger, so no path that records an error can forget it. A statement
-- records a new error when it names `error_at` and changes the error or its time; the success
-- path names none of the error columns and never fires it. Runs with search_path set to the
-- store's schema, inside one transaction.

ALTER TABLE jobs ADD COLUMN errors text;

CREATE FUNCTION jobs_error_history() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    h jsonb;
BEGIN
    h := coalesce(NEW.errors, '[]')::jsonb || jsonb_build_array(jsonb_build_object(
        'attempt', NEW.attempt, 'kind', NEW.error_kind, 'message', NEW.error_message,
        'at', NEW.error_at));
    IF jsonb_array_length(h) > 25 THEN
        h := h - 0;
    END IF;
    NEW.errors := h::text;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_error_history BEFORE UPDATE OF error_at ON jobs
FOR EACH ROW
WHEN (NEW.error_at IS NOT NULL AND NEW.error_kind IS NOT NULL AND (
    NEW.error_at IS DISTINCT FROM OLD.error_at OR NEW.error_kind IS DISTINCT FROM OLD.error_kind
    OR NEW.error_message IS DISTINCT FROM OLD.error_message OR NEW.attempt IS DISTINCT FROM OLD.attempt))
EXECUTE FUNCTION jobs_error_history();
