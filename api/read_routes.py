"""GET /api/purchase-requests, /api/quotations, /api/purchase-orders, /api/approvals,
/api/suppliers, /api/departments, /api/users (every resource of the topic catalogue), one
row of each: GET /api/<resource>/<id>[?fields=a,b], and GET /api/me (who the caller is).

The list views ask the one list read (api/list_reads.py) for the whole answer; the fast
path in front of Quart (api/fast_reads.py) asks the same object for what memory can
answer, and leaves the rest to these views.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from quart import Response, g, request

from sinal.api.context import ApiContext
from sinal.api.problems import Problem
from sinal.api.resources import RESOURCES, Resource, parse_fields, project
from sinal.api.validation import is_uuid
from sinal.domain.access import AccessError, RowFilter, filter_sql, permission_filter


def register_reads(api: ApiContext) -> None:
    for resource in RESOURCES.values():
        api.app.add_url_rule(resource.path, endpoint=f"list_{resource.table}",
                             view_func=_list_view(api, resource), methods=["GET"])
        api.app.add_url_rule(resource.path + "/<row_id>", endpoint=f"get_{resource.table}",
                             view_func=_item_view(api, resource), methods=["GET"])

    @api.app.get("/api/me")
    async def me() -> Response:
        """The caller as the rules see them (principal), their `users` row and department,
        and when their token expires."""
        principal = await api.caller()

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            return conn.execute(
                "SELECT to_jsonb(u) AS user, (SELECT to_jsonb(d) FROM departments AS d "
                "WHERE d.id = u.department_id) AS department FROM users AS u "
                "WHERE u.id = %s", (principal.user_id,)).fetchone()

        found = await api.run(work)
        if found is None:  # deleted since the principal was read
            raise Problem(404, "not_found", "no such user")
        return api.json({
            "principal": {"user_id": principal.user_id, "role": principal.role,
                          "department_id": principal.department_id},
            "user": found["user"], "department": found["department"],
            "token_expires_at": g.claims.expires_at,
        })


async def _readable(api: ApiContext, resource: Resource) -> RowFilter:
    principal = await api.caller()
    try:
        return permission_filter(principal, resource.topic)
    except AccessError as exc:
        raise Problem(403, "forbidden",
                      f"role {principal.role} may not read {resource.name}") from exc


def _item_view(api: ApiContext, resource: Resource) -> Any:
    async def view(row_id: str) -> Response:
        row_filter = await _readable(api, resource)
        fields = parse_fields(request.args.get("fields"), resource)
        missing = Problem(404, "not_found", f"no such row in {resource.name}")
        if not is_uuid(row_id):
            raise missing
        where, params = filter_sql(row_filter)
        query = sql.SQL("SELECT to_jsonb(t) AS row FROM {} AS t WHERE t.id = %s AND {}").format(
            sql.Identifier(resource.table), where)

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            return conn.execute(query, [row_id, *params]).fetchone()

        found = await api.run(work)
        if found is None:
            raise missing
        return api.json(project(found["row"], fields))

    view.__name__ = f"get_{resource.table}"
    return view


def _list_view(api: ApiContext, resource: Resource) -> Any:
    async def view() -> Response:
        row_filter = await _readable(api, resource)
        reads = api.reads
        plan = reads.plan(resource, row_filter, request.args)
        g.list_read = True
        answer = await reads.answer(plan, request.headers.get("If-None-Match"),
                                    request.args.get("etag"))
        assert answer is not None  # (only a memory-only answer may be None)
        headers = answer.headers(api.settings.smart_polling)
        if answer.status == 304:
            g.cache_hit = True
            return api.empty(304, headers)
        body, gzipped = answer.body(api.responses, api.settings.compression,
                                    request.args.get("compress"),
                                    request.headers.get("Accept-Encoding"))
        if gzipped:  # the entry's gzip form, compressed once (api/app.py leaves it as is)
            headers["Content-Encoding"] = "gzip"
        response: Response = api.app.response_class(body, status=200, headers=headers,
                                                    content_type="application/json")
        return response

    view.__name__ = f"list_{resource.table}"
    return view
