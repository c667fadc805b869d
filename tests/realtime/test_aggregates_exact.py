"""The dashboard's figures are exact: with concurrent SQL writers touching every table the
figures count (hypothesis draws their programs), every figure equals its SQL GROUP BY
(domain/aggregate_sql.py, `aggregates_by_sql`, with the caller's permission filter) over
the same snapshot, with the same clock:

* at quiescence, over the live tables: GET /api/dashboard for four roles, and the last
  figures each role's WebSocket subscriber holds;
* at random offsets P among those the subscribers were sent: over the tables as they were
  after every change <= P, rebuilt from the change log (each row's last logged state,
  through temporary views that take the tables' names).
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sinal.domain.aggregate_sql import aggregates_by_sql
from sinal.domain.aggregates import DashboardPlan, dashboard_plan
from sinal.domain.principals import Principal
from sinal.node.wiring import Node
from sinal.protocol import (
    DashboardSnapshot,
    DashboardUpdate,
    Heartbeat,
    Notification,
    decode_server,
)
from tests.realtime.realtime_support import Client, client, node_config, token_for

WATCHERS = ("admin@sinal.dev", "ana@sinal.dev", "diego@sinal.dev", "fabio@sinal.dev")
STATUSES = ("draft", "pending_a1", "pending_a2", "pending_a3", "approved", "rejected",
            "quoting", "ordered", "delivered", "cancelled")
QUOTE_STATUSES = ("active", "selected", "declined", "expired")
DELIVERY = ("pending", "in_transit", "delivered", "late")
PICK = st.integers(0, 50)

op = st.one_of(
    st.tuples(st.just("request"), st.integers(0, 2), st.sampled_from(STATUSES),
              st.integers(0, 10**9)),
    st.tuples(st.just("request_status"), PICK, st.sampled_from(STATUSES)),
    st.tuples(st.just("request_dept"), PICK, st.integers(0, 2)),
    st.tuples(st.just("request_amount"), PICK, st.integers(0, 10**9)),
    st.tuples(st.just("delete", ), st.sampled_from(("purchase_requests", "approvals",
                                                    "quotations", "purchase_orders")), PICK),
    st.tuples(st.just("approval"), PICK, st.integers(1, 3), st.sampled_from(("approved",
                                                                              "rejected")),
              st.integers(-48, 40 * 24), st.none() | st.integers(0, 10**6)),
    st.tuples(st.just("approval_decided"), PICK, st.integers(-48, 40 * 24)),
    st.tuples(st.just("approval_level"), PICK, st.integers(1, 3)),
    st.tuples(st.just("quotation"), PICK, st.sampled_from(QUOTE_STATUSES)),
    st.tuples(st.just("quotation_status"), PICK, st.sampled_from(QUOTE_STATUSES)),
    st.tuples(st.just("order"), PICK, st.sampled_from(DELIVERY),
              st.none() | st.integers(-5, 5)),
    st.tuples(st.just("order_delivery"), PICK, st.sampled_from(DELIVERY)),
    st.tuples(st.just("order_expected"), PICK, st.none() | st.integers(-5, 5)),
)
programs = st.lists(st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=4),
                    min_size=2, max_size=3)

REBUILT = """
CREATE TEMP VIEW {table} AS
SELECT (jsonb_populate_record(NULL::public.{table}, last.new_row)).*
  FROM (SELECT DISTINCT ON (row_id) op, new_row FROM public.change_log
         WHERE table_name = '{table}' AND position IS NOT NULL
           AND position <= current_setting('sinal.test_at')::bigint
         ORDER BY row_id, position DESC) AS last
 WHERE last.op <> 'delete'
"""


def pick(conn: psycopg.Connection[Any], table: str, index: int) -> str | None:
    ids = conn.execute(f"SELECT id::text FROM {table} ORDER BY id").fetchall()
    return ids[index % len(ids)][0] if ids else None


def run_op(conn: psycopg.Connection[Any], step: tuple[Any, ...], people: list[str],
           departments: list[str], supplier: str) -> None:
    kind = step[0]
    if kind == "request":
        conn.execute("INSERT INTO purchase_requests (title, requester_id, department_id, amount,"
                     " status) VALUES ('x', %s, %s, %s / 100.0, %s)",
                     (people[step[1] % len(people)], departments[step[1]], step[3], step[2]))
    elif kind in ("request_status", "request_dept", "request_amount"):
        target = pick(conn, "purchase_requests", step[1])
        column = {"request_status": "status", "request_dept": "department_id",
                  "request_amount": "amount"}[kind]
        value = (departments[step[2]] if kind == "request_dept"
                 else step[2] / 100 if kind == "request_amount" else step[2])
        conn.execute(f"UPDATE purchase_requests SET {column} = %s WHERE id = %s",
                     (value, target))
    elif kind == "delete":
        target = pick(conn, step[1], step[2])
        conn.execute(f"DELETE FROM {step[1]} WHERE id = %s", (target,))
    elif kind == "approval":
        request = pick(conn, "purchase_requests", step[1])
        if request is not None:
            conn.execute(
                "INSERT INTO approvals (purchase_request_id, level, approver_id, verdict, "
                "decided_at, waiting_since) VALUES (%s, %s, %s, %s, now() - make_interval("
                "hours => %s), now() - make_interval(hours => %s) - make_interval(secs => %s))",
                (request, step[2], people[0], step[3], step[4], step[4], step[5]))
    elif kind == "approval_decided":
        conn.execute("UPDATE approvals SET decided_at = now() - make_interval(hours => %s) "
                     "WHERE id = %s", (step[2], pick(conn, "approvals", step[1])))
    elif kind == "approval_level":
        conn.execute("UPDATE approvals SET level = %s WHERE id = %s",
                     (step[2], pick(conn, "approvals", step[1])))
    elif kind == "quotation":
        request = pick(conn, "purchase_requests", step[1])
        if request is not None:
            conn.execute("INSERT INTO quotations (purchase_request_id, supplier_id, amount, "
                         "status) VALUES (%s, %s, 1, %s)", (request, supplier, step[2]))
    elif kind == "quotation_status":
        conn.execute("UPDATE quotations SET status = %s WHERE id = %s",
                     (step[2], pick(conn, "quotations", step[1])))
    elif kind == "order":
        request = pick(conn, "purchase_requests", step[1])
        if request is not None:
            conn.execute("INSERT INTO purchase_orders (purchase_request_id, supplier_id, "
                         "buyer_id, amount, delivery_status, expected_delivery_date) VALUES "
                         "(%s, %s, %s, 1, %s, current_date + %s)",
                         (request, supplier, people[0], step[2], step[3]))
    elif kind == "order_delivery":
        conn.execute("UPDATE purchase_orders SET delivery_status = %s WHERE id = %s",
                     (step[2], pick(conn, "purchase_orders", step[1])))
    else:
        conn.execute("UPDATE purchase_orders SET expected_delivery_date = current_date + %s "
                     "WHERE id = %s", (step[2], pick(conn, "purchase_orders", step[1])))


class Recorder:
    """A role's dashboard subscriber: its figures after every message, with the offset."""

    def __init__(self, c: Client, plan: DashboardPlan) -> None:
        self.client = c
        self.plan = plan
        self.figures: dict[str, Any] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.moved = trio.Event()

    async def run(self) -> None:
        while True:
            message = decode_server(await self.client.ws.get_message(), self.client.encoding)
            if isinstance(message, DashboardSnapshot):
                self.figures = dict(message.aggregates)
            elif isinstance(message, DashboardUpdate):
                self.figures = {**self.figures, **message.aggregates}
            else:
                assert isinstance(message, Heartbeat | Notification), message
                continue
            if self.history:
                assert message.offset >= self.history[-1][0]
            self.history.append((message.offset, self.figures))
            self.moved.set()
            self.moved = trio.Event()

    async def holds(self, expected: dict[str, Any]) -> None:
        with trio.fail_after(15):
            while self.figures != expected:
                await self.moved.wait()


async def test_figures_equal_their_group_by_at_quiescence_and_at_random_offsets(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    now = datetime.now(UTC)
    today = now.date()
    node = Node(node_config(db_url, DASHBOARD_UPDATE_INTERVAL_MS="5",
                            WEBSOCKET_CONNECTION_TIMEOUT="3600000",
                            ENABLE_PERFORMANCE_MONITORING="false",
                            RATE_LIMIT_REQUESTS_PER_MINUTE="1000000"), db_url)
    node.clock = lambda: now  # the figures' clock and the SQL's are the same
    node.delivery_check_interval = 3600  # the test's writers are the only ones
    await nursery.start(node.run)
    people = [users[e]["id"] for e in ("ana@sinal.dev", "bruno@sinal.dev")]
    with psycopg.connect(db_url, autocommit=True) as conn:
        departments = [r[0] for r in conn.execute(
            "SELECT id::text FROM departments ORDER BY name").fetchall()]
        supplier = conn.execute("SELECT id::text FROM suppliers LIMIT 1").fetchone()[0]
        for table in ("purchase_requests", "approvals", "quotations", "purchase_orders"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    plans = {email: dashboard_plan(Principal(users[email]["id"], users[email]["role"],
                                             users[email]["department_id"]), None)
             for email in WATCHERS}
    recorders: dict[str, Recorder] = {}
    checked = {"quiescent": 0, "offsets": 0}

    async with trio.open_nursery() as watching:
        clients = {}
        for email in WATCHERS:
            clients[email] = await watching.start(_open, node)
            await clients[email].connect(token_for(users[email]))
            await clients[email].subscribe("dashboard")
            recorders[email] = Recorder(clients[email], plans[email])
            watching.start_soon(recorders[email].run)

        def check_offsets(conn: psycopg.Connection[Any], rnd: random.Random,
                          seen: dict[str, int]) -> None:
            for email, recorder in recorders.items():
                fresh = recorder.history[seen.get(email, 0):]
                seen[email] = len(recorder.history)
                for offset, figures in rnd.sample(fresh, min(2, len(fresh))):
                    conn.execute("SELECT set_config('sinal.test_at', %s, false)", (str(offset),))
                    assert aggregates_by_sql(conn, recorder.plan, today) == figures, \
                        (email, offset)
                    checked["offsets"] += 1

        def run() -> None:
            rnd = random.Random(7)
            seen: dict[str, int] = {}
            with httpx.Client(base_url=node.http_url, timeout=20) as http, \
                    psycopg.connect(db_url, autocommit=True) as live, \
                    psycopg.connect(db_url, autocommit=True) as rebuilt:
                for table in ("purchase_requests", "approvals", "quotations",
                              "purchase_orders"):
                    rebuilt.execute(REBUILT.format(table=table))
                rebuilt.execute("SELECT set_config('sinal.test_at', '0', false)")

                # no shrinking: the node's state carries over from one example to the next
                @settings(max_examples=6, deadline=None, database=None,
                          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
                @given(writers=programs)
                def exact(writers: list[list[list[tuple[Any, ...]]]]) -> None:
                    def write(program: list[list[tuple[Any, ...]]]) -> None:
                        with psycopg.connect(db_url) as conn:
                            for transaction in program:
                                try:
                                    with conn.transaction():
                                        for step in transaction:
                                            run_op(conn, step, people, departments, supplier)
                                except psycopg.Error:
                                    pass  # deadlock, a foreign key: this one rolls back
                    threads = [threading.Thread(target=write, args=(p,)) for p in writers]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    head = live.execute("SELECT sinal_sequence_changes()").fetchone()[0]
                    for email in WATCHERS:
                        expected = aggregates_by_sql(live, plans[email], today)
                        response = http.get("/api/dashboard", headers={
                            "Authorization": f"Bearer {token_for(users[email])}"})
                        assert response.status_code == 200, response.text
                        body = response.json()
                        assert body["offset"] >= head and body["today"] == today.isoformat()
                        assert {k: body[k] for k in plans[email].names} == expected, email
                        trio.from_thread.run(recorders[email].holds, expected)
                        checked["quiescent"] += 1
                    check_offsets(rebuilt, rnd, seen)

                exact()

        await trio.to_thread.run_sync(run)
        watching.cancel_scope.cancel()
    assert checked["quiescent"] >= 8 and checked["offsets"] >= 8, checked
    # the subscribers were sent figures at many offsets, not only at the ends
    assert len(recorders["admin@sinal.dev"].history) > 6


async def _open(node: Node, *, task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED
                ) -> None:
    async with client(node) as c:
        task_status.started(c)
        await trio.sleep_forever()
