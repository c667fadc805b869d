"""Notifications: raised from changes, pushed to online users, kept for offline ones,
shaped by preferences."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from sinal.domain.principals import Principal
from sinal.domain.workflow import add_quotation, create_request, decide
from sinal.node.wiring import Node
from sinal.protocol import Notification
from tests.realtime.realtime_support import Client, client, token_for


def actor(user: dict[str, Any]) -> Principal:
    return Principal(user["id"], user["role"], user["department_id"])


async def next_notification(c: Client, timeout: float = 20) -> Notification:
    with trio.fail_after(timeout):
        while True:
            message = await c.recv(timeout)
            if isinstance(message, Notification):
                return message


async def test_approver_is_notified_when_a_request_reaches_their_level(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    ana, carla, diego = users["ana@sinal.dev"], users["carla@sinal.dev"], users["diego@sinal.dev"]
    async with client(node) as c_carla, client(node) as c_diego:
        await c_carla.connect(token_for(carla))
        await c_diego.connect(token_for(diego))

        def submit() -> str:
            with psycopg.connect(db_url, autocommit=True) as conn:
                return str(create_request(conn, actor(ana), title="Toner", amount=350,
                                          submit=True)["id"])

        request_id = await trio.to_thread.run_sync(submit)
        note = await next_notification(c_carla)
        assert note.kind == "approval_required" and "nível 1" in note.message
        assert note.action is not None and note.action["id"] == request_id
        assert note.offset is not None and note.sound is True

        def approve_a1() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                decide(conn, actor(carla), request_id, "approved")

        await trio.to_thread.run_sync(approve_a1)
        note2 = await next_notification(c_diego)  # level 2 is next
        assert note2.kind == "approval_required" and "nível 2" in note2.message


async def test_offline_user_gets_kept_notifications_at_next_connect_once(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    ana = users["ana@sinal.dev"]
    approvers = [users[e] for e in ("carla@sinal.dev", "diego@sinal.dev", "elisa@sinal.dev")]

    def approve_all_levels() -> None:  # ana is offline throughout
        with psycopg.connect(db_url, autocommit=True) as conn:
            req = create_request(conn, actor(ana), title="Mesa", amount=800, submit=True)
            for approver in approvers:
                decide(conn, actor(approver), str(req["id"]), "approved")

    await trio.to_thread.run_sync(approve_all_levels)

    def wait_created() -> int:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT count(*) FROM notifications WHERE user_id = %s "
                               "AND kind = 'purchase_request_approved'", (ana["id"],)).fetchone()
            return int(row[0]) if row else 0

    assert node.listener is not None
    with trio.fail_after(20):
        while await trio.to_thread.run_sync(wait_created) == 0:
            await node.hub.topics["notifications"].wait_head(node.listener.position + 1)
    async with client(node) as c:
        await c.connect(token_for(ana))
        note = await next_notification(c)
    assert note.kind == "purchase_request_approved" and "Mesa" in note.message
    # delivered: the next connect does not repeat it
    with psycopg.connect(db_url) as conn:
        undelivered = conn.execute("SELECT count(*) FROM notifications WHERE user_id = %s "
                                   "AND delivered_at IS NULL", (ana["id"],)).fetchone()
    assert undelivered == (0,)
    async with client(node) as c:
        await c.connect(token_for(ana))
        # kept notifications are queued right after welcome, before any later answer:
        # everything up to `subscribed` is what the connect delivered
        from sinal.protocol import Subscribe, Subscribed

        await c.send(Subscribe(events=("purchase_request_changed",), ref="r"))
        with trio.fail_after(10):
            while not isinstance(message := await c.recv(10), Subscribed):
                assert not isinstance(message, Notification), message


async def test_preferences_filter_kinds_and_sound(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    fabio, ana = users["fabio@sinal.dev"], users["ana@sinal.dev"]
    approvers = [users[e] for e in ("carla@sinal.dev", "diego@sinal.dev", "elisa@sinal.dev")]

    def setup() -> str:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO notification_preferences (user_id, events, sound_enabled)"
                         " VALUES (%s, %s, false)", (fabio["id"], ["quotation_received"]))
            req = create_request(conn, actor(ana), title="Cabo", amount=20, submit=True)
            for approver in approvers:
                decide(conn, actor(approver), str(req["id"]), "approved")
            return str(req["id"])

    request_id = await trio.to_thread.run_sync(setup)
    async with client(node) as c:
        await c.connect(token_for(fabio))

        def quote() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                supplier = conn.execute("SELECT id::text FROM suppliers LIMIT 1").fetchone()
                assert supplier is not None
                add_quotation(conn, actor(fabio), request_id, supplier_id=supplier[0],
                              amount=19.5, delivery_days=3)

        await trio.to_thread.run_sync(quote)
        note = await next_notification(c)
    assert note.kind == "quotation_received" and note.sound is False
    with psycopg.connect(db_url) as conn:
        kinds = {r[0] for r in conn.execute(
            "SELECT kind FROM notifications WHERE user_id = %s", (fabio["id"],))}
    assert kinds == {"quotation_received"}  # nothing of the kinds fabio left out


async def test_late_delivery_alerts_the_buyer(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    from sinal.domain.workflow import issue_order

    ana, fabio = users["ana@sinal.dev"], users["fabio@sinal.dev"]
    approvers = [users[e] for e in ("carla@sinal.dev", "diego@sinal.dev", "elisa@sinal.dev")]

    def order_overdue() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            req = create_request(conn, actor(ana), title="Frete", amount=90, submit=True)
            for approver in approvers:
                decide(conn, actor(approver), str(req["id"]), "approved")
            supplier = conn.execute("SELECT id::text FROM suppliers LIMIT 1").fetchone()
            assert supplier is not None
            quote = add_quotation(conn, actor(fabio), str(req["id"]), supplier_id=supplier[0],
                                  amount=90, delivery_days=2)
            order = issue_order(conn, actor(fabio), str(req["id"]), str(quote["id"]))
            conn.execute("UPDATE purchase_orders SET expected_delivery_date = current_date - 1"
                         " WHERE id = %s", (order["id"],))

    assert node.delivery_watch is not None
    async with client(node) as c:
        await c.connect(token_for(fabio))
        await trio.to_thread.run_sync(order_overdue)
        assert await node.delivery_watch.check_once() == 1
        with trio.fail_after(20):
            while (note := await next_notification(c)).kind != "delivery_late":
                pass
    assert "atrasada" in note.message
    assert await node.delivery_watch.check_once() == 0  # idempotent
