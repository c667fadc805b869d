"""The `dashboard` topic over real sockets: a snapshot with its offset at subscribe, then
updates carrying only the figures that moved; `since` as on every topic; each role's
figures scoped like its rows; bad filters refused with the valid names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.aggregates import AGGREGATES
from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request
from sinal.node.wiring import Node
from sinal.protocol import (
    DashboardSnapshot,
    DashboardUpdate,
    ErrorCode,
    Notification,
    Resync,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)
from tests.realtime.edge_support import expect_error
from tests.realtime.realtime_support import Client, client, node_config, token_for

DASHBOARD = "dashboard"


def sql(db_url: str, statement: str, params: Any = ()) -> list[Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


async def run_sql(db_url: str, statement: str, params: Any = ()) -> list[Any]:
    return await trio.to_thread.run_sync(sql, db_url, statement, params)


async def next_dashboard(c: Client) -> Any:
    """The next dashboard message (notifications and other topics' frames skipped)."""
    with trio.fail_after(20):
        while True:
            message = await c.recv(20)
            if isinstance(message, DashboardSnapshot | DashboardUpdate | Resync):
                return message
            assert isinstance(message, Notification), message


@asynccontextmanager
async def dashboard_node(db_url: str, nursery: trio.Nursery) -> AsyncIterator[Node]:
    node = Node(node_config(db_url, DASHBOARD_UPDATE_INTERVAL_MS="10"), db_url)
    node.delivery_check_interval = 3600  # no order turns late behind the test's back
    yield await nursery.start(node.run)


def departments(db_url: str) -> dict[str, str]:
    return {name: dept for dept, name in sql(db_url, "SELECT id::text, name FROM departments")}


def add_request(db_url: str, requester: dict[str, Any], dept: str, status: str,
                amount: str) -> str:
    return str(sql(db_url, "INSERT INTO purchase_requests (title, requester_id, department_id, "
                           "amount, status) VALUES ('r', %s, %s, %s, %s) RETURNING id::text",
                   (requester["id"], dept, amount, status))[0][0])


async def subscribed(c: Client, *, filters: dict[str, Any] | None = None,
                     since: int | None = None) -> tuple[Subscribed, Any]:
    sub = await c.subscribe(DASHBOARD, filters=filters,
                            since={DASHBOARD: since} if since is not None else None)
    return sub, await next_dashboard(c)


async def test_a_snapshot_then_only_what_moved(db_url: str, users: dict[str, Any],
                                                nursery: trio.Nursery) -> None:
    ana = users["ana@sinal.dev"]
    ti = departments(db_url)["TI"]
    async with dashboard_node(db_url, nursery) as node, client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        sub, snapshot = await subscribed(c)
        assert isinstance(snapshot, DashboardSnapshot)
        assert snapshot.offset == sub.offsets[DASHBOARD]
        assert snapshot.window == "30d" and set(snapshot.aggregates) == set(AGGREGATES)
        assert snapshot.aggregates["requestsByStatus"] == {}
        assert snapshot.aggregates["lateOrders"] == 0

        def write() -> str:
            with psycopg.connect(db_url, autocommit=True) as conn:
                who = Principal(ana["id"], ana["role"], ana["department_id"])
                return str(create_request(conn, who, title="Toner", amount="350.5",
                                          submit=True)["id"])

        await trio.to_thread.run_sync(write)
        update = await next_dashboard(c)
        assert isinstance(update, DashboardUpdate) and update.offset > snapshot.offset
        assert update.aggregates == {
            "requestsByStatus": {"pending_a1": 1},
            "pendingByLevel": {"1": 1},
            "requestsByDepartment": {ti: {"pending_a1": {"count": 1, "amount": "350.50"}}},
        }
        assert update.today == snapshot.today
        # an order moves only the order figures
        await run_sql(db_url, "UPDATE purchase_requests SET status = 'approved'")
        moved = await next_dashboard(c)
        assert set(moved.aggregates) == {"requestsByStatus", "pendingByLevel",
                                         "requestsByDepartment"}
        assert moved.aggregates["pendingByLevel"] == {}


async def test_each_role_gets_the_figures_of_what_it_sees(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    ana, bruno = users["ana@sinal.dev"], users["bruno@sinal.dev"]
    depts = departments(db_url)
    ti, ops = depts["TI"], depts["Operações"]
    add_request(db_url, ana, ti, "pending_a1", "10.00")
    add_request(db_url, ana, ti, "pending_a2", "20.00")
    add_request(db_url, bruno, ops, "pending_a2", "30.00")
    quoted = add_request(db_url, bruno, ops, "quoting", "40.00")
    supplier = sql(db_url, "SELECT id::text FROM suppliers LIMIT 1")[0][0]
    sql(db_url, "INSERT INTO quotations (purchase_request_id, supplier_id, amount) "
                "VALUES (%s, %s, 39)", (quoted, supplier))
    for level, verdict in ((1, "approved"), (2, "rejected")):
        sql(db_url, "INSERT INTO approvals (purchase_request_id, level, approver_id, verdict, "
                    "waiting_since, decided_at) VALUES (%s, %s, %s, %s, now() - interval "
                    "'90 seconds', now())", (quoted, level, users["carla@sinal.dev"]["id"],
                                             verdict))
    expected: dict[str, dict[str, Any]] = {
        "ana@sinal.dev": {"requestsByStatus": {"pending_a1": 1, "pending_a2": 1},
                          "pendingByLevel": {"1": 1, "2": 1}},
        "bruno@sinal.dev": {"requestsByStatus": {"pending_a2": 1, "quoting": 1},
                            "pendingByLevel": {"2": 1}},
        "diego@sinal.dev": {"requestsByStatus": {"pending_a2": 2}, "pendingByLevel": {"2": 2}},
        "fabio@sinal.dev": {"requestsByStatus": {"quoting": 1}, "pendingByLevel": {},
                            "quotationsAwaitingDecision": {quoted: 1},
                            "ordersByDeliveryStatus": {}, "lateOrders": 0},
    }
    async with dashboard_node(db_url, nursery) as node:
        for email, figures in expected.items():
            async with client(node) as c:
                await c.connect(token_for(users[email]))
                _, snapshot = await subscribed(c)
                got = snapshot.aggregates
                for name, value in figures.items():
                    assert got[name] == value, (email, name, got[name])
                if users[email]["role"] != "buyer":  # quotations and orders are buyers'
                    assert "quotationsAwaitingDecision" not in got
                    assert "lateOrders" not in got
                if users[email]["role"] in ("requester", "buyer"):  # decisions: approvers'
                    assert "approvalsPerDay" not in got and "averageWaitByLevel" not in got
        async with client(node) as c:  # an approver sees its level's decisions only
            await c.connect(token_for(users["diego@sinal.dev"]))
            _, snapshot = await subscribed(c, filters={"aggregates": ["approvalsPerDay",
                                                                      "averageWaitByLevel"]})
            assert set(snapshot.aggregates) == {"approvalsPerDay", "averageWaitByLevel"}
            (day,) = snapshot.aggregates["approvalsPerDay"]
            assert snapshot.aggregates["approvalsPerDay"][day] == {"rejected": 1}
            assert snapshot.aggregates["averageWaitByLevel"] == {
                "2": {"decisions": 1, "averageSeconds": 90.0}}
        async with client(node) as c:  # asking for a figure one may not see is refused
            await c.connect(token_for(users["fabio@sinal.dev"]))
            await c.send(Subscribe(events=(DASHBOARD,), filters={"aggregates": "lateOrders"},
                                   ref="ok"))
            await c.expect(Subscribed)
            assert (await next_dashboard(c)).aggregates == {"lateOrders": 0}
            await c.send(Subscribe(events=(DASHBOARD,),
                                   filters={"aggregates": ["approvalsPerDay"]}, ref="no"))
            error = await expect_error(c, ErrorCode.FORBIDDEN, "no")
            assert "approvalsPerDay" in error.message


async def test_since_resumes_with_what_moved_after_it(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    ana = users["ana@sinal.dev"]
    ti = departments(db_url)["TI"]
    request = add_request(db_url, ana, ti, "ordered", "99.00")
    supplier = sql(db_url, "SELECT id::text FROM suppliers LIMIT 1")[0][0]
    async with dashboard_node(db_url, nursery) as node, client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        _, first = await subscribed(c)
        await c.send(Unsubscribe(events=(DASHBOARD,)))
        await c.expect(Unsubscribed)
        # only the orders move while the client is away
        await run_sql(db_url, "INSERT INTO purchase_orders (purchase_request_id, supplier_id, "
                              "buyer_id, amount, expected_delivery_date) VALUES "
                              "(%s, %s, %s, 99, current_date - 3)",
                      (request, supplier, users["fabio@sinal.dev"]["id"]))
        assert node.aggregates is not None
        head = int((await run_sql(db_url, "SELECT sinal_sequence_changes()"))[0][0])
        with trio.fail_after(10):
            await node.aggregates.wait_position(head)
        _, resumed = await subscribed(c, since=first.offset)
        assert isinstance(resumed, DashboardUpdate) and resumed.offset >= head
        # the orders moved; the clock's figures always come; the requests did not move
        assert set(resumed.aggregates) == {"ordersByDeliveryStatus", "lateOrders",
                                           "approvalsPerDay", "averageWaitByLevel"}
        assert resumed.aggregates["ordersByDeliveryStatus"] == {"pending": 1}
        assert resumed.aggregates["lateOrders"] == 1
        # resuming at the current offset owes nothing: the next frame is the next change
        await c.subscribe(DASHBOARD, filters={"aggregates": ["requestsByStatus"]},
                          since={DASHBOARD: resumed.offset})
        await run_sql(db_url, "UPDATE purchase_requests SET status = 'delivered'")
        nothing_owed = await next_dashboard(c)
        assert isinstance(nothing_owed, DashboardUpdate)
        assert nothing_owed.aggregates == {"requestsByStatus": {"delivered": 1}}
        # before what the figures can answer for (their load): a snapshot
        _, again = await subscribed(c, since=0)
        assert isinstance(again, DashboardSnapshot)
        # ahead of the database: resync offset_ahead
        _, ahead = await subscribed(c, since=10**12)
        assert isinstance(ahead, Resync) and ahead.reason == "offset_ahead"


@pytest.mark.parametrize("filters,words", [
    ({"aggregates": ["requestsByStatus", "nope"]}, ["'nope'", "requestsByStatus",
                                                    "averageWaitByLevel"]),
    ({"aggregates": "pendingByLevel", "window": "90d"}, ["'90d'", "1d", "7d", "30d"]),
    ({"window": 30}, ["30", "30d"]),
    ({"status": "pending_a1"}, ["aggregates", "window"]),
])
async def test_bad_filters_are_invalid_filter_with_the_valid_names(
        node: Node, users: dict[str, Any], filters: dict[str, Any], words: list[str]) -> None:
    async with client(node) as c:
        await c.connect(token_for(users["ana@sinal.dev"]))
        await c.send(Subscribe(events=(DASHBOARD,), filters=filters, ref="bad"))
        error = await expect_error(c, ErrorCode.INVALID_FILTER, "bad")
        for word in words:
            assert word in error.message, (word, error.message)
        await c.subscribe(DASHBOARD)  # the session goes on
        assert isinstance(await next_dashboard(c), DashboardSnapshot)
