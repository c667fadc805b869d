-- 004: the seed's indexes (section 6.3), as PostgreSQL accepts them.
--
-- * CREATE INDEX CONCURRENTLY cannot run inside a transaction block, and every migration
--   runs in one (so a failed migration leaves nothing half-done). The indexes below are
--   created plainly: on a new database the tables are empty and it takes milliseconds. On a
--   large live database an operator may create them beforehand with CONCURRENTLY under the
--   same names; IF NOT EXISTS then makes this migration a no-op for them.
-- * Index predicates must be IMMUTABLE, so `WHERE created_at > NOW() - INTERVAL '1 hour'`
--   and `WHERE last_heartbeat > NOW() - INTERVAL '5 minutes'` are rejected ("functions in
--   index predicate must be marked IMMUTABLE"). A time window moves; an index cannot. In
--   their place: a full b-tree on the same columns (a range scan on created_at DESC /
--   last_heartbeat DESC serves "the last hour" just as well), and for live sockets a
--   partial index on the immutable fact "still open" (disconnected_at IS NULL).

CREATE INDEX IF NOT EXISTS idx_purchase_requests_status_updated
    ON purchase_requests(status, updated_at DESC)
    WHERE status IN ('pending_a1', 'pending_a2', 'pending_a3');

CREATE INDEX IF NOT EXISTS idx_quotations_active
    ON quotations(purchase_request_id, created_at DESC)
    WHERE status = 'active';

-- seed: idx_audit_logs_realtime ... WHERE created_at > NOW() - INTERVAL '1 hour'
CREATE INDEX IF NOT EXISTS idx_audit_logs_realtime
    ON audit_logs(table_name, created_at DESC);

-- seed: idx_websocket_active ... WHERE last_heartbeat > NOW() - INTERVAL '5 minutes'
CREATE INDEX IF NOT EXISTS idx_websocket_active
    ON websocket_connections(user_id, last_heartbeat DESC)
    WHERE disconnected_at IS NULL;
