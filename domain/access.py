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

Values compare by JSON value (docs/protocol.md section 5): `true` is not `1`, `1` is
`1.0`, the text `"10"` is not the number `10`, and only null is null. `canonical` gives
each value a key that keeps these apart; `filter_sql` computes the same key in
PostgreSQL from the column's JSON value (`to_jsonb`, as the change log records rows).

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
| dashboard | own dept's figures | level N's figures | the figures of what it sees | all |

The dashboard's figures (domain/aggregates.py) are scoped with the same rules: each
aggregate counts the rows of one table, and a caller gets it only when it may read that
table's topic, counted over the rows its filter lets through (`readable_filters`). The
filter is applied to the aggregate's group key (status, department, level, ...), which
does not hold the requester: a requester's figures are their department's.

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

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from psycopg import sql

from sinal.domain.catalogue import ALL_TOPICS, DASHBOARD_TOPIC, NOTIFICATION_TOPIC
from sinal.domain.principals import Principal

Scalar = str | int | float | bool | None


class AccessError(Exception):
    """`code` is a protocol error code: unknown_topic, forbidden, invalid_filter."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A value's key (`canonical`): a string is its own key; every other value is a small tuple,
# so no string can ever equal a number, a boolean or null.
Key = str | tuple[str, ...]

# A clause: field -> allowed keys. A disjunction of clauses ORs them; a filter is a
# conjunction of disjunctions. Kept as frozen tuples so equal filters hash equal and
# subscribers with the same filter share one evaluation per change.
Clause = tuple[tuple[str, frozenset[Key]], ...]

NULL_KEY: Key = ("null",)
TRUE_KEY: Key = ("true",)
FALSE_KEY: Key = ("false",)
CONTAINER_KEY: Key = ("{",)  # arrays and maps: never equal to a filter's scalar
_EXACT_FLOAT_INTS = 2.0**53  # below this, an integral float's repr is its exact digits


def _number_text(value: float | Decimal) -> str:
    """A number in plain decimal, without exponent or trailing zeros: `1.0` and `1` give
    "1", `1250.50` gives "1250.5" (as PostgreSQL's `trim_scale(numeric)::text`). A float
    is read as the decimal JSON writes for it (its repr)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_INTS:
            return str(int(value))
        if not math.isfinite(value):
            return repr(value)  # JSON has no such number: it equals no JSON number
        value = Decimal(repr(value))
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def canonical(value: Any) -> Key:
    """The key under which filter values and row values compare: by JSON value. Rows are
    JSON (uuids, dates and times are strings there). A string is its own key (fan-out's
    fast path); numbers compare by value (`1` is `1.0`); true, false and null each equal
    only themselves."""
    kind = type(value)
    if kind is str:
        return cast(str, value)
    if value is None:
        return NULL_KEY
    if kind is bool:
        return TRUE_KEY if value else FALSE_KEY
    if kind is int:
        return ("#", str(value))
    if kind is float or kind is Decimal:
        return ("#", _number_text(value))
    if kind is list or kind is dict or kind is tuple:
        return CONTAINER_KEY
    return str(value)  # a uuid.UUID, a date: their JSON form is their text


def key_text(key: Key) -> str:
    """A key as text, the form `filter_sql` computes in SQL: a string behind a quote
    (`'pending_a1`), a number behind `#` (`#7`), `null`, `true`, `false`."""
    return "'" + key if isinstance(key, str) else "".join(key)


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
        out.append((name, frozenset(canonical(value) for value in values)))
    return tuple(out)


EVERYTHING = RowFilter()


def permission_filter(principal: Principal, topic: str) -> RowFilter:
    """The rows of `topic` this user may see, or AccessError."""
    if topic not in ALL_TOPICS:
        raise AccessError("unknown_topic", f"unknown topic {topic!r}")
    role = principal.role
    if topic == NOTIFICATION_TOPIC:
        return RowFilter(((_clause(user_id=principal.user_id, push=True),),))
    if topic == DASHBOARD_TOPIC:
        return EVERYTHING  # every role; each figure is scoped by `readable_filters`
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


def readable_filters(principal: Principal, topics: tuple[str, ...]) -> dict[str, RowFilter]:
    """The permission filter of each of `topics` this user may read (the others are left
    out): what the dashboard counts for them."""
    out: dict[str, RowFilter] = {}
    for topic in topics:
        try:
            out[topic] = permission_filter(principal, topic)
        except AccessError:
            continue
    return out


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
    do not iterate in a stable order across processes), and different filters, different
    text (JSON quotes every value). REST ETags are made from it."""
    if not row_filter.groups:
        return "*"
    groups = sorted(
        sorted(
            [[name, sorted(key_text(key) for key in keys)] for name, keys in clause]
            for clause in group
        )
        for group in row_filter.groups
    )
    return json.dumps(groups, ensure_ascii=False, separators=(",", ":"))


# A column's key as `key_text` writes it, computed by PostgreSQL. Text, uuid, integer and
# boolean columns take a direct branch; every other type goes through its JSON value
# (to_jsonb, as the change log records rows), so SQL and Python agree on every type.
_KEY_SQL = """(CASE WHEN {c} IS NULL THEN 'null'
 WHEN pg_typeof({c}) = ANY('{{text,character varying,uuid}}'::regtype[]) THEN '''' || {c}::text
 WHEN pg_typeof({c}) = ANY('{{smallint,integer,bigint}}'::regtype[]) THEN '#' || {c}::text
 WHEN pg_typeof({c}) = 'boolean'::regtype THEN {c}::text
 ELSE CASE jsonb_typeof(to_jsonb({c}))
  WHEN 'string' THEN '''' || (to_jsonb({c}) #>> '{{}}')
  WHEN 'number' THEN '#' || trim_scale((to_jsonb({c}) #>> '{{}}')::numeric)::text
  WHEN 'boolean' THEN to_jsonb({c}) #>> '{{}}'
  WHEN 'null' THEN 'null'
  ELSE '{{' END END)"""


def column_key_sql(column: sql.Composable) -> sql.Composable:
    """SQL for `key_text(canonical(<the column's JSON value>))`."""
    return sql.SQL(_KEY_SQL).format(c=column)


def filter_sql(row_filter: RowFilter, alias: str = "t") -> tuple[sql.Composable, list[Any]]:
    """The filter as a WHERE condition over `alias` and its parameters (TRUE when empty).
    Each named column's key (`column_key_sql`) must be one of its clause's keys
    (`key_text`): SQL compares by JSON value exactly as `RowFilter.matches_row` does."""
    params: list[Any] = []
    group_parts: list[sql.Composable] = []
    for group in row_filter.groups:
        clause_parts: list[sql.Composable] = []
        for clause in group:
            field_parts: list[sql.Composable] = []
            for name, keys in clause:
                # PostgreSQL text holds no NUL: a key with one equals no column's key
                texts = sorted(text for text in map(key_text, keys) if "\x00" not in text)
                if not texts:
                    field_parts.append(sql.SQL("FALSE"))
                    continue
                field_parts.append(sql.SQL("{} = ANY(%s::text[])").format(
                    column_key_sql(sql.Identifier(alias, name))))
                params.append(texts)
            clause_parts.append(sql.SQL("({})").format(
                sql.SQL(" AND ").join(field_parts) if field_parts else sql.SQL("TRUE")))
        group_parts.append(sql.SQL("({})").format(
            sql.SQL(" OR ").join(clause_parts) if clause_parts else sql.SQL("FALSE")))
    if not group_parts:
        return sql.SQL("TRUE"), params
    return sql.SQL(" AND ").join(group_parts), params
