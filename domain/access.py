"""Who may see what: authorisation decided once, at subscribe time, as row filters.

A subscription is (topic, filter). The filter is the conjunction of the permission the
user's role grants on that topic and the client's own filters. Fan-out evaluates it per
change with a few dict look-ups and nothing else: no query, no role check.

A filter matches a change when the row after the change matches, or the row before it
does (so a card that leaves an approver's column reaches that approver, and a delete
reaches whoever saw the row).

Permissions (the seed's security rules, made precise):

| topic | requester | approver_aN | buyer | admin |
|---|---|---|---|---|
| purchase_request_changed | own or own dept's | status = pending_aN | approved..delivered | all |
| approval_changed | - | level = N | - | all |
| quotation_changed | - | - | all | all |
| purchase_order_changed | - | - | all | all |
| supplier_changed | - | - | all | all |
| user_changed, department_changed | - | - | - | all |
| metrics | - | - | - | all |
| notifications | own | own | own | own |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DATA_TOPICS = (
    "purchase_request_changed",
    "approval_changed",
    "quotation_changed",
    "purchase_order_changed",
    "supplier_changed",
    "user_changed",
    "department_changed",
)
NOTIFICATION_TOPIC = "notifications"
METRICS_TOPIC = "metrics"
ALL_TOPICS = (*DATA_TOPICS, NOTIFICATION_TOPIC, METRICS_TOPIC)

MAX_FILTER_FIELDS = 16
MAX_FILTER_VALUES = 256
Scalar = str | int | float | bool | None


class AccessError(Exception):
    """`code` is a protocol error code: unknown_topic, forbidden, invalid_filter."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    department_id: str | None


# A clause: field -> allowed values. A disjunction of clauses ORs them; a filter is a
# conjunction of disjunctions. Kept as frozen tuples so equal filters hash equal and
# subscribers with the same filter share one evaluation per change.
Clause = tuple[tuple[str, frozenset[str]], ...]


def _norm(value: Any) -> str:
    """Values compare as text: JSON rows carry uuids and numerics as strings."""
    if value is None:
        return "\x00null"
    if isinstance(value, bool):
        return "\x00true" if value else "\x00false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """AND over groups; each group is an OR over clauses; a clause is AND over fields."""

    groups: tuple[tuple[Clause, ...], ...] = ()

    def matches_row(self, row: Mapping[str, Any]) -> bool:
        for group in self.groups:
            if not any(all(_norm(row.get(f)) in vals for f, vals in clause)
                       for clause in group):
                return False
        return True

    def matches(self, new_row: Mapping[str, Any] | None, old_row: Mapping[str, Any] | None,
                op: str) -> bool:
        if not self.groups:
            return True
        if new_row is not None and self.matches_row(new_row):
            return True
        if old_row is None:
            return False
        if op == "update" and new_row is not None:
            # old_row of an update holds only the changed fields' old values
            return self.matches_row({**new_row, **old_row})
        return self.matches_row(old_row)

    def and_also(self, other: RowFilter) -> RowFilter:
        return RowFilter(self.groups + other.groups)


def _clause(**fields: Any) -> Clause:
    out = []
    for name, values in sorted(fields.items()):
        if not isinstance(values, (list, tuple, set, frozenset)):
            values = [values]
        out.append((name, frozenset(_norm(v) for v in values)))
    return tuple(out)


EVERYTHING = RowFilter()


def permission_filter(principal: Principal, topic: str) -> RowFilter:
    """The rows of `topic` this user may see, or AccessError."""
    if topic not in ALL_TOPICS:
        raise AccessError("unknown_topic", f"unknown topic {topic!r}")
    role = principal.role
    if topic == NOTIFICATION_TOPIC:
        return RowFilter(((_clause(user_id=principal.user_id, push=True),),))
    if role == "admin":
        return EVERYTHING
    denied = AccessError("forbidden", f"role {role} may not subscribe to {topic}")
    if topic == "purchase_request_changed":
        if role == "requester":
            clauses = [_clause(requester_id=principal.user_id)]
            if principal.department_id:
                clauses.append(_clause(department_id=principal.department_id))
            return RowFilter((tuple(clauses),))
        if role.startswith("approver_a"):
            return RowFilter(((_clause(status=f"pending_{role[-2:]}"),),))
        if role == "buyer":
            return RowFilter(((_clause(status=["approved", "quoting", "ordered",
                                               "delivered"]),),))
        raise denied
    if topic == "approval_changed" and role.startswith("approver_a"):
        return RowFilter(((_clause(level=int(role[-1])),),))
    if topic in ("quotation_changed", "purchase_order_changed", "supplier_changed") \
            and role == "buyer":
        return EVERYTHING
    raise denied


def client_filter(raw: Any) -> RowFilter:
    """A client's `filters` map: {field: scalar | [scalars]} -> equality / membership."""
    if raw is None:
        return EVERYTHING
    if not isinstance(raw, Mapping):
        raise AccessError("invalid_filter", "filters must be a map of field to value(s)")
    if len(raw) > MAX_FILTER_FIELDS:
        raise AccessError("invalid_filter", f"at most {MAX_FILTER_FIELDS} filter fields")
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 63:
            raise AccessError("invalid_filter", f"bad filter field {name!r}")
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise AccessError("invalid_filter",
                              f"filter {name}: 1 to {MAX_FILTER_VALUES} values")
        for v in values:
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise AccessError("invalid_filter", f"filter {name}: values must be scalars")
        fields[name] = values
    if not fields:
        return EVERYTHING
    return RowFilter(((_clause(**fields),),))


def subscription_filter(principal: Principal, topic: str, raw_filters: Any) -> RowFilter:
    return permission_filter(principal, topic).and_also(client_filter(raw_filters))
