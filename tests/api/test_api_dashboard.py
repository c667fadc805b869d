"""GET /api/dashboard: every figure the caller may see, exact at `offset`, with the lists'
ETag/304 rules (a 304 makes no query; a 200 shows every commit made before the request);
scoped per role; unknown figures or windows are 400 invalid_filter with the valid names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.aggregate_sql import aggregates_by_sql
from sinal.domain.aggregates import AGGREGATES, DashboardPlan, DashboardView, dashboard_plan
from sinal.domain.principals import Principal
from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api
from tests.api.test_api_reads import is_problem

DASH = "/api/dashboard"
PR = "/api/purchase-requests"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "10000"}


async def settle(api: Api) -> None:
    """Wait until the topics and the figures include every change committed so far."""
    head = int((await api.sql("SELECT sinal_sequence_changes()"))[0][0])
    await api.settle()
    assert api.node.aggregates is not None
    with trio.fail_after(10):
        await api.node.aggregates.wait_position(head)


def figures(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in AGGREGATES}


async def test_etag_304_and_read_your_writes(api: Api) -> None:
    db = api.node.db
    assert db is not None
    first = await api.get(DASH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(figures(body)) == set(AGGREGATES) and body["window"] == "30d"
    assert body["today"] == datetime.now(UTC).date().isoformat()
    etag = first.headers["ETag"]
    assert etag == f'W/"{body["etag"]}"'
    before = db.queries_by_scope["http"]
    for header in (etag, etag[2:], f'"nope", {etag}'):
        again = await api.get(DASH, headers={"If-None-Match": header})
        assert again.status_code == 304 and again.content == b""
    assert (await api.get(DASH, params={"etag": body["etag"]})).status_code == 304
    assert db.queries_by_scope["http"] == before, "a 304 must not touch the database"

    # a change no figure counts (a supplier) moves no ETag
    await api.sql("INSERT INTO suppliers (name) VALUES ('Nova')")
    await settle(api)
    assert (await api.get(DASH, headers={"If-None-Match": etag})).status_code == 304
    # a write, read at once: a 200 already counts it (the commit fence)
    await api.ok("post", PR, REQUESTER, 201, json={"title": "Lamp", "amount": 42,
                                                    "submit": True})
    fresh = await api.get(DASH)
    assert fresh.json()["requestsByStatus"] == {"pending_a1": 1}
    assert fresh.json()["offset"] > body["offset"]
    # (like a list's, a 304 is judged from memory alone; once published the ETag moves)
    await settle(api)
    moved = await api.get(DASH, headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["ETag"] != etag
    assert figures(moved.json()) == figures(fresh.json())


async def test_each_role_gets_its_figures(api: Api) -> None:
    await api.ok("post", PR, REQUESTER, 201, json={"title": "A", "amount": 10, "submit": True})
    await api.ok("post", PR, OTHER_REQUESTER, 201, json={"title": "B", "amount": 20.5})
    ti = api.users[REQUESTER]["department_id"]
    ops = api.users[OTHER_REQUESTER]["department_id"]
    expected = {
        ADMIN: {"requestsByStatus": {"pending_a1": 1, "draft": 1}},
        REQUESTER: {"requestsByStatus": {"pending_a1": 1}, "requestsByDepartment": {
            ti: {"pending_a1": {"count": 1, "amount": "10.00"}}}},
        OTHER_REQUESTER: {"requestsByStatus": {"draft": 1}, "requestsByDepartment": {
            ops: {"draft": {"count": 1, "amount": "20.50"}}}},
        APPROVER[1]: {"requestsByStatus": {"pending_a1": 1}, "pendingByLevel": {"1": 1}},
        APPROVER[2]: {"requestsByStatus": {}, "pendingByLevel": {}},
        BUYER: {"requestsByStatus": {}, "lateOrders": 0},
    }
    etags = set()
    for who, wanted in expected.items():
        response = await api.get(DASH, who)
        assert response.status_code == 200, response.text
        body = response.json()
        for name, value in wanted.items():
            assert body[name] == value, (who, name, body[name])
        role = api.users[who]["role"]
        plan = dashboard_plan(Principal(api.users[who]["id"], role,
                                        api.users[who]["department_id"]), None)
        assert set(figures(body)) == set(plan.names)
        etags.add(response.headers["ETag"])
    assert len(etags) == len(expected)  # every scope has ETags of its own


async def test_figures_and_windows_can_be_chosen(api: Api) -> None:
    body = await api.ok("get", DASH, APPROVER[2],
                        params={"aggregates": "approvalsPerDay,averageWaitByLevel",
                                "window": "7d"})
    assert set(figures(body)) == {"approvalsPerDay", "averageWaitByLevel"}
    assert body["window"] == "7d"


@pytest.mark.parametrize("params,words", [
    ({"aggregates": "requestsByStatus,nope"}, ["'nope'", "lateOrders"]),
    ({"aggregates": ","}, ["requestsByStatus"]),
    ({"window": "90d"}, ["'90d'", "1d", "7d", "30d"]),
])
async def test_bad_input_is_400_invalid_filter_with_the_valid_names(
        api: Api, params: dict[str, str], words: list[str]) -> None:
    response = await api.get(DASH, params=params)
    assert is_problem(response, 400, "invalid_filter")
    problem = response.json()
    assert problem["aggregates"] == list(AGGREGATES) and problem["windows"] == ["1d", "7d",
                                                                                 "30d"]
    for word in words:
        assert word in problem["detail"]


async def test_a_figure_the_role_may_not_see_is_403(api: Api) -> None:
    assert is_problem(await api.get(DASH, REQUESTER, params={"aggregates": "lateOrders"}),
                      403, "forbidden")
    assert is_problem(await api.get(DASH, None), 401, "auth_required")


class Behind:
    """The aggregates actor as REST sees it, but never caught up: REST must read the tables."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def position(self) -> int:
        return -1

    def version(self) -> str:
        return str(self.inner.version())

    def today(self) -> Any:
        return self.inner.today()

    def view(self, plan: DashboardPlan) -> DashboardView:
        raise AssertionError("a figure not caught up must not be answered from memory")

    async def wait_position(self, position: int) -> None:
        await trio.sleep_forever()


async def test_figures_behind_the_log_are_read_from_the_tables(api: Api) -> None:
    await api.ok("post", PR, REQUESTER, 201, json={"title": "A", "amount": 10, "submit": True})
    api.node.dashboard = Behind(api.node.dashboard)
    body = await api.ok("get", DASH, APPROVER[1])
    who = api.users[APPROVER[1]]
    plan = dashboard_plan(Principal(who["id"], who["role"], who["department_id"]), None)
    today = datetime.now(UTC).date()

    def by_sql() -> dict[str, Any]:
        with psycopg.connect(api.node.database_url) as conn:
            return aggregates_by_sql(conn, plan, today)

    assert figures(body) == await trio.to_thread.run_sync(by_sql)
    assert body["requestsByStatus"] == {"pending_a1": 1}
