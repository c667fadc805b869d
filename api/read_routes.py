"""GET /api/purchase-requests, /api/quotations, /api/purchase-orders, /api/approvals.

    GET /api/<resource>[?fields=a,b][&limit=100][&cursor=...]   full list, one page
    GET /api/<resource>?since=<offset | ISO timestamp>[&fields=] delta
    If-None-Match: W/"<etag>"  or  ?etag=<etag>                   304 when nothing changed

Order of work: authenticate (memory), authorise (memory), parse the parameters, compute
the ETag from memory; only a miss queries the database. See api/reads.py for the rules.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from quart import Response, g, request

from actors.access import AccessError, RowFilter, permission_filter
from api.context import ApiContext
from api.problems import Problem, bad_parameter
from api.reads import (
    encode_cursor,
    etag_matches,
    fold_changes,
    make_etag,
    parse_cursor,
    parse_limit,
    parse_since,
    read_delta,
    read_page,
    topic_version,
)
from api.resources import (
    RESOURCES,
    Resource,
    filter_sql,
    parse_fields,
    project,
    scope_key,
)
from api.validation import is_uuid


def parse_flag(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise bad_parameter(name, "true or false")


def register_reads(api: ApiContext) -> None:
    for resource in RESOURCES.values():
        api.app.add_url_rule(resource.path, endpoint=f"list_{resource.table}",
                             view_func=_list_view(api, resource), methods=["GET"])
        api.app.add_url_rule(resource.path + "/<row_id>", endpoint=f"get_{resource.table}",
                             view_func=_item_view(api, resource), methods=["GET"])


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
    config = api.node.config

    async def view() -> Response:
        row_filter = await _readable(api, resource)
        args = request.args
        fields = parse_fields(args.get("fields"), resource)
        since = parse_since(args.get("since")) if config.enable_delta_updates else None
        limit = parse_limit(args.get("limit"))
        cursor = parse_cursor(args.get("cursor"))
        parse_flag("compress", args.get("compress"))
        if since is not None and cursor is not None:
            raise bad_parameter("cursor", "pages are for full lists; a delta has no cursor")

        assert api.node.hub is not None
        version = topic_version(api.node.hub.topics[resource.topic])
        scope = scope_key(row_filter)
        if since is not None:
            etag = make_etag("delta", resource.name, scope, fields, version)
        else:
            etag = make_etag("list", resource.name, scope, fields, limit,
                             cursor.offset if cursor else None,
                             cursor.after if cursor else None, version)
        g.list_read = True
        headers = {"Cache-Control": "private, no-cache"}
        smart = config.enable_smart_polling
        if smart:
            headers["ETag"] = f'W/"{etag}"'
            if etag_matches(request.headers.get("If-None-Match"), etag) \
                    or etag_matches(args.get("etag"), etag):
                g.cache_hit = True
                return api.empty(304, headers)

        if since is not None:
            def delta_work(conn: psycopg.Connection[Any]) -> Any:
                return read_delta(conn, resource, since)

            delta = await api.run(delta_work)
            data = []
            for entry in fold_changes(delta.changes, row_filter):
                if entry["_operation"] == "delete":
                    data.append(entry)
                else:
                    data.append({**project(entry, fields), "_operation": entry["_operation"]})
            if delta.has_more:
                # a partial delta must not be revalidated: the next poll has to run
                headers.pop("ETag", None)
                smart = False
            body: dict[str, Any] = {
                "data": data, "etag": etag if smart else None, "isDelta": True,
                "timestamp": delta.timestamp, "offset": delta.offset,
                "hasMore": delta.has_more,
            }
        else:
            def page_work(conn: psycopg.Connection[Any]) -> Any:
                return read_page(conn, resource, row_filter, limit, cursor)

            page = await api.run(page_work)
            body = {
                "data": [project(row, fields) for row in page.rows],
                "etag": etag if smart else None, "isDelta": False,
                "timestamp": page.timestamp, "offset": page.offset,
                "nextCursor": encode_cursor(page.next_cursor) if page.next_cursor else None,
            }
        return api.json(body, headers=headers)

    view.__name__ = f"list_{resource.table}"
    return view
