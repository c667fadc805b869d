"""The aggregates' SQL: the full recompute (cells, exact at a head), and every figure as
one GROUP BY with the caller's permission filter (what the tests compare against).

RECOMPUTE (`load_state`). The sequencer runs in its own statement, then one REPEATABLE
READ, READ ONLY transaction reads the head H, the cells (one GROUP BY per table) and the
changes that transaction can see but that have no position yet. A snapshot sees a prefix
1..H of positions (sql/003_change_capture.sql) plus, possibly, changes committed after the
sequencer ran: those are exactly the visible change_log rows with `position IS NULL`
(a change's log row commits with the change). Taking them back out of the cells
(`AggregateState.unapply`) leaves the figures of exactly the changes <= H; the listener
delivers the others later, with positions above H, and they are applied then. Approvals
are loaded from the first day of the longest window on (`MAX_WINDOW_DAYS` before today).

THE FIGURES IN SQL (`aggregates_by_sql`). One GROUP BY per figure over the rows of its
table projected on its cell key, filtered with `filter_sql` of the caller's permission
filter -- the definition of each figure, independent of the cells. The projection keeps
the requester out of the key (`NULL AS requester_id`), so a requester's filter counts
their department, as in the cells. `tests/realtime/test_aggregates_exact.py` runs them on
the live tables at quiescence and on the tables rebuilt from the change log at random
offsets, and compares them with what the dashboard sent.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from sinal.domain.access import filter_sql
from sinal.domain.aggregates import (
    FAMILY_OF_TABLE,
    LATE_STATUSES,
    AggregateState,
    DashboardPlan,
    average_seconds,
    format_cents,
    window_start,
)

# (every column named: the pool's rows are dicts)
_CELLS: dict[str, str] = {
    "requests": "SELECT status AS k1, department_id::text AS k2, count(*) AS n, "
                "coalesce(sum(amount * 100), 0)::bigint AS a, 0 AS b "
                "FROM purchase_requests GROUP BY 1, 2",
    "quotations": "SELECT purchase_request_id::text AS k1, count(*) AS n, 0 AS a, 0 AS b "
                  "FROM quotations WHERE status = 'active' GROUP BY 1",
    "orders": "SELECT delivery_status AS k1, to_char(expected_delivery_date, 'YYYY-MM-DD') "
              "AS k2, count(*) AS n, 0 AS a, 0 AS b FROM purchase_orders GROUP BY 1, 2",
    "approvals": "SELECT level AS k1, verdict AS k2, to_char((decided_at AT TIME ZONE 'UTC')"
                 "::date, 'YYYY-MM-DD') AS k3, count(*) AS n, "
                 "coalesce(sum((extract(epoch FROM decided_at - waiting_since) * 1000000)"
                 "::bigint), 0) AS a, count(waiting_since) AS b "
                 "FROM approvals WHERE (decided_at AT TIME ZONE 'UTC')::date >= %(first)s "
                 "GROUP BY 1, 2, 3",
}
_KEY_WIDTH = {"requests": 2, "quotations": 1, "orders": 2, "approvals": 3}
_TABLES = tuple(FAMILY_OF_TABLE)


def load_state(conn: psycopg.Connection[Any], today: date) -> AggregateState:
    """Every cell from the tables, exact at the head it reports (see the module doc)."""
    conn.execute("SELECT sinal_sequence_changes()")
    return snapshot_state(conn, today)


def snapshot_state(conn: psycopg.Connection[Any], today: date) -> AggregateState:
    """The cells of one snapshot, less the changes it sees that have no position yet."""
    first = window_start(today)
    state = AggregateState(approvals_from=first.isoformat())
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        head = conn.execute("SELECT position FROM change_log_head").fetchone()
        assert head is not None
        position = int(_first(head))
        state.position = state.version = state.floor = position
        for family, query in _CELLS.items():
            width = _KEY_WIDTH[family]
            cells = state.cells[family]
            for row in conn.execute(query, {"first": first}).fetchall():
                values = _tuple(row)
                key = tuple(values[:width])
                count, a, b = (int(v) for v in values[width:width + 3])
                cells[key] = [count, a, b, position]
        unsequenced = conn.execute(
            "SELECT table_name, op, new_row, old_row, changed FROM change_log "
            "WHERE position IS NULL AND table_name = ANY(%s) ORDER BY id",
            (list(_TABLES),)).fetchall()
    for row in unsequenced:
        table, op, new_row, old_row, changed = _tuple(row)
        state.unapply(table, op, new_row, old_row, changed)
    state.dirty.clear()
    return state


def _tuple(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _first(row: Any) -> Any:
    return _tuple(row)[0]


# --- every figure as a GROUP BY ----------------------------------------------------------------

_SOURCE: dict[str, str] = {
    "requests": "(SELECT status, department_id, NULL::uuid AS requester_id, amount "
                "FROM purchase_requests) AS t",
    "quotations": "(SELECT purchase_request_id, status FROM quotations) AS t",
    "orders": "(SELECT delivery_status, expected_delivery_date FROM purchase_orders) AS t",
    "approvals": "(SELECT level, verdict, decided_at, waiting_since, "
                 "(decided_at AT TIME ZONE 'UTC')::date AS day FROM approvals) AS t",
}
# figure -> (family, query, the parameters after the filter's, in order)
_FIGURES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requestsByStatus": (
        "requests", "SELECT t.status, count(*) FROM {source} WHERE {where} GROUP BY 1", ()),
    "pendingByLevel": (
        "requests", "SELECT right(t.status, 1), count(*) FROM {source} "
                    "WHERE {where} AND t.status = ANY(%s) GROUP BY 1", ("pending",)),
    "requestsByDepartment": (
        "requests", "SELECT t.department_id::text, t.status, count(*), "
                    "(sum(t.amount) * 100)::bigint FROM {source} WHERE {where} GROUP BY 1, 2",
        ()),
    "quotationsAwaitingDecision": (
        "quotations", "SELECT t.purchase_request_id::text, count(*) FROM {source} "
                      "WHERE {where} AND t.status = 'active' GROUP BY 1", ()),
    "ordersByDeliveryStatus": (
        "orders", "SELECT t.delivery_status, count(*) FROM {source} WHERE {where} GROUP BY 1",
        ()),
    "lateOrders": (
        "orders", "SELECT count(*) FROM {source} WHERE {where} AND "
                  "(t.delivery_status = 'late' OR (t.delivery_status = ANY(%s) "
                  "AND t.expected_delivery_date < %s))", ("late", "today")),
    "approvalsPerDay": (
        "approvals", "SELECT to_char(t.day, 'YYYY-MM-DD'), t.verdict, count(*) "
                     "FROM {source} WHERE {where} AND t.day BETWEEN %s AND %s "
                     "GROUP BY 1, 2 ORDER BY 1, 2", ("first", "today")),
    "averageWaitByLevel": (
        "approvals", "SELECT t.level::text, count(*), "
                     "sum((extract(epoch FROM t.decided_at - t.waiting_since) * 1000000)"
                     "::bigint) FROM {source} WHERE {where} AND t.waiting_since IS NOT NULL "
                     "AND t.day BETWEEN %s AND %s GROUP BY 1 ORDER BY 1", ("first", "today")),
}


def aggregates_by_sql(conn: psycopg.Connection[Any], plan: DashboardPlan, today: date
                      ) -> dict[str, Any]:
    """Every figure of `plan` computed by its own GROUP BY over the tables `conn` sees
    under those names (the live ones, or views of them), in the dashboard's shapes."""
    values = {"today": today, "first": window_start(today, plan.days),
              "late": list(LATE_STATUSES),
              "pending": ["pending_a1", "pending_a2", "pending_a3"]}
    out: dict[str, Any] = {}
    for name in plan.names:
        family, template, extra = _FIGURES[name]
        where, params = filter_sql(plan.scope.filters[family], "t")
        query = sql.SQL(template).format(source=sql.SQL(_SOURCE[family]), where=where)
        rows = [_tuple(r) for r in conn.execute(
            query, [*params, *(values[p] for p in extra)]).fetchall()]
        out[name] = _shape(name, rows)
    return out


def _shape(name: str, rows: list[tuple[Any, ...]]) -> Any:
    if name == "lateOrders":
        return int(rows[0][0])
    if name == "requestsByDepartment":
        dept: dict[str, dict[str, Any]] = {}
        for department, status, count, amount in rows:
            dept.setdefault(department, {})[status] = {"count": int(count),
                                                       "amount": format_cents(int(amount))}
        return dept
    if name == "approvalsPerDay":
        days: dict[str, dict[str, int]] = {}
        for day, verdict, count in rows:
            days.setdefault(day, {})[verdict] = int(count)
        return days
    if name == "averageWaitByLevel":
        return {level: {"decisions": int(n), "averageSeconds": average_seconds(int(total),
                                                                                int(n))}
                for level, n, total in rows}
    return {str(key): int(count) for key, count in rows}
