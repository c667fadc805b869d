"""Who may see what: authorisation decided once, at subscribe (or request) time, as row
filters compiled from the principal and the topic.

A subscription is (topic, filter). The filter is the conjunction of the permission the
user's role grants on that topic and the client's own filters. Fan-out evaluates it per
change with a few dict look-ups and nothing else: no query, no role check. REST reads use
the same filter: evaluated in Python on change-log rows for deltas, translated to SQL
(`filter_sql`) for full lists; both compare values the same way (`canonical`).

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
| department_changed | all | all | all | all |
| user_changed | own row | own row | own row | all |
| metrics | - | - | - | all |
| notifications | own | own | own | own |

Departments (names only) are readable by everyone: a requester names one when filing, and
a client shows them. Users are people: a non-admin sees only their own row (e-mail
included), admins every row; so no one but an admin and the user reads an e-mail. These
rules are the subscriptions' too (one rule for both ways in): before issue #10 only admins
could subscribe to `user_changed` and `department_changed`; now anyone may, and sees there
exactly what GET /api/users and /api/departments show them.

Client filters arrive validated by the protocol (`sinal.protocol.fields.filters`: the one
validator, with the limits docs/protocol.md documents); here they are only compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from sinal.domain.catalogue import ALL_TOPICS, NOTIFICATION_TOPIC
from sinal.domain.principals import Principal

Scalar = str | int | float | bool | None


class AccessError(Exception):
    """`code` is a protocol error code: unknown_topic, forbidden, invalid_filter."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A clause: field -> allowed values. A disjunction of clauses ORs them; a filter is a
# conjunction of disjunctions. Kept as frozen tuples so equal filters hash equal and
# subscribers with the same filter share one evaluation per change.
Clause = tuple[tuple[str, frozenset[str]], ...]


# The canonical forms of the three JSON constants; every other value is its text.
NULL_VALUE, TRUE_VALUE, FALSE_VALUE = "\x00null", "\x00true", "\x00false"


def canonical(value: Any) -> str:
    """The form in which filter values and row values compare: text (JSON rows carry uuids
    and numerics as strings), with null, true and false kept apart from any text."""
    if value is None:
        return NULL_VALUE
    if isinstance(value, bool):
        return TRUE_VALUE if value else FALSE_VALUE
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """AND over groups; each group is an OR over clauses; a clause is AND over fields."""

    groups: tuple[tuple[Clause, ...], ...] = ()

    def matches_row(self, row: Mapping[str, Any]) -> bool:
        for group in self.groups:
            if not any(all(canonical(row.get(f)) in vals for f, vals in clause)
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
        out.append((name, frozenset(canonical(v) for v in values)))
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
    if topic == "department_changed":
        return EVERYTHING
    if topic == "user_changed":
        return RowFilter(((_clause(id=principal.user_id),),))
    if topic == "approval_changed" and role.startswith("approver_a"):
        return RowFilter(((_clause(level=int(role[-1])),),))
    if topic in ("quotation_changed", "purchase_order_changed", "supplier_changed") \
            and role == "buyer":
        return EVERYTHING
    raise denied


def client_filter(filters: Mapping[str, Any] | None) -> RowFilter:
    """A client's `filters` ({column: scalar | [scalars]}, already validated by
    `sinal.protocol.fields.filters`) compiled to equality / membership."""
    if not filters:
        return EVERYTHING
    return RowFilter(((_clause(**dict(filters)),),))


def subscription_filter(principal: Principal, topic: str, raw_filters: Any) -> RowFilter:
    return permission_filter(principal, topic).and_also(client_filter(raw_filters))


def scope_key(row_filter: RowFilter) -> str:
    """A canonical text for a filter: equal filters, equal text, on every node (frozensets
    do not iterate in a stable order across processes). REST ETags are made from it."""
    groups = []
    for group in row_filter.groups:
        clauses = sorted(
            ";".join(f"{name}={','.join(sorted(values))}" for name, values in clause)
            for clause in group
        )
        groups.append("|".join(clauses))
    return "&".join(sorted(groups)) or "*"


def filter_sql(row_filter: RowFilter, alias: str = "t") -> tuple[sql.Composable, list[Any]]:
    """The filter as a WHERE condition over `alias` and its parameters (TRUE when empty):
    `column::text` compares like `canonical` does on JSON rows."""
    params: list[Any] = []
    group_parts: list[sql.Composable] = []
    for group in row_filter.groups:
        clause_parts: list[sql.Composable] = []
        for clause in group:
            field_parts: list[sql.Composable] = []
            for name, values in clause:
                column = sql.Identifier(alias, name)
                options: list[sql.Composable] = []
                texts = sorted(v for v in values if not v.startswith("\x00"))
                if texts:
                    options.append(sql.SQL("{}::text = ANY(%s)").format(column))
                    params.append(texts)
                if NULL_VALUE in values:
                    options.append(sql.SQL("{} IS NULL").format(column))
                if TRUE_VALUE in values:
                    options.append(sql.SQL("{} IS TRUE").format(column))
                if FALSE_VALUE in values:
                    options.append(sql.SQL("{} IS FALSE").format(column))
                if not options:
                    options.append(sql.SQL("FALSE"))
                field_parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(options)))
            clause_parts.append(sql.SQL("({})").format(
                sql.SQL(" AND ").join(field_parts) if field_parts else sql.SQL("TRUE")))
        group_parts.append(sql.SQL("({})").format(
            sql.SQL(" OR ").join(clause_parts) if clause_parts else sql.SQL("FALSE")))
    if not group_parts:
        return sql.SQL("TRUE"), params
    return sql.SQL(" AND ").join(group_parts), params
