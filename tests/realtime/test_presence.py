"""websocket_connections rows are written in batches: one flush per interval, never a
write per heartbeat."""

from __future__ import annotations

from typing import Any

import psycopg

from sinal.actors.presence import PresenceWriter
from sinal.domain.db import Database


async def test_connects_heartbeats_and_disconnects_are_batched(
        db_url: str, users: dict[str, Any]) -> None:
    db = Database(db_url, max_size=2)
    db.open()
    try:
        writer = PresenceWriter(db, "node-a", interval=3600)
        ana, carla = users["ana@sinal.dev"]["id"], users["carla@sinal.dev"]["id"]
        writer.connected("s1", ana, "test-agent", "127.0.0.1:5000")
        writer.connected("s2", carla, None, "[::1]:6000")
        writer.connected("s3", carla, None, "not-an-address")
        for _ in range(500):
            writer.heartbeat("s1")  # many heartbeats, one pending entry
        assert writer.pending == 4
        before = db.queries
        await writer.flush()
        assert db.queries - before == 1  # one round trip, one transaction
        writer.heartbeat("s1")
        writer.disconnected("s2")
        await writer.flush()
        writer.disconnected("s4-never-flushed")
        await writer.flush()
    finally:
        db.close()
    with psycopg.connect(db_url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT socket_id, user_id::text, node_id, ip_address::text, disconnected_at, "
            "last_heartbeat > connected_at FROM websocket_connections")}
    assert set(rows) == {"s1", "s2", "s3"}
    assert rows["s1"][0] == ana and rows["s1"][1] == "node-a"
    assert rows["s1"][2] == "127.0.0.1/32" and rows["s2"][2] == "::1/128"
    assert rows["s3"][2] is None  # a bad address is dropped, not the row
    assert rows["s2"][3] is not None and rows["s1"][3] is None
    assert rows["s1"][4] is True  # the heartbeat moved last_heartbeat


async def test_start_closes_rows_left_open_by_this_node(
        db_url: str, users: dict[str, Any]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO websocket_connections (user_id, socket_id, node_id) "
                     "VALUES (%s, 'old', 'node-b'), (%s, 'other', 'node-c')",
                     (users["ana@sinal.dev"]["id"], users["ana@sinal.dev"]["id"]))
    db = Database(db_url, max_size=2)
    db.open()
    try:
        await db.run(PresenceWriter(db, "node-b")._close_stale)
    finally:
        db.close()
    with psycopg.connect(db_url) as conn:
        open_rows = {r[0] for r in conn.execute(
            "SELECT socket_id FROM websocket_connections WHERE disconnected_at IS NULL")}
    assert open_rows == {"other"}
