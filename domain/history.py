"""A purchase request's history, from the change log: every change of the request and of
its approvals, quotations and orders, in position order, with who made it.

The log keeps each change's rows (sql/003_change_capture.sql), the acting user the writer
named in its transaction (`change_log.actor_id`, sql/007_actors_and_waits.sql; NULL for
writers that did not: shown as unknown) and the request each change belongs to
(`sinal_request_of`, indexed with the position). A deleted child still shows: its delete
carries the row it removed.

One read: the sequencer first (the caller sees its own writes), then one REPEATABLE READ,
READ ONLY transaction reads the head, the retention floor, the request (its row, or the
row its delete removed) and its changes after `after`. Retention deletes old changes: a
history whose request's own insert is no longer in the log is incomplete, and says so
(`History.complete` false; everything up to `History.retained_since` may be gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from sinal.domain.workflow import SYSTEM_ACTOR

RESOURCE_OF_TABLE: dict[str, str] = {
    "purchase_requests": "purchase_request",
    "approvals": "approval",
    "quotations": "quotation",
    "purchase_orders": "purchase_order",
}
# the same list as the partial index idx_change_log_request (so the planner can use it)
_OF_REQUEST = ("sinal_request_of(c.table_name, c.row_id, c.new_row, c.old_row) = %(id)s "
               "AND c.table_name IN ('purchase_requests', 'approvals', 'quotations', "
               "'purchase_orders')")


@dataclass(frozen=True, slots=True)
class History:
    request: dict[str, Any]  # the request's row, or the row its delete removed
    deleted: bool
    entries: list[dict[str, Any]]
    offset: int  # the log's head: every change up to here is considered
    retained_since: int  # changes after this position are all still kept
    complete: bool  # the request's own insert is in the log: nothing is missing
    has_more: bool  # more entries after the last one (ask again with after=)


def read_history(conn: psycopg.Connection[Any], request_id: str, after: int = 0,
                 limit: int = 1000) -> History | None:
    """The history of `request_id` after position `after` (None: no such request, in the
    table or in the log)."""
    conn.execute("SELECT sinal_sequence_changes()")
    params: dict[str, Any] = {"id": request_id, "after": after, "limit": limit + 1}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        head_row = conn.execute(
            "SELECT position, sinal_retained_since() FROM change_log_head").fetchone()
        assert head_row is not None
        head, floor = (int(v) for v in _values(head_row))
        found = conn.execute("SELECT to_jsonb(t) FROM purchase_requests AS t WHERE t.id = %s",
                             (request_id,)).fetchone()
        deleted = False
        if found is not None:
            request = _values(found)[0]
        else:
            gone = conn.execute(
                f"SELECT c.old_row FROM change_log AS c WHERE {_OF_REQUEST} "
                "AND c.table_name = 'purchase_requests' AND c.op = 'delete' "
                "AND c.position IS NOT NULL ORDER BY c.position DESC LIMIT 1",
                params).fetchone()
            if gone is None:
                return None
            request, deleted = _values(gone)[0], True
        inserted = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM change_log AS c WHERE {_OF_REQUEST} "
            "AND c.table_name = 'purchase_requests' AND c.op = 'insert' "
            "AND c.position IS NOT NULL)", params).fetchone()
        rows = conn.execute(
            "SELECT c.position, to_jsonb(c.changed_at) #>> '{}', c.table_name, c.row_id, c.op, "
            "c.new_row, c.old_row, c.changed, c.actor_id, u.name, u.email "
            f"FROM change_log AS c LEFT JOIN users AS u ON u.id::text = c.actor_id "
            f"WHERE {_OF_REQUEST} AND c.position > %(after)s AND c.position IS NOT NULL "
            "ORDER BY c.position LIMIT %(limit)s", params).fetchall()
    entries = [_entry(_values(row)) for row in rows[:limit]]
    return History(request=request, deleted=deleted, entries=entries, offset=head,
                   retained_since=floor, complete=bool(inserted and _values(inserted)[0]),
                   has_more=len(rows) > limit)


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def actor_of(actor_id: str | None, name: str | None, email: str | None
             ) -> dict[str, Any] | None:
    """Who made a change: a user, Sinal itself (`system`), or None (unknown)."""
    if actor_id is None:
        return None
    if actor_id.startswith(SYSTEM_ACTOR):
        return {"system": actor_id.removeprefix(SYSTEM_ACTOR)}
    return {"id": actor_id, "name": name, "email": email}


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    (position, at, table, row_id, op, new_row, old_row, changed, actor_id, name,
     email) = row
    fields: dict[str, Any]
    previous: dict[str, Any]
    if op == "insert":
        fields, previous = new_row or {}, {}
    elif op == "update":
        fields, previous = changed or {}, old_row or {}
    else:
        fields, previous = {}, old_row or {}
    return {"offset": int(position), "at": at, "resource": RESOURCE_OF_TABLE[table],
            "id": row_id, "op": op, "changed": fields, "previous": previous,
            "actor": actor_of(actor_id, name, email)}
