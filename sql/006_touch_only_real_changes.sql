-- 006: updated_at moves only when something else changed.
-- 003's sinal_touch_updated_at bumped updated_at on an UPDATE that changed nothing, while
-- the capture trigger (rightly) logs no change for it: a REST snapshot would then show an
-- updated_at that no delta or data_update ever carried. A no-op update now stays a no-op.

CREATE OR REPLACE FUNCTION sinal_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) = to_jsonb(OLD) THEN
        RETURN NEW;  -- nothing changed: nothing to stamp
    END IF;
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;
