-- 005: notifications travel the change log too.
--
-- Every node derives notifications from the changes it reads (actors/notifications.py)
-- and inserts them with ON CONFLICT DO NOTHING on (user_id, kind, source_position): two
-- nodes reading the same change create one notification. The insert is captured into
-- change_log under the topic `notifications`, so every node's listener sees it and the
-- node holding the user's sockets delivers it: lossless, in order, resumable, like data.
-- Only inserts are captured: marking a notification delivered is not news.

ALTER TABLE notifications ADD COLUMN IF NOT EXISTS source_position BIGINT;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS sound BOOLEAN NOT NULL DEFAULT true;
-- false when the user's frequency is hourly/daily: kept for the next connect, not pushed
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS push BOOLEAN NOT NULL DEFAULT true;
CREATE UNIQUE INDEX IF NOT EXISTS idx_notifications_source
    ON notifications(user_id, kind, source_position);

DROP TRIGGER IF EXISTS notification_change_trigger ON notifications;
CREATE TRIGGER notification_change_trigger AFTER INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION sinal_capture_change('notifications');
