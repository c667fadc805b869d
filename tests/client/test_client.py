"""The Python client keeps a cache equal to the database through disconnects, resyncs and
a WebSocket that cannot be opened at all (REST polling)."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from sinal.client.sinal_client import SinalClient
from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request, decide
from sinal.node.embedded import free_port
from sinal.node.wiring import Node
from tests.realtime.realtime_support import token_for

TOPIC = "purchase_request_changed"


def db_rows(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        return {str(r[0]): r[1] for r in conn.execute("SELECT id, status FROM purchase_requests")}


def cache_view(client: SinalClient) -> dict[str, str]:
    return {k: v["status"] for k, v in client.cache.get(TOPIC, {}).items()}


def write(db_url: str, users: dict[str, Any], n: int, tag: str) -> None:
    ana, carla = users["ana@sinal.dev"], users["carla@sinal.dev"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(n):
            req = create_request(conn, Principal(ana["id"], "requester", ana["department_id"]),
                                 title=f"{tag}{i}", amount=i, submit=True)
            if i % 2:
                decide(conn, Principal(carla["id"], "approver_a1"), str(req["id"]), "approved")
        conn.execute("DELETE FROM purchase_requests WHERE title = %s", (f"{tag}0",))


async def test_cache_follows_the_database_across_a_dropped_socket(
        node: Node, users: dict[str, Any], db_url: str, nursery: trio.Nursery) -> None:
    await trio.to_thread.run_sync(write, db_url, users, 5, "before")
    client = SinalClient(node.http_url, node.websocket_url, token_for(users["admin@sinal.dev"]),
                         [TOPIC], backoff_base=0.01, poll_interval=0.05)
    await nursery.start(client.run)
    assert cache_view(client) == await trio.to_thread.run_sync(db_rows, db_url)
    with trio.fail_after(20):
        await client.wait_until(lambda c: c.connected)
        await trio.to_thread.run_sync(write, db_url, users, 10, "live")
        truth = await trio.to_thread.run_sync(db_rows, db_url)
        await client.wait_until(lambda c: cache_view(c) == truth)
        # the server drops every socket; changes made meanwhile must not be lost
        assert node.hub is not None
        for conns in list(node.hub.connections_by_user.values()):
            for conn in list(conns):
                await conn.ws.close(1012, "restart")
        await trio.to_thread.run_sync(write, db_url, users, 10, "away")
        truth = await trio.to_thread.run_sync(db_rows, db_url)
        await client.wait_until(lambda c: cache_view(c) == truth and c.connects >= 2)
    assert client.refetches == 1  # resumed from offsets, never refetched


async def test_rest_polling_keeps_the_cache_when_no_socket_opens(
        node: Node, users: dict[str, Any], db_url: str, nursery: trio.Nursery) -> None:
    dead_ws = f"ws://127.0.0.1:{free_port()}/ws"
    client = SinalClient(node.http_url, dead_ws, token_for(users["admin@sinal.dev"]), [TOPIC],
                         backoff_base=0.05, backoff_cap=0.2, poll_interval=0.02)
    await nursery.start(client.run)
    with trio.fail_after(20):
        await trio.to_thread.run_sync(write, db_url, users, 6, "polled")
        truth = await trio.to_thread.run_sync(db_rows, db_url)
        await client.wait_until(lambda c: cache_view(c) == truth)
    assert client.connects == 0 and client.polls > 0
