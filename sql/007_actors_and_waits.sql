-- 007: who made each change, the request each change belongs to, and when a request
-- began waiting at its approval level.
--
-- WHO. A writer that knows its user says so inside its transaction:
--     SELECT set_config('sinal.actor', '<user id>', true)     -- i.e. SET LOCAL sinal.actor
-- (domain/workflow.py does it for every REST write and `sinal simulate`). The capture
-- trigger copies the setting into change_log.actor_id. It is local to the transaction, so
-- it never leaks into another one on a pooled connection; a writer that does not set it
-- (psql, another application) leaves actor_id NULL: "unknown". It is text, not a foreign
-- key: the trigger must never fail a writer's transaction over a bad setting, and the
-- history of a deleted user must stay readable.
--
-- WHICH REQUEST. GET /api/purchase-requests/<id>/history reads the changes of a request
-- and of its approvals, quotations and orders. sinal_request_of() names the request a
-- change belongs to: the row itself for purchase_requests, its purchase_request_id for
-- the children, taken from the row after the change, or for a delete from the row before
-- it (a deleted quotation still shows in its request's history). The partial expression
-- index finds a request's changes in position order without scanning the log.
--
-- WAITING. purchase_requests.status_changed_at is when the request entered its current
-- status (set on insert and on every status change, by trigger, whoever writes), and
-- approvals.waiting_since is when the request began waiting at the approval's level: the
-- request's status_changed_at when the decision is inserted (the workflow inserts the
-- approval before it moves the status on). An approval's wait is decided_at -
-- waiting_since; the dashboard averages it per level (domain/aggregates.py). Rows that
-- existed before this migration have NULL there and are left out of the averages.

ALTER TABLE change_log ADD COLUMN IF NOT EXISTS actor_id TEXT;

CREATE OR REPLACE FUNCTION sinal_capture_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_j JSONB;
    old_j JSONB;
    diff  JSONB;
    prev  JSONB;
    actor TEXT := NULLIF(current_setting('sinal.actor', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        new_j := to_jsonb(NEW);
        INSERT INTO change_log (topic, table_name, op, row_id, new_row, actor_id)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'insert', new_j ->> 'id', new_j, actor);
    ELSIF TG_OP = 'UPDATE' THEN
        new_j := to_jsonb(NEW);
        old_j := to_jsonb(OLD);
        SELECT jsonb_object_agg(n.key, n.value), jsonb_object_agg(n.key, old_j -> n.key)
          INTO diff, prev
          FROM jsonb_each(new_j) AS n
         WHERE n.value IS DISTINCT FROM old_j -> n.key;
        -- An update that changes nothing, or nothing but updated_at, is not a change.
        IF diff IS NULL OR (diff - 'updated_at') = '{}'::jsonb THEN
            RETURN NULL;
        END IF;
        INSERT INTO change_log (topic, table_name, op, row_id, new_row, old_row, changed,
                                actor_id)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'update', new_j ->> 'id', new_j, prev, diff, actor);
    ELSE
        old_j := to_jsonb(OLD);
        INSERT INTO change_log (topic, table_name, op, row_id, old_row, actor_id)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'delete', old_j ->> 'id', old_j, actor);
    END IF;
    PERFORM pg_notify('sinal_changes', TG_ARGV[0]);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION sinal_request_of(tbl TEXT, row_id TEXT, new_row JSONB, old_row JSONB)
RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN tbl = 'purchase_requests' THEN row_id
                ELSE coalesce(new_row ->> 'purchase_request_id',
                              old_row ->> 'purchase_request_id') END;
$$;

CREATE INDEX IF NOT EXISTS idx_change_log_request
    ON change_log (sinal_request_of(table_name, row_id, new_row, old_row), position)
    WHERE table_name IN ('purchase_requests', 'approvals', 'quotations', 'purchase_orders');

ALTER TABLE purchase_requests ADD COLUMN IF NOT EXISTS status_changed_at TIMESTAMPTZ;
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS waiting_since TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION sinal_status_changed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.status_changed_at := coalesce(NEW.status_changed_at, now());
    ELSIF NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status_changed_at IS NOT DISTINCT FROM OLD.status_changed_at THEN
        NEW.status_changed_at := now();
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS purchase_requests_status_changed_at ON purchase_requests;
CREATE TRIGGER purchase_requests_status_changed_at
    BEFORE INSERT OR UPDATE ON purchase_requests
    FOR EACH ROW EXECUTE FUNCTION sinal_status_changed_at();

CREATE OR REPLACE FUNCTION sinal_approval_waiting_since() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.waiting_since IS NULL THEN
        SELECT r.status_changed_at INTO NEW.waiting_since
          FROM purchase_requests AS r WHERE r.id = NEW.purchase_request_id;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS approvals_waiting_since ON approvals;
CREATE TRIGGER approvals_waiting_since
    BEFORE INSERT ON approvals
    FOR EACH ROW EXECUTE FUNCTION sinal_approval_waiting_since();
