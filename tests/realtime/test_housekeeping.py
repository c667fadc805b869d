"""Retention: old sequenced changes, delivered notifications, metrics and closed-socket rows
go; unsequenced changes, undelivered notifications and recent rows stay; a resume from
before the oldest kept change is answered with resync."""

from __future__ import annotations

from typing import Any

import psycopg

from sinal.actors.housekeeping import Housekeeping
from sinal.domain.changes import retained_since, sequence_changes
from sinal.domain.db import Database


async def test_sweep_keeps_what_must_stay(db_url: str, users: dict[str, Any]) -> None:
    ana = users["ana@sinal.dev"]["id"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(5):
            conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (f"old{i}",))
        head = sequence_changes(conn)
        conn.execute("UPDATE change_log SET changed_at = now() - interval '10 days' "
                     "WHERE position IS NOT NULL")
        conn.execute("INSERT INTO suppliers (name) VALUES ('new')")  # recent, unsequenced
        conn.execute(
            "INSERT INTO notifications (user_id, kind, message, delivered_at, created_at) "
            "VALUES (%s, 'k', 'delivered long ago', now() - interval '10 days', now()),"
            "       (%s, 'k', 'never delivered', NULL, now() - interval '10 days')", (ana, ana))
        conn.execute("INSERT INTO performance_metrics (metric_type, metric_value, recorded_at) "
                     "VALUES ('m', 1, now() - interval '10 days'), ('m', 2, now())")
        conn.execute("INSERT INTO websocket_connections (user_id, socket_id, disconnected_at) "
                     "VALUES (%s, 'gone', now() - interval '10 days'), (%s, 'open', NULL)",
                     (ana, ana))
    db = Database(db_url, max_size=2)
    db.open()
    try:
        keeper = Housekeeping(db, retention_hours=24 * 7, batch=2)  # batches of 2: loops
        counts = await keeper.sweep_once()
        assert await Housekeeping(db, retention_hours=0).sweep_once() == {}
    finally:
        db.close()
    assert counts["change_log"] >= 5 and counts["notifications"] == 1
    assert counts["performance_metrics"] == 1 and counts["websocket_connections"] == 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM change_log WHERE position IS NULL "
                            "AND topic = 'supplier_changed'").fetchone()
        messages = {r[0] for r in conn.execute("SELECT message FROM notifications")}
        sockets = {r[0] for r in conn.execute("SELECT socket_id FROM websocket_connections")}
        new_head = sequence_changes(conn)
        since = retained_since(conn)
    assert left == (1,)  # the unsequenced change was not touched
    assert messages == {"never delivered"} and sockets == {"open"}
    assert since >= head  # a resume from before this is past retention -> resync
    assert new_head > head
