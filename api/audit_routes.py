"""GET /api/audit: the audit trail (`audit_logs`), for admins only (403 otherwise).

    GET /api/audit[?since=<id>][&limit=100][&cursor=...][&table=http][&action=forbidden]

Rows in id order, oldest first (a reader keeps the last id it saw and asks `since=` it
next time, like a delta): `{data, nextCursor, timestamp}`, each row `{id, table_name,
record_id, action, actor_id, details, created_at}`. `since` is an audit row id: rows after
it. `limit` 1-1000 (default 100); `nextCursor` (keyset on id) continues the walk, null on
the last page. `table` and `action` filter by equality. Ids are taken when a row is
inserted and become visible when its transaction commits, so a row written by a
transaction still in flight may appear later with a lower id than one already read: this
is a trail to read, not a change feed (the change log is that).

What goes in: the workflow's own rows (table_name = the workflow table, written in the
writer's transaction) and the security events of domain/audit.py (`websocket`, `http`),
written in batches by the node's audit writer, so they appear within about a second.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import psycopg
from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.problems import bad_parameter
from sinal.api.reads import MAX_OFFSET, bad_cursor, cursor_parts, parse_limit

MAX_FILTER_LENGTH = 64


def _parse_id(name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    value = raw.strip()
    if not value.isdigit() or len(value) > 19 or int(value) > MAX_OFFSET:
        raise bad_parameter(name, "an audit row id (integer >= 0)")
    return int(value)


def encode_audit_cursor(after: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{after}".encode()).decode().rstrip("=")


def parse_audit_cursor(raw: str | None) -> int | None:
    if raw is None:
        return None
    kind, number = cursor_parts(raw, 100)
    try:
        after = int(number)
    except ValueError as exc:
        raise bad_cursor() from exc
    if kind != "audit" or not 0 <= after <= MAX_OFFSET:
        raise bad_cursor()
    return after


def _parse_filter(name: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > MAX_FILTER_LENGTH or "\x00" in raw:
        raise bad_parameter(name, f"1-{MAX_FILTER_LENGTH} characters")
    return raw


def register_audit(api: ApiContext) -> None:
    @api.app.get("/api/audit")
    async def audit_trail() -> Response:
        await api.admin()
        args = request.args
        since = _parse_id("since", args.get("since"))
        limit = parse_limit(args.get("limit"))
        cursor = parse_audit_cursor(args.get("cursor"))
        table = _parse_filter("table", args.get("table"))
        action = _parse_filter("action", args.get("action"))
        after = max(since or 0, cursor or 0)

        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            return conn.execute(
                "SELECT id, table_name, record_id, action, actor_id::text AS actor_id, "
                "details, to_jsonb(created_at) #>> '{}' AS created_at FROM audit_logs "
                "WHERE id > %s AND (%s::text IS NULL OR table_name = %s) "
                "AND (%s::text IS NULL OR action = %s) ORDER BY id LIMIT %s",
                (after, table, table, action, action, limit + 1)).fetchall()

        rows = await api.run(work)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_audit_cursor(int(rows[-1]["id"]))
        return api.json({"data": rows, "nextCursor": next_cursor,
                         "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
