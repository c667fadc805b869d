"""Live aggregates of the workflow (the `dashboard` topic, GET /api/dashboard): the rules.

WHY INCREMENTAL IS EXACT. Every figure is a sum, over the rows of one table, of a
contribution that depends on that row alone (a count of 1 under the row's status and
department, its amount, its wait). So the figures after a change are the figures before
it plus contribution(row after) minus contribution(row before), and the change log holds
both rows: an insert's `new_row`, a delete's `old_row`, an update's `new_row` with the old
values of the changed fields in `old_row`. Applying the changes in position order to the
figures of a snapshot at position H gives the figures at every later position, exactly,
with no scan. Additions commute, so a snapshot can also be corrected by taking a change
back out (`AggregateState.unapply`): domain/aggregate_sql.py uses that to make its full
recompute exact at the head it reports.

CELLS. Each table's contributions are kept in cells: a group key (the columns the figures
and the visibility rules need) -> [count, sum a, sum b, position of the last change that
moved the cell]. A cell whose count is back to 0 is kept (it says when it last moved)
until `prune`.

| family | table (visible with topic) | cell key | a, b |
|---|---|---|---|
| requests | purchase_requests (purchase_request_changed) | status, department_id | cents, - |
| quotations | quotations, active ones (quotation_changed) | purchase_request_id | -, - |
| orders | purchase_orders (purchase_order_changed) | delivery_status, expected date | -, - |
| approvals | approvals (approval_changed) | level, verdict, UTC day decided | wait us, n |

(a for approvals: the waits in microseconds; b: the decisions whose wait is known.)

THE FIGURES (wire names; maps are sparse: a key that is absent counts 0):

| name | value |
|---|---|
| requestsByStatus | {status: count} |
| pendingByLevel | {"1"/"2"/"3": requests pending at that level} |
| requestsByDepartment | {department_id: {status: {"count": n, "amount": "1234.50"}}} |
| quotationsAwaitingDecision | {purchase_request_id: its active quotations} |
| ordersByDeliveryStatus | {delivery_status: count} |
| lateOrders | orders late, or pending / in transit past their expected date |
| approvalsPerDay | {"YYYY-MM-DD": {"approved": n, "rejected": n}} over the window's days |
| averageWaitByLevel | {"1"/"2"/"3": {"decisions": n, "averageSeconds": s}} over the window |

Amounts are exact decimal text. A wait is decided_at - waiting_since of a decision (see
sql/007_actors_and_waits.sql); decisions whose wait is unknown are left out of it.
The last three depend on the clock ("today", a UTC date, from an injectable clock): the
window is the `window` days ending today (1d, 7d or 30d; default 30d).

VISIBILITY (domain/access.py, `readable_filters`): a caller gets the figures of a family
only when it may read that family's topic, and each cell counts for it only when the
caller's permission filter matches the cell's key. A requester's filter (own requests or
own department's) therefore gives their department's figures; an approver of level N the
requests pending at N and level-N decisions; a buyer approved..delivered requests,
quotations and orders; an admin everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from sinal.domain.access import (
    NULL_KEY,
    AccessError,
    Clause,
    RowFilter,
    readable_filters,
    scope_key,
)
from sinal.domain.principals import Principal

Key = tuple[Any, ...]
Cell = list[int]  # [count, a, b, last position]
Contribution = tuple[Key, tuple[int, int, int]]

FAMILY_TOPIC: dict[str, str] = {
    "requests": "purchase_request_changed",
    "quotations": "quotation_changed",
    "orders": "purchase_order_changed",
    "approvals": "approval_changed",
}
FAMILY_OF_TABLE: dict[str, str] = {
    "purchase_requests": "requests", "quotations": "quotations",
    "purchase_orders": "orders", "approvals": "approvals",
}
# the columns a family's contribution reads: an update that changes none of them is skipped
_RELEVANT: dict[str, frozenset[str]] = {
    "requests": frozenset({"status", "department_id", "amount"}),
    "quotations": frozenset({"status", "purchase_request_id"}),
    "orders": frozenset({"delivery_status", "expected_delivery_date"}),
    "approvals": frozenset({"level", "verdict", "decided_at", "waiting_since"}),
}
# the cell key as a row, for the permission filters
_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "requests": ("status", "department_id"),
    "quotations": ("purchase_request_id",),
    "orders": ("delivery_status", "expected_delivery_date"),
    "approvals": ("level", "verdict"),
}

AGGREGATE_FAMILY: dict[str, str] = {
    "requestsByStatus": "requests",
    "pendingByLevel": "requests",
    "requestsByDepartment": "requests",
    "quotationsAwaitingDecision": "quotations",
    "ordersByDeliveryStatus": "orders",
    "lateOrders": "orders",
    "approvalsPerDay": "approvals",
    "averageWaitByLevel": "approvals",
}
AGGREGATES: tuple[str, ...] = tuple(AGGREGATE_FAMILY)
# figures that move with the clock as well as with the log
TIME_DEPENDENT: frozenset[str] = frozenset({"lateOrders", "approvalsPerDay",
                                            "averageWaitByLevel"})
WINDOWS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
DEFAULT_WINDOW = "30d"
MAX_WINDOW_DAYS = max(WINDOWS.values())
FILTER_KEYS = ("aggregates", "window")


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_today(clock: Callable[[], datetime]) -> date:
    return clock().astimezone(UTC).date()


def window_start(today: date, days: int = MAX_WINDOW_DAYS) -> date:
    """The first day of the `days`-day window that ends with `today`."""
    return today - timedelta(days=days - 1)


# --- contributions -----------------------------------------------------------------------

def cents(amount: Any) -> int:
    """A NUMERIC(14,2) from a JSON row (int or float: 14 digits survive a double exactly)."""
    return int((Decimal(str(amount)) * 100).to_integral_value(ROUND_HALF_UP))


def format_cents(value: int) -> str:
    sign = "-" if value < 0 else ""
    whole, part = divmod(abs(value), 100)
    return f"{sign}{whole}.{part:02d}"


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utc_day(text: str) -> str:
    return _instant(text).astimezone(UTC).date().isoformat()


def _request(row: Mapping[str, Any]) -> Contribution | None:
    return (row.get("status"), row.get("department_id")), (1, cents(row.get("amount") or 0), 0)


def _quotation(row: Mapping[str, Any]) -> Contribution | None:
    if row.get("status") != "active":
        return None
    return (row.get("purchase_request_id"),), (1, 0, 0)


def _order(row: Mapping[str, Any]) -> Contribution | None:
    return (row.get("delivery_status"), row.get("expected_delivery_date")), (1, 0, 0)


def _approval(row: Mapping[str, Any]) -> Contribution | None:
    decided = row.get("decided_at")
    if decided is None:
        return None
    since = row.get("waiting_since")
    wait, known = 0, 0
    if since is not None:
        wait, known = (_instant(decided) - _instant(since)) // timedelta(microseconds=1), 1
    return (row.get("level"), row.get("verdict"), utc_day(decided)), (1, wait, known)


_CONTRIBUTE: dict[str, Callable[[Mapping[str, Any]], Contribution | None]] = {
    "requests": _request, "quotations": _quotation, "orders": _order,
    "approvals": _approval,
}


def _rows(table: str, op: str, new_row: Mapping[str, Any] | None,
          old_row: Mapping[str, Any] | None) -> tuple[Mapping[str, Any] | None,
                                                     Mapping[str, Any] | None]:
    """The whole row before and after a change (an update logs only changed old values)."""
    if op == "insert":
        return None, new_row
    if op == "delete":
        return old_row, None
    assert new_row is not None
    return {**new_row, **(old_row or {})}, new_row


# --- the state -----------------------------------------------------------------------------

@dataclass(slots=True)
class AggregateState:
    """The cells of every family at `position` (every change <= position applied)."""

    position: int = 0
    # the last position at which any cell moved (or the load): the figures' version
    version: int = 0
    # a resume from before this cannot be answered with what changed: a snapshot is due
    floor: int = 0
    # approvals cells are complete from this UTC day on (the recompute loads the window)
    approvals_from: str = "0001-01-01"
    cells: dict[str, dict[Key, Cell]] = field(
        default_factory=lambda: {family: {} for family in FAMILY_TOPIC})
    dirty: set[str] = field(default_factory=set)  # families moved since `take_dirty`
    # which cell keys each (family, filter) lets through, as far as rendering has asked
    seen: dict[tuple[str, RowFilter], dict[Key, bool]] = field(default_factory=dict)

    def apply(self, table: str, op: str, new_row: Mapping[str, Any] | None,
              old_row: Mapping[str, Any] | None, changed: Mapping[str, Any] | None,
              position: int, sign: int = 1) -> bool:
        """Add one change's effect (sign -1 takes it back out); True when a cell moved."""
        family = FAMILY_OF_TABLE.get(table)
        if family is None:
            return False
        if op == "update" and changed is not None and _RELEVANT[family].isdisjoint(changed):
            return False
        before, after = _rows(table, op, new_row, old_row)
        contribute = _CONTRIBUTE[family]
        old = contribute(before) if before is not None else None
        new = contribute(after) if after is not None else None
        if old == new:
            return False
        cells = self.cells[family]
        if old is not None:
            _add(cells, old, -sign, position)
        if new is not None:
            _add(cells, new, sign, position)
        self.dirty.add(family)
        if sign > 0:
            self.version = max(self.version, position)
        return True

    def unapply(self, table: str, op: str, new_row: Mapping[str, Any] | None,
                old_row: Mapping[str, Any] | None, changed: Mapping[str, Any] | None) -> None:
        """Take a change back out (a snapshot that saw a change not yet sequenced)."""
        self.apply(table, op, new_row, old_row, changed, self.position, sign=-1)

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def prune(self, today: date) -> int:
        """Drop cells that count nothing, and approvals cells older than any window. A
        dropped cell no longer says when it moved: resumes from before it get snapshots."""
        dropped = 0
        first = window_start(today).isoformat()
        for family, cells in self.cells.items():
            for key in [k for k, c in cells.items() if c[0] == 0 and c[1] == 0 and c[2] == 0
                        or family == "approvals" and k[2] < first]:
                cell = cells.pop(key)
                dropped += 1
                if not (family == "approvals" and key[2] < first):
                    self.floor = max(self.floor, cell[3])
        self.approvals_from = max(self.approvals_from, first)
        self.seen.clear()
        return dropped

    def visible_cells(self, family: str, row_filter: RowFilter) -> list[tuple[Key, Cell]]:
        """The cells of `family` that count something and that the filter lets through."""
        cells = self.cells[family]
        if not row_filter.groups:
            return [(key, cell) for key, cell in cells.items() if cell[0]]
        memo = self.seen.setdefault((family, row_filter), {})
        out: list[tuple[Key, Cell]] = []
        for key, cell in cells.items():
            if cell[0]:
                seen = memo.get(key)
                if seen is None:
                    seen = memo[key] = _visible(family, key, row_filter)
                if seen:
                    out.append((key, cell))
        return out

    def changed_since(self, family: str, row_filter: RowFilter, since: int) -> bool:
        """Did a cell of `family` that the filter lets through move after `since`?"""
        return any(cell[3] > since and _visible(family, key, row_filter)
                   for key, cell in self.cells[family].items())

    def size(self) -> int:
        return sum(len(cells) for cells in self.cells.values())


def _add(cells: dict[Key, Cell], contribution: Contribution, sign: int, position: int) -> None:
    key, (count, a, b) = contribution
    cell = cells.get(key)
    if cell is None:
        cell = cells[key] = [0, 0, 0, position]
    cell[0] += sign * count
    cell[1] += sign * a
    cell[2] += sign * b
    cell[3] = max(cell[3], position)


def _visible(family: str, key: Key, row_filter: RowFilter) -> bool:
    if not row_filter.groups:
        return True
    return row_filter.matches_row(dict(zip(_KEY_COLUMNS[family], key, strict=False)))


# --- who sees what, and what a subscriber asked for -------------------------------------------

@dataclass(frozen=True, slots=True)
class Scope:
    """The families a caller may see, each with its permission filter."""

    filters: Mapping[str, RowFilter]
    key: str  # equal scopes, equal keys (subscribers of one scope share their frames)


def on_key(row_filter: RowFilter, columns: tuple[str, ...]) -> RowFilter:
    """The filter as it judges a cell key: a test of a column the key does not have sees
    null (a requester's own-requests clause never holds, so it goes), and equal results
    make equal filters (the requesters of one department share one scope)."""
    groups: list[tuple[Clause, ...]] = []
    for group in row_filter.groups:
        clauses: list[Clause] = []
        for clause in group:
            kept = [(name, values) for name, values in clause if name in columns]
            if all(name in columns or NULL_KEY in values for name, values in clause):
                clauses.append(tuple(kept))
        if any(not clause for clause in clauses):
            continue  # a clause with no test left always holds: so does the group
        groups.append(tuple(clauses))  # no clause left: the group (and filter) never holds
    return RowFilter(tuple(groups))


def scope_for(principal: Principal) -> Scope:
    by_topic = readable_filters(principal, tuple(FAMILY_TOPIC.values()))
    filters = {family: on_key(by_topic[topic], _KEY_COLUMNS[family])
               for family, topic in FAMILY_TOPIC.items() if topic in by_topic}
    key = ";".join(f"{family}:{scope_key(f)}" for family, f in sorted(filters.items()))
    return Scope(filters, key)


@dataclass(frozen=True, slots=True)
class DashboardPlan:
    """What one subscriber (or REST caller) gets: its scope, the figures, the window."""

    scope: Scope
    names: tuple[str, ...]
    window: str = DEFAULT_WINDOW

    @property
    def days(self) -> int:
        return WINDOWS[self.window]

    @property
    def key(self) -> tuple[str, tuple[str, ...], str]:
        return self.scope.key, self.names, self.window

    @property
    def families(self) -> frozenset[str]:
        return frozenset(AGGREGATE_FAMILY[name] for name in self.names)


def _invalid(message: str) -> AccessError:
    return AccessError("invalid_filter", message)


def dashboard_plan(principal: Principal, filters: Mapping[str, Any] | None) -> DashboardPlan:
    """The plan for `filters` ({aggregates?: name | [names], window?: "1d" | "7d" | "30d"}),
    or AccessError: invalid_filter (naming the valid names), forbidden (a figure the
    caller's role may not see)."""
    scope = scope_for(principal)
    filters = dict(filters or {})
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise _invalid(f"dashboard filters take {', '.join(FILTER_KEYS)}; not {unknown[0]!r}")
    window = filters.get("window")
    if window is None:
        window = DEFAULT_WINDOW
    if not isinstance(window, str) or window not in WINDOWS:
        raise _invalid(f"unknown window {window!r}; valid windows: {', '.join(WINDOWS)}")
    wanted = filters.get("aggregates")
    if wanted is None:
        names = tuple(n for n in AGGREGATES if AGGREGATE_FAMILY[n] in scope.filters)
        return DashboardPlan(scope, names, window)
    listed: Iterable[Any] = wanted if isinstance(wanted, (list, tuple)) else (wanted,)
    chosen: list[str] = []
    for name in listed:
        if not isinstance(name, str) or name not in AGGREGATE_FAMILY:
            raise _invalid(f"unknown aggregate {name!r}; valid aggregates: "
                           f"{', '.join(AGGREGATES)}")
        if AGGREGATE_FAMILY[name] not in scope.filters:
            raise AccessError("forbidden", f"role {principal.role} may not see {name}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise _invalid(f"name at least one aggregate; valid aggregates: {', '.join(AGGREGATES)}")
    return DashboardPlan(scope, tuple(n for n in AGGREGATES if n in chosen), window)


# --- rendering -----------------------------------------------------------------------------

def average_seconds(total_microseconds: int, decisions: int) -> float:
    """The mean wait in seconds, rounded to the millisecond (half away from zero)."""
    ms = (Decimal(total_microseconds) / Decimal(decisions * 1000)).to_integral_value(
        ROUND_HALF_UP)
    return int(ms) / 1000


def render(state: AggregateState, plan: DashboardPlan, today: date,
           only: Iterable[str] | None = None) -> dict[str, Any]:
    """The figures of `plan` (or of `only` among them) from the cells, as of `today`."""
    names = plan.names if only is None else tuple(n for n in plan.names if n in set(only))
    families = {AGGREGATE_FAMILY[n] for n in names}
    visible = {family: state.visible_cells(family, plan.scope.filters[family])
               for family in families}
    first = window_start(today, plan.days).isoformat()
    last = today.isoformat()
    out: dict[str, Any] = {}
    for name in names:
        out[name] = _RENDER[name](visible[AGGREGATE_FAMILY[name]], first, last)
    return out


def _by_status(cells: list[tuple[Key, Cell]], first: str, last: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status, _dept), cell in cells:
        out[status] = out.get(status, 0) + cell[0]
    return {k: v for k, v in out.items() if v}


def _pending(cells: list[tuple[Key, Cell]], first: str, last: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status, _dept), cell in cells:
        if isinstance(status, str) and status.startswith("pending_a"):
            out[status[-1]] = out.get(status[-1], 0) + cell[0]
    return {k: v for k, v in out.items() if v}


def _by_department(cells: list[tuple[Key, Cell]], first: str, last: str
                   ) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (status, dept), cell in cells:
        out.setdefault(str(dept), {})[status] = {"count": cell[0],
                                                 "amount": format_cents(cell[1])}
    return out


def _awaiting(cells: list[tuple[Key, Cell]], first: str, last: str) -> dict[str, int]:
    return {str(request): cell[0] for (request,), cell in cells}


def _by_delivery(cells: list[tuple[Key, Cell]], first: str, last: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status, _expected), cell in cells:
        out[status] = out.get(status, 0) + cell[0]
    return {k: v for k, v in out.items() if v}


LATE_STATUSES = ("pending", "in_transit")


def _late(cells: list[tuple[Key, Cell]], first: str, last: str) -> int:
    return sum(cell[0] for (status, expected), cell in cells
               if status == "late"
               or status in LATE_STATUSES and expected is not None and expected < last)


def _per_day(cells: list[tuple[Key, Cell]], first: str, last: str
             ) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (_level, verdict, day), cell in cells:
        if first <= day <= last:
            per = out.setdefault(day, {})
            per[verdict] = per.get(verdict, 0) + cell[0]
    return {day: {v: n for v, n in per.items() if n} for day, per in sorted(out.items())
            if any(per.values())}


def _average_wait(cells: list[tuple[Key, Cell]], first: str, last: str
                  ) -> dict[str, dict[str, Any]]:
    sums: dict[str, list[int]] = {}
    for (level, _verdict, day), cell in cells:
        if first <= day <= last:
            acc = sums.setdefault(str(level), [0, 0])
            acc[0] += cell[1]
            acc[1] += cell[2]
    return {level: {"decisions": n, "averageSeconds": average_seconds(total, n)}
            for level, (total, n) in sorted(sums.items()) if n}


_RENDER: dict[str, Callable[[list[tuple[Key, Cell]], str, str], Any]] = {
    "requestsByStatus": _by_status,
    "pendingByLevel": _pending,
    "requestsByDepartment": _by_department,
    "quotationsAwaitingDecision": _awaiting,
    "ordersByDeliveryStatus": _by_delivery,
    "lateOrders": _late,
    "approvalsPerDay": _per_day,
    "averageWaitByLevel": _average_wait,
}


# --- what the REST side reads ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DashboardView:
    """The figures of one plan at `offset` (every change <= offset), as of `today`."""

    offset: int
    today: date
    aggregates: dict[str, Any]


class DashboardSource(Protocol):
    """What the HTTP side needs of the aggregates actor: read-only, from memory. The
    composition root (node/) hands it the actor (actors/aggregates.py)."""

    @property
    def position(self) -> int:
        """Every change up to here is in the figures."""
        ...

    def version(self) -> str:
        """Moves whenever a figure may have moved (ETag input): the last position that
        moved a cell, and the day of the time-dependent figures."""
        ...

    def today(self) -> date:
        """The UTC date of the clock the figures use."""
        ...

    def view(self, plan: DashboardPlan) -> DashboardView:
        """The plan's figures now."""
        ...

    async def wait_position(self, position: int) -> None:
        """Return once the figures include `position` (callers bound the wait)."""
        ...
