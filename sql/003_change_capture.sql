-- 003: change capture, the sequencer, and the reader rule.
--
-- WRITE SIDE. An AFTER ROW trigger on every domain table inserts one change_log row in the
-- writer's own transaction (so the row exists exactly when the change commits) and sends
-- NOTIFY sinal_changes with the topic name as payload. NOTIFY only wakes listeners: it is
-- lost while nobody listens, folds duplicates and caps payloads at 8000 bytes, so nothing
-- is ever read from it.
--
-- THE READER RULE (never skips a committed change).
-- A plain "id > last" reader is wrong: identity values are taken when a row is inserted but
-- become visible when its transaction commits, and transactions commit out of order. A
-- reader that saw id 12 (committed) while id 11 was still in flight moves past 11 and never
-- sees it. Instead:
--   1. Committed change_log rows get a `position` from the sequencer, sinal_sequence_changes().
--      It runs under a row lock on change_log_head held until its commit, so sequencer
--      transactions are strictly serialised; each one numbers every committed, unnumbered
--      row it can see (ORDER BY id, so changes of one transaction keep their order) with the
--      contiguous range head+1 .. head+n and moves head to head+n.
--   2. Because a sequencer transaction only starts numbering after the previous one has
--      committed, every snapshot sees a prefix 1..H of positions: never H without H-1.
--   3. Readers (the listener, REST ?since=) read `position > last ORDER BY position`, with
--      sinal_changes_after(). Reading in that order from any snapshot therefore misses
--      nothing and repeats nothing; `last` is the client-visible offset.
-- A writer's row that is still in flight is simply not numbered yet; it gets a later
-- position when it commits. Rows of aborted transactions are never visible, never numbered.
-- tests/test_change_log_reader.py runs 8 concurrent writers against this rule and against
-- the naive reader, to show that the rule holds and that the naive reader loses changes.

CREATE TABLE IF NOT EXISTS change_log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    position  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO change_log_head (singleton, position) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION sinal_capture_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_j JSONB;
    old_j JSONB;
    diff  JSONB;
    prev  JSONB;
BEGIN
    IF TG_OP = 'INSERT' THEN
        new_j := to_jsonb(NEW);
        INSERT INTO change_log (topic, table_name, op, row_id, new_row)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'insert', new_j ->> 'id', new_j);
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
        INSERT INTO change_log (topic, table_name, op, row_id, new_row, old_row, changed)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'update', new_j ->> 'id', new_j, prev, diff);
    ELSE
        old_j := to_jsonb(OLD);
        INSERT INTO change_log (topic, table_name, op, row_id, old_row)
        VALUES (TG_ARGV[0], TG_TABLE_NAME, 'delete', old_j ->> 'id', old_j);
    END IF;
    PERFORM pg_notify('sinal_changes', TG_ARGV[0]);
    RETURN NULL;
END;
$$;

-- Keeps updated_at true when a writer forgets to set it.
CREATE OR REPLACE FUNCTION sinal_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- The sequencer. Returns the head position after this call. Safe to call from any number
-- of sessions and nodes at once: they queue on change_log_head's row lock.
CREATE OR REPLACE FUNCTION sinal_sequence_changes(max_rows INTEGER DEFAULT 10000) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    base BIGINT;
    n    BIGINT;
BEGIN
    SELECT position INTO base FROM change_log_head WHERE singleton FOR UPDATE;
    -- A new statement takes a new snapshot: it sees the previous sequencer's commit.
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS rn
          FROM (SELECT id FROM change_log WHERE position IS NULL ORDER BY id LIMIT max_rows) AS p
    )
    UPDATE change_log AS c SET position = base + pending.rn
      FROM pending WHERE c.id = pending.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE change_log_head SET position = base + n WHERE singleton;
        PERFORM pg_notify('sinal_positions', (base + n)::text);
    END IF;
    RETURN base + n;
END;
$$;

-- The reader rule's query: every sequenced change after a position, in position order.
CREATE OR REPLACE FUNCTION sinal_changes_after(
    after_position BIGINT, max_rows INTEGER DEFAULT 1000, topics TEXT[] DEFAULT NULL
) RETURNS SETOF change_log
LANGUAGE sql STABLE AS $$
    SELECT * FROM change_log
     WHERE position > after_position
       AND (topics IS NULL OR topic = ANY (topics))
     ORDER BY position
     LIMIT max_rows;
$$;

-- The oldest position still kept: a client resuming from before it must resync.
CREATE OR REPLACE FUNCTION sinal_retained_since() RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT coalesce(min(position) - 1, (SELECT position FROM change_log_head)) FROM change_log
     WHERE position IS NOT NULL;
$$;

-- Triggers: the seed's names (6.2) where it had them; topic names are the seed's
-- purchase_request_changed / quotation_changed and the same pattern for the other tables.
DO $$
DECLARE
    t RECORD;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('purchase_requests', 'purchase_request_change_trigger', 'purchase_request_changed'),
        ('quotations',        'quotation_change_trigger',        'quotation_changed'),
        ('approvals',         'approval_change_trigger',         'approval_changed'),
        ('purchase_orders',   'purchase_order_change_trigger',   'purchase_order_changed'),
        ('users',             'user_change_trigger',             'user_changed'),
        ('departments',       'department_change_trigger',       'department_changed'),
        ('suppliers',         'supplier_change_trigger',         'supplier_changed')
    ) AS v(tbl, trg, topic)
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.trg, t.tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION sinal_capture_change(%L)',
                       t.trg, t.tbl, t.topic);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.tbl || '_touch_updated_at', t.tbl);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION sinal_touch_updated_at()',
                       t.tbl || '_touch_updated_at', t.tbl);
    END LOOP;
END;
$$;
