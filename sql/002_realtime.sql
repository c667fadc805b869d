-- 002: realtime tables. The first four are the seed's (section 6.1), with the columns Sinal
-- adds noted; change_log is Sinal's lossless log of every domain change.

CREATE TABLE IF NOT EXISTS websocket_connections (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         UUID NOT NULL REFERENCES users(id),
    socket_id       VARCHAR(255) NOT NULL,
    connected_at    TIMESTAMPTZ DEFAULT NOW(),
    last_heartbeat  TIMESTAMPTZ DEFAULT NOW(),
    user_agent      TEXT,
    ip_address      INET,
    -- added by Sinal: which node holds the socket, and when it closed (NULL while open)
    node_id         TEXT,
    disconnected_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_websocket_user_id ON websocket_connections(user_id);
CREATE INDEX IF NOT EXISTS idx_websocket_socket_id ON websocket_connections(socket_id);

CREATE TABLE IF NOT EXISTS event_subscriptions (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users(id),
    event_type  VARCHAR(100) NOT NULL,
    filters     JSONB,
    created_at  TIMESTAMPTZ DEFAULT NOW(),
    is_active   BOOLEAN DEFAULT true
);
CREATE INDEX IF NOT EXISTS idx_event_subscriptions_user_event
    ON event_subscriptions(user_id, event_type);
CREATE INDEX IF NOT EXISTS idx_event_subscriptions_type
    ON event_subscriptions(event_type) WHERE is_active = true;

CREATE TABLE IF NOT EXISTS performance_metrics (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    metric_type   VARCHAR(50) NOT NULL,
    metric_value  DECIMAL(10, 2) NOT NULL,
    user_id       UUID REFERENCES users(id),
    recorded_at   TIMESTAMPTZ DEFAULT NOW(),
    metadata      JSONB
);
CREATE INDEX IF NOT EXISTS idx_performance_metrics_type_time
    ON performance_metrics(metric_type, recorded_at DESC);

CREATE TABLE IF NOT EXISTS cache_etags (
    resource_key  VARCHAR(255) PRIMARY KEY,
    etag          VARCHAR(64) NOT NULL,
    data_hash     VARCHAR(64) NOT NULL,
    last_modified TIMESTAMPTZ DEFAULT NOW(),
    expires_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_cache_etags_modified ON cache_etags(last_modified DESC);

-- Seed 4.2: notification preferences, one row per user.
CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id             UUID PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    events              TEXT[] NOT NULL DEFAULT '{}',
    frequency           TEXT NOT NULL DEFAULT 'immediate'
                          CHECK (frequency IN ('immediate', 'hourly', 'daily', 'off')),
    sound_enabled       BOOLEAN NOT NULL DEFAULT true,
    email_notifications BOOLEAN NOT NULL DEFAULT false,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Notifications kept for users (delivered at once when online, at next connect otherwise).
CREATE TABLE IF NOT EXISTS notifications (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    action       JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_notifications_undelivered
    ON notifications(user_id, id) WHERE delivered_at IS NULL;

-- The change log. A trigger writes one row per changed domain row in the writer's own
-- transaction (id, xid), position stays NULL; the sequencer (003) gives committed rows
-- their position. Readers only ever see and order by position: see 003 for the rule.
CREATE TABLE IF NOT EXISTS change_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position    BIGINT UNIQUE,
    xid         XID8 NOT NULL DEFAULT pg_current_xact_id(),
    topic       TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    row_id      TEXT NOT NULL,
    new_row     JSONB,            -- the row after the change; NULL for delete
    old_row     JSONB,            -- delete: the row before; update: old values of changed fields
    changed     JSONB,            -- update: changed fields -> new values; NULL otherwise
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- The sequencer's work list: tiny, only rows not yet given a position.
CREATE INDEX IF NOT EXISTS idx_change_log_unsequenced ON change_log(id) WHERE position IS NULL;
CREATE INDEX IF NOT EXISTS idx_change_log_topic_position ON change_log(topic, position);
