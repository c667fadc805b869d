"""The readable resources: which table and topic each one is, its fields, and the caller's
permissions as SQL.

A REST read shows exactly what a subscription shows: the row filter comes from
`actors.access.permission_filter(principal, topic)`. Deltas evaluate that filter in
Python on change-log rows, like the topic does; full lists translate it to SQL here. The
two agree because both compare values as text (`actors.access._norm` on the JSON row,
`column::text` in SQL) -- tests/api/test_api_delta.py checks it on random histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from sinal.api.problems import Problem
from sinal.domain.access import RowFilter

_NULL, _TRUE, _FALSE = "\x00null", "\x00true", "\x00false"


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # the URL segment: /api/<name>
    table: str
    topic: str
    fields: tuple[str, ...]  # the table's columns, in order (tests check them against the DB)

    @property
    def path(self) -> str:
        return f"/api/{self.name}"


RESOURCES: dict[str, Resource] = {r.name: r for r in (
    Resource("purchase-requests", "purchase_requests", "purchase_request_changed", (
        "id", "title", "description", "requester_id", "department_id", "amount", "currency",
        "items", "status", "needed_by", "created_at", "updated_at")),
    Resource("quotations", "quotations", "quotation_changed", (
        "id", "purchase_request_id", "supplier_id", "amount", "currency", "delivery_days",
        "status", "valid_until", "notes", "created_at", "updated_at")),
    Resource("purchase-orders", "purchase_orders", "purchase_order_changed", (
        "id", "purchase_request_id", "quotation_id", "supplier_id", "buyer_id", "amount",
        "currency", "status", "delivery_status", "expected_delivery_date", "delivered_at",
        "created_at", "updated_at")),
    Resource("approvals", "approvals", "approval_changed", (
        "id", "purchase_request_id", "level", "approver_id", "verdict", "comment",
        "decided_at", "created_at", "updated_at")),
)}

MAX_FIELDS_PARAMETER = 1000  # characters of ?fields=


def parse_fields(raw: str | None, resource: Resource) -> tuple[str, ...]:
    """`?fields=a,b` -> ("id", "a", "b") in the resource's column order; absent: all."""
    if raw is None:
        return resource.fields
    if len(raw) > MAX_FIELDS_PARAMETER:
        raise Problem(400, "invalid_parameter", "query parameter 'fields' is too long",
                      extra={"parameter": "fields"})
    wanted = {name.strip() for name in raw.split(",") if name.strip()}
    if not wanted:
        raise Problem(400, "invalid_parameter",
                      "query parameter 'fields': a comma-separated list of field names",
                      extra={"parameter": "fields"})
    unknown = sorted(wanted.difference(resource.fields))
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        raise Problem(400, "unknown_field",
                      f"{resource.name} has no field {shown}; fields: "
                      + ", ".join(resource.fields),
                      extra={"parameter": "fields"})
    wanted.add("id")
    return tuple(f for f in resource.fields if f in wanted)


def project(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The row's `fields`, in that order (pass `resource.fields` for every field)."""
    return {f: row.get(f) for f in fields}


def scope_key(row_filter: RowFilter) -> str:
    """A canonical text for a permission filter: equal filters, equal text, on every node
    (frozensets do not iterate in a stable order across processes)."""
    groups = []
    for group in row_filter.groups:
        clauses = sorted(
            ";".join(f"{name}={','.join(sorted(values))}" for name, values in clause)
            for clause in group
        )
        groups.append("|".join(clauses))
    return "&".join(sorted(groups)) or "*"


def filter_sql(row_filter: RowFilter, alias: str = "t") -> tuple[sql.Composable, list[Any]]:
    """The filter as a WHERE condition over `alias` and its parameters (TRUE when empty)."""
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
                if _NULL in values:
                    options.append(sql.SQL("{} IS NULL").format(column))
                if _TRUE in values:
                    options.append(sql.SQL("{} IS TRUE").format(column))
                if _FALSE in values:
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
