"""The aggregates' rules (domain/aggregates.py) and their SQL (domain/aggregate_sql.py):
the recompute is exact at the head it reports even when its snapshot sees changes that
have no position yet; the figures' arithmetic; the plans' validation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from sinal.domain.access import AccessError
from sinal.domain.aggregate_sql import aggregates_by_sql, snapshot_state
from sinal.domain.aggregates import (
    AGGREGATES,
    AggregateState,
    average_seconds,
    cents,
    dashboard_plan,
    format_cents,
    render,
)
from sinal.domain.changes import read_changes, sequence_changes
from sinal.domain.principals import Principal
from tests.realtime.realtime_support import users_of

TODAY = datetime.now(UTC).date()


def write(conn: psycopg.Connection[Any], requester: str, dept: str, n: int) -> None:
    for i in range(n):
        row = conn.execute(
            "INSERT INTO purchase_requests (title, requester_id, department_id, amount, status)"
            " VALUES ('x', %s, %s, %s, %s) RETURNING id",
            (requester, dept, 12.34 * (i + 1), ("pending_a1", "approved")[i % 2])).fetchone()
        assert row is not None
        conn.execute("INSERT INTO approvals (purchase_request_id, level, approver_id, verdict, "
                     "waiting_since) VALUES (%s, 1, %s, 'approved', now() - interval '1 hour')",
                     (row[0], requester))
    conn.execute("UPDATE purchase_requests SET status = 'rejected' WHERE amount < 20")
    conn.execute("DELETE FROM approvals WHERE id IN (SELECT id FROM approvals LIMIT 1)")


def test_the_recompute_is_exact_at_its_head_despite_unsequenced_changes(db_url: str) -> None:
    users = users_of(db_url)
    ana = users["ana@sinal.dev"]
    admin = Principal(users["admin@sinal.dev"]["id"], "admin")
    plan = dashboard_plan(admin, None)
    with psycopg.connect(db_url, autocommit=True) as conn:
        write(conn, ana["id"], ana["department_id"], 5)
        head = sequence_changes(conn)
        at_head = aggregates_by_sql(conn, plan, TODAY)
        write(conn, ana["id"], ana["department_id"], 3)  # committed, no position yet
        state = snapshot_state(conn, TODAY)
        assert state.position == head
        assert render(state, plan, TODAY) == at_head
        assert render(state, plan, TODAY) != aggregates_by_sql(conn, plan, TODAY)
        # the changes the snapshot took out come with positions after the head
        sequence_changes(conn)
        for change in read_changes(conn, head, 1000):
            state.apply(change.table, change.op, change.new_row, change.old_row,
                        change.changed, change.position)
            state.position = change.position
        assert render(state, plan, TODAY) == aggregates_by_sql(conn, plan, TODAY)


def test_amounts_are_exact() -> None:
    assert cents(12.34) == 1234 and cents(999999999999.99) == 99999999999999
    assert cents(0.1) + cents(0.2) == cents(0.3) and cents(7) == 700
    assert [format_cents(v) for v in (0, 5, 1234, -1234, 99999999999999)] == [
        "0.00", "0.05", "12.34", "-12.34", "999999999999.99"]


def test_average_wait_rounds_to_the_millisecond_half_away_from_zero() -> None:
    assert average_seconds(1_500, 1) == 0.002  # 1.5 ms -> 2 ms
    assert average_seconds(1_499, 1) == 0.001
    assert average_seconds(-1_500, 1) == -0.002
    assert average_seconds(90_000_000 * 2 + 1, 2) == 90.0


def test_an_update_that_moves_nothing_counted_is_skipped() -> None:
    state = AggregateState()
    row = {"id": "r", "status": "draft", "department_id": "d", "amount": 1}
    assert state.apply("purchase_requests", "insert", row, None, None, 1)
    assert not state.apply("purchase_requests", "update", {**row, "title": "t"},
                           {"title": "s"}, {"title": "t"}, 2)
    assert state.apply("purchase_requests", "update", {**row, "status": "approved"},
                       {"status": "draft"}, {"status": "approved"}, 3)
    assert not state.apply("users", "insert", {"id": "u"}, None, None, 4)
    assert state.version == 3
    cells = state.cells["requests"]
    assert cells[("draft", "d")][0] == 0 and cells[("approved", "d")][:2] == [1, 100]
    assert state.prune(date(2026, 1, 1)) == 1 and state.floor == 3


@pytest.mark.parametrize("filters,code,words", [
    ({"aggregates": ["requestsByStatus", "bogus"]}, "invalid_filter", AGGREGATES),
    ({"aggregates": []}, "invalid_filter", AGGREGATES),
    ({"window": "2d"}, "invalid_filter", ("1d", "7d", "30d")),
    ({"since": 3}, "invalid_filter", ("aggregates", "window")),
    ({"aggregates": "lateOrders"}, "forbidden", ("lateOrders",)),
])
def test_bad_plans_name_what_is_valid(filters: dict[str, Any], code: str,
                                      words: tuple[str, ...]) -> None:
    with pytest.raises(AccessError) as caught:
        dashboard_plan(Principal("u", "requester", "d"), filters)
    assert caught.value.code == code
    for word in words:
        assert word in caught.value.message


def test_each_role_sees_the_figures_of_its_tables() -> None:
    def names(role: str) -> set[str]:
        return set(dashboard_plan(Principal("u", role, "d"), None).names)

    requests = {"requestsByStatus", "pendingByLevel", "requestsByDepartment"}
    assert names("admin") == set(AGGREGATES)
    assert names("requester") == requests
    assert names("approver_a2") == requests | {"approvalsPerDay", "averageWaitByLevel"}
    assert names("buyer") == requests | {"quotationsAwaitingDecision",
                                         "ordersByDeliveryStatus", "lateOrders"}
    scope = dashboard_plan(Principal("u", "requester", "d"), None).scope
    # two requesters of one department share a scope (their figures are the department's)
    assert scope.key == dashboard_plan(Principal("v", "requester", "d"), None).scope.key
    assert scope.key != dashboard_plan(Principal("v", "requester", "e"), None).scope.key
    assert scope.filters["requests"].matches_row({"department_id": "d", "status": "draft"})
    assert not scope.filters["requests"].matches_row({"department_id": "e", "status": "draft"})
