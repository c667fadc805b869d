"""Live revocation (docs/protocol.md, "Sessions end when their grants do"): a session ends
at its token's `exp` (token_expired, 4103); deactivating a user closes their sessions on
every node (auth_failed, 4102); a role change ends the subscriptions made under the old
role (`resync`, reason permissions_changed) and later subscribes get the new rights. Every
revocation is in the audit trail."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from sinal.domain.tokens import mint_token
from sinal.node.wiring import Node
from sinal.protocol import Connect, Error, ErrorCode, Resync, Subscribe, Subscribed, Welcome
from tests.realtime.edge_support import (
    USER,
    assert_refused,
    edge_config,
    expect_error,
    memory_session,
    read_until_closed,
    running_node,
    stub_hub,
)
from tests.realtime.realtime_support import SECRET, client, token_for


def set_user(db_url: str, user_id: str, **values: Any) -> None:
    columns = ", ".join(f"{name} = %s" for name in values)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"UPDATE users SET {columns} WHERE id = %s", (*values.values(), user_id))


def audit_rows(db_url: str, action: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT record_id, actor_id::text, details FROM audit_logs "
            "WHERE table_name = 'websocket' AND action = %s ORDER BY id", (action,)).fetchall()


async def test_a_session_ends_when_its_token_expires(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(edge_config())
    with trio.fail_after(1000):
        async with memory_session(hub) as (c, _):
            await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"],
                                                  ttl_seconds=45)))
            assert isinstance((await c.receive())[1], Welcome)
            opened = trio.current_time()
            await c.send(Subscribe(events=("supplier_changed",), ref="s"))
            assert isinstance((await c.receive())[1], Subscribed)
            got, closed = await c.receive_until_closed()
    assert closed.code == 4103 and closed.reason == "token_expired"
    # at `exp` (minted from the wall clock, which did not move: within a second of 45 s)
    assert closed.at - opened == pytest.approx(45, abs=1.5)
    assert [m.code for _, m in got if isinstance(m, Error)] == ["token_expired"]
    assert hub.active_connections == 0


async def test_deactivation_closes_the_users_sessions_on_every_node(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    carla = users["carla@sinal.dev"]
    async with running_node(db_url, nursery) as first, running_node(db_url, nursery) as second:
        async with client(first) as a, client(second) as b, client(second) as other:
            for c in (a, b):
                await c.connect(token_for(carla))
                await c.subscribe("purchase_request_changed")
            await other.connect(token_for(users["ana@sinal.dev"]))
            await trio.to_thread.run_sync(lambda: set_user(db_url, carla["id"],
                                                           is_active=False))
            for c in (a, b):
                assert_refused(await read_until_closed(c), ErrorCode.AUTH_FAILED)
            await other.subscribe("purchase_request_changed")  # the others are served
            # and the token no longer opens a session
            async with client(first) as again:
                await again.send(Connect(token=token_for(carla)))
                assert_refused(await read_until_closed(again), ErrorCode.AUTH_FAILED)
    for node in (first, second):
        assert node.audit is not None
        await node.audit.run_now()
    rows = await trio.to_thread.run_sync(audit_rows, db_url, "revoked")
    assert len(rows) == 2 and all(r[1] == carla["id"] for r in rows)
    assert {r[2]["reason"] for r in rows} == {"deactivated"}


async def test_a_role_change_narrows_the_session(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    elisa = users["elisa@sinal.dev"]  # approver_a3
    async with client(node) as c:
        await c.connect(token_for(elisa))
        await c.subscribe("approval_changed")
        await trio.to_thread.run_sync(lambda: set_user(db_url, elisa["id"], role="requester"))
        resync = await c.expect(Resync)
        assert (resync.topic, resync.reason) == ("approval_changed", "permissions_changed")
        await c.send(Subscribe(events=("approval_changed",), ref="again"))
        await expect_error(c, ErrorCode.FORBIDDEN, "again")  # a requester may not
        await c.subscribe("purchase_request_changed")  # what a requester may, it gets
    assert node.audit is not None
    await node.audit.run_now()
    rows = await trio.to_thread.run_sync(audit_rows, db_url, "revoked")
    assert [(r[1], r[2]["reason"], r[2]["role"]) for r in rows] == [
        (elisa["id"], "permissions_changed", "requester")]
    refused = await trio.to_thread.run_sync(audit_rows, db_url, "subscribe_refused")
    assert [(r[1], r[2]["code"], r[2]["topic"]) for r in refused] == [
        (elisa["id"], "forbidden", "approval_changed")]


async def test_refused_connects_are_audited(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    async with client(node) as c:
        await c.send(Connect(token=mint_token("x" * 40, users["ana@sinal.dev"]["id"],
                                              "requester")))
        assert_refused(await read_until_closed(c), ErrorCode.AUTH_FAILED)
    assert node.audit is not None
    await node.audit.run_now()
    rows = await trio.to_thread.run_sync(audit_rows, db_url, "auth_failed")
    assert len(rows) == 1
    record_id, actor, details = rows[0]
    assert actor is None and details["remote"] == "127.0.0.1"  # a forged claim is no actor
