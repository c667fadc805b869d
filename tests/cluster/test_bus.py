"""The cluster bus (Redis pub/sub): an administrator's broadcast reaches the connected users
of every node, by role; revocations announced by one node make another, whose listener has
not read the change yet, re-check at once; garbage on the channel disturbs nothing; Redis
away means this node only, and the answer and health say so. Real Redis, real PostgreSQL,
real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC
from typing import Any

import httpx
import pytest
import trio

from sinal.actors.bus import ClusterBus, parse_bus_message
from sinal.actors.sessions import SessionGuard
from sinal.domain.changes import Change
from sinal.node.embedded import free_port
from sinal.node.wiring import Node
from sinal.protocol import Broadcast, Encoding
from tests.cluster.test_cluster_presence import hub_with
from tests.realtime.realtime_support import (
    Client,
    client,
    node_config,
    token_for,
    users_of,
)

ADMIN, BUYER, REQUESTER = "admin@sinal.dev", "fabio@sinal.dev", "ana@sinal.dev"


async def start_node(nursery: trio.Nursery, db_url: str, node_id: str, **settings: str
                     ) -> Node:
    config = node_config(db_url, SINAL_NODE_ID=node_id, **settings)
    node: Node = await nursery.start(Node(config, db_url).run)
    return node


async def bus_ready(node: Node) -> None:
    """The node's bus has subscribed (a broadcast sent now reaches it)."""
    assert node.bus is not None
    with trio.fail_after(10):
        await node.bus.wait_subscribed()


@asynccontextmanager
async def logged_in(node: Node, user: dict[str, Any], encoding: Encoding = Encoding.MSGPACK
                    ) -> AsyncIterator[Client]:
    async with client(node, encoding) as c:
        await c.connect(token_for(user))
        yield c


async def post_broadcast(node: Node, user: dict[str, Any], body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        return await http.post("/api/admin/broadcasts", json=body,
                               headers={"Authorization": f"Bearer {token_for(user)}"})


async def test_a_broadcast_reaches_every_node_by_role(
        db_url: str, redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> None:
    users = users_of(db_url)
    redis = {"REDIS_URL": redis_url, "SINAL_REDIS_PREFIX": redis_prefix}
    a = await start_node(nursery, db_url, "bus-a", **redis)
    b = await start_node(nursery, db_url, "bus-b", **redis)
    await bus_ready(a)
    await bus_ready(b)
    async with AsyncExitStack() as stack:
        buyer_a = await stack.enter_async_context(logged_in(a, users[BUYER]))
        buyer_b = await stack.enter_async_context(logged_in(b, users[BUYER], Encoding.JSON))
        requester_b = await stack.enter_async_context(logged_in(b, users[REQUESTER]))

        only_buyers = await post_broadcast(a, users[ADMIN], {
            "message": "Cotações fecham às 18h", "level": "warning", "roles": ["buyer"]})
        assert only_buyers.status_code == 202, only_buyers.text
        sent = only_buyers.json()
        assert sent["scope"] == "cluster" and sent["processes"] == 2
        for socket in (buyer_a, buyer_b):
            got = await socket.expect(Broadcast)
            assert (got.id, got.message, got.level) == (
                sent["id"], "Cotações fecham às 18h", "warning")
            assert got.timestamp == sent["timestamp"]

        everyone = await post_broadcast(b, users[ADMIN], {"message": "Manutenção às 22h"})
        assert everyone.status_code == 202 and everyone.json()["scope"] == "cluster"
        # the requester's first broadcast is this one: the buyers-only one never came
        got = await requester_b.expect(Broadcast)
        assert (got.message, got.level) == ("Manutenção às 22h", "info")
        assert (await buyer_a.expect(Broadcast)).id == everyone.json()["id"]

    assert a.bus is not None and a.bus.rejected == 0
    # the audit trail says who sent what (written in batches by the audit writer)
    import psycopg

    def audit_rows() -> list[Any]:
        with psycopg.connect(db_url) as conn:
            return conn.execute(
                "SELECT actor_id::text, details FROM audit_logs "
                "WHERE table_name = 'http' AND action = 'broadcast' ORDER BY id").fetchall()

    with trio.fail_after(10):  # a periodic flush may hold a batch in flight: ask again
        while True:
            for node in (a, b):
                assert node.audit is not None
                await node.audit.flush()
            rows = await trio.to_thread.run_sync(audit_rows)
            if len(rows) >= 2:
                break
            await trio.sleep(0.05)
    assert rows[0][0] == users[ADMIN]["id"]
    assert rows[0][1]["roles"] == ["buyer"] and rows[0][1]["id"] == sent["id"]


@pytest.mark.parametrize("body, status, code", [
    ({"message": ""}, 422, "invalid_body"),
    ({"message": "   "}, 422, "invalid_body"),
    ({"message": "x" * 2001}, 422, "invalid_body"),
    ({"message": "hi", "level": "panic"}, 422, "invalid_body"),
    ({"message": "hi", "roles": ["king"]}, 422, "invalid_body"),
    ({"message": "hi", "to": "all"}, 422, "invalid_body"),
    ("not an object", 422, "invalid_body"),
])
async def test_a_bad_broadcast_is_refused_with_its_code(
        db_url: str, nursery: trio.Nursery, body: Any, status: int, code: str) -> None:
    users = users_of(db_url)
    node = await start_node(nursery, db_url, "bus-bad")
    response = await post_broadcast(node, users[ADMIN], body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_only_admins_broadcast(db_url: str, nursery: trio.Nursery) -> None:
    users = users_of(db_url)
    node = await start_node(nursery, db_url, "bus-403")
    async with logged_in(node, users[REQUESTER]) as requester:
        refused = await post_broadcast(node, users[BUYER], {"message": "hello"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        # nothing was sent: the next frame the requester gets is the admin's broadcast
        accepted = await post_broadcast(node, users[ADMIN], {"message": "from the admin"})
        assert accepted.status_code == 202
        assert (await requester.expect(Broadcast)).message == "from the admin"


async def test_without_redis_a_broadcast_reaches_this_node_and_says_so(
        db_url: str, nursery: trio.Nursery) -> None:
    users = users_of(db_url)
    node = await start_node(nursery, db_url, "bus-alone")
    assert node.bus is None
    async with logged_in(node, users[BUYER]) as buyer:
        response = await post_broadcast(node, users[ADMIN], {"message": "alone"})
        assert response.status_code == 202
        assert {k: response.json()[k] for k in ("scope", "processes", "sockets")} == {
            "scope": "node", "processes": 1, "sockets": 1}
        assert (await buyer.expect(Broadcast)).message == "alone"


async def test_with_redis_away_a_broadcast_stays_on_this_node_and_health_is_degraded(
        db_url: str, nursery: trio.Nursery) -> None:
    users = users_of(db_url)
    node = await start_node(nursery, db_url, "bus-away",
                            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert node.bus is not None and not node.bus.healthy
    assert node.cluster_state() == "degraded"
    async with logged_in(node, users[BUYER]) as buyer:
        response = await post_broadcast(node, users[ADMIN], {"message": "still here",
                                                             "level": "critical"})
        assert response.status_code == 202
        assert response.json()["scope"] == "node" and response.json()["sockets"] == 1
        got = await buyer.expect(Broadcast)
        assert (got.message, got.level) == ("still here", "critical")


class Rechecked:
    """A connection as the guard sees it: counts its re-checks."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.rechecks = 0

    def recheck(self) -> None:
        self.rechecks += 1


def user_change(user_id: str, position: int) -> Change:
    from datetime import datetime

    return Change(position=position, topic="user_changed", table="users", op="update",
                  row_id=user_id, new_row={"id": user_id, "is_active": False}, old_row=None,
                  changed={"is_active": False}, changed_at=datetime.now(UTC))


async def test_a_revocation_announced_by_another_node_is_acted_on_before_the_log_gets_here(
        redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> None:
    # node a's guard reads the change; node b's listener lags (has read up to 10 only)
    hub_a, hub_b = hub_with("rv-a"), hub_with("rv-b")
    conn = Rechecked("u1")
    hub_b.connections_by_user["u1"] = {conn}  # type: ignore[arg-type]
    guard_a, guard_b = SessionGuard(hub_a), SessionGuard(hub_b)
    bus_a = ClusterBus(hub_a, redis_url, prefix=redis_prefix, on_revoke=guard_a.revoke_early)
    bus_b = ClusterBus(hub_b, redis_url, prefix=redis_prefix, on_revoke=guard_b.revoke_early)
    guard_a.announce = bus_a.announce_revoke
    for part in (bus_a, bus_b):
        nursery.start_soon(part.run)
    await guard_b.handle([user_change("someone", 10)])
    with trio.fail_after(10):
        await bus_a.wait_subscribed()
        await bus_b.wait_subscribed()
        await guard_a.handle([user_change("u1", 42)])
        await bus_b.wait_received(1)
    assert conn.rechecks == 1  # at once, from the bus
    await guard_b.handle([user_change("u1", 42)])  # its listener gets there: done already
    assert conn.rechecks == 1
    # an announcement of a change this guard has read already changes nothing
    bus_b.deliver({"type": "revoke", "userId": "u1", "position": 41, "origin": "rv-a"})
    assert conn.rechecks == 1
    # a later revocation that the bus did not carry still comes through the log
    await guard_b.handle([user_change("u1", 50)])
    assert conn.rechecks == 2


async def test_garbage_on_the_channel_is_counted_and_ignored(
        redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> None:
    import redis

    hub = hub_with("junk")
    bus = ClusterBus(hub, redis_url, prefix=redis_prefix)
    nursery.start_soon(bus.run)
    with trio.fail_after(10):
        await bus.wait_subscribed()
    raw = redis.Redis.from_url(redis_url)
    junk: list[Any] = [b"\xff\xfe", b"[]", b"{}", json.dumps({"type": "broadcast"}),
                       json.dumps({"type": "revoke", "userId": 1, "position": 2, "origin": "x"}),
                       json.dumps({"type": "shutdown", "origin": "x"}), b"{" * 20_000]
    for item in junk:
        await trio.to_thread.run_sync(raw.publish, bus.channel, item)
    good = {"type": "broadcast", "id": "b1", "message": "ok", "level": "info",
            "timestamp": "2026-11-30T10:00:00Z", "roles": None, "origin": "x"}
    await trio.to_thread.run_sync(raw.publish, bus.channel, json.dumps(good))
    with trio.fail_after(10):
        await bus.wait_received(1)
    assert bus.rejected == len(junk) and bus.received == 1
    raw.close()


def test_parse_bus_message_takes_only_ours() -> None:
    ok = {"type": "revoke", "userId": "u", "position": 3, "origin": "n"}
    assert parse_bus_message(json.dumps(ok)) == ok
    assert parse_bus_message(json.dumps({**ok, "position": "3"})) is None
    assert parse_bus_message(json.dumps({**ok, "position": True})) is None
    assert parse_bus_message(json.dumps({k: v for k, v in ok.items() if k != "origin"})) is None
