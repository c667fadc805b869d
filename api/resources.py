"""The REST resources (derived from the topic catalogue, domain/catalogue.py) and the
parameters that shape a row: `?fields=` and its projection.

A REST read shows exactly what a subscription shows: the row filter comes from
`sinal.domain.access.permission_filter(principal, topic)`.
"""

from __future__ import annotations

from typing import Any

from sinal.api.problems import Problem
from sinal.domain.catalogue import RESOURCES, Resource

__all__ = ["LISTS", "RESOURCES", "Resource", "parse_fields", "project"]

LISTS: dict[str, Resource] = {spec.path: spec for spec in RESOURCES.values()}

MAX_FIELDS_PARAMETER = 1000  # characters of ?fields=

def parse_fields(raw: str | None, resource: Resource) -> tuple[str, ...]:
    """`?fields=a,b` -> ("id", "a", "b") in the resource's column order; absent: all."""
    if raw is None:
        return resource.columns
    if len(raw) > MAX_FIELDS_PARAMETER:
        raise Problem(400, "invalid_parameter", "query parameter 'fields' is too long",
                      extra={"parameter": "fields"})
    wanted = {name.strip() for name in raw.split(",") if name.strip()}
    if not wanted:
        raise Problem(400, "invalid_parameter",
                      "query parameter 'fields': a comma-separated list of field names",
                      extra={"parameter": "fields"})
    unknown = sorted(wanted.difference(resource.columns))
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        raise Problem(400, "unknown_field",
                      f"{resource.name} has no field {shown}; fields: "
                      + ", ".join(resource.columns),
                      extra={"parameter": "fields"})
    wanted.add("id")
    return tuple(f for f in resource.columns if f in wanted)


def project(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The row's `fields`, in that order (pass `resource.columns` for every field)."""
    return {f: row.get(f) for f in fields}

