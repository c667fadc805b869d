"""GET /api/purchase-requests, /api/quotations, /api/purchase-orders, /api/approvals.

    GET /api/<resource>[?fields=a,b][&limit=100][&cursor=...]   full list, one page
    GET /api/<resource>?since=<offset | ISO timestamp>[&fields=] delta
    If-None-Match: W/"<etag>"  or  ?etag=<etag>                   304 when nothing changed

Order of work: authenticate (memory), authorise (memory), parse the parameters, compute
the ETag from memory; answer 304 when it matches, else the encoded body kept in the
response cache (api/response_cache.py) under that ETag; only a miss queries the database.
See api/reads.py for the rules. api/fast_reads.py answers the same 304s and cached bodies
in front of Quart; this view is the whole path, and the one every other case takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from quart import Response, g, request

from sinal.api.context import ApiContext, dump_json
from sinal.api.problems import Problem, bad_parameter
from sinal.api.reads import (
    Cursor,
    Since,
    encode_cursor,
    etag_matches,
    fold_changes,
    make_etag,
    parse_cursor,
    parse_limit,
    parse_since,
    read_delta,
    read_page,
)
from sinal.api.resources import RESOURCES, Resource, parse_fields, project
from sinal.api.response_cache import Fresh
from sinal.api.validation import is_uuid
from sinal.domain.access import (
    AccessError,
    RowFilter,
    filter_sql,
    permission_filter,
    scope_key,
)


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


@dataclass(frozen=True, slots=True)
class ListPlan:
    """A list or delta read, parsed and authorised, with its ETag (all from memory)."""

    resource: Resource
    row_filter: RowFilter
    fields: tuple[str, ...]
    since: Since | None
    limit: int
    cursor: Cursor | None
    version: int  # the topic's version the ETag was made from
    etag: str

    @property
    def cache_key(self) -> str:
        """What the body depends on: the ETag, and `since` for a delta (see
        api/response_cache.py)."""
        return self.etag if self.since is None else f"{self.etag}|{self.since.key()}"


def plan_list(api: ApiContext, resource: Resource, row_filter: RowFilter,
              args: Mapping[str, str]) -> ListPlan:
    """Parse a list read's query (first value of each parameter); Problem when malformed."""
    fields = parse_fields(args.get("fields"), resource)
    since = parse_since(args.get("since")) if api.settings.delta_updates else None
    limit = parse_limit(args.get("limit"))
    cursor = parse_cursor(args.get("cursor"))
    parse_flag("compress", args.get("compress"))
    if since is not None and cursor is not None:
        raise bad_parameter("cursor", "pages are for full lists; a delta has no cursor")
    version = api.realtime.topic_version(resource.topic)
    scope = scope_key(row_filter)
    if since is not None:
        etag = make_etag("delta", resource.name, scope, fields, version)
    else:
        etag = make_etag("list", resource.name, scope, fields, limit,
                         cursor.offset if cursor else None,
                         cursor.after if cursor else None, version)
    return ListPlan(resource, row_filter, fields, since, limit, cursor, version, etag)


def list_headers(plan: ListPlan, smart: bool) -> dict[str, str]:
    headers = {"Cache-Control": "private, no-cache"}
    if smart:
        headers["ETag"] = f'W/"{plan.etag}"'
    return headers


def not_modified(plan: ListPlan, if_none_match: str | None, etag_param: str | None) -> bool:
    return etag_matches(if_none_match, plan.etag) or etag_matches(etag_param, plan.etag)


async def read_list_body(api: ApiContext, plan: ListPlan, smart: bool) -> Fresh:
    """Query and encode the answer; a partial delta is not cacheable (and has no ETag)."""
    resource, row_filter, fields = plan.resource, plan.row_filter, plan.fields
    since = plan.since
    if since is not None:
        def delta_work(conn: psycopg.Connection[Any]) -> Any:
            return read_delta(conn, resource, since)

        try:
            delta = await api.run(delta_work)
        except Problem as problem:
            if problem.code == "resync":
                # cached lists hold offsets the log no longer has: the refetch reads afresh
                api.responses.drop_topic(resource.topic)
            raise
        data = []
        for entry in fold_changes(delta.changes, row_filter):
            if entry["_operation"] == "delete":
                data.append(entry)
            else:
                data.append({**project(entry, fields), "_operation": entry["_operation"]})
        complete = not delta.has_more
        body: dict[str, Any] = {
            "data": data, "etag": plan.etag if smart and complete else None, "isDelta": True,
            "timestamp": delta.timestamp, "offset": delta.offset, "hasMore": delta.has_more,
        }
        return Fresh(dump_json(body), cacheable=complete)

    def page_work(conn: psycopg.Connection[Any]) -> Any:
        return read_page(conn, resource, row_filter, plan.limit, plan.cursor)

    page = await api.run(page_work)
    body = {
        "data": [project(row, fields) for row in page.rows],
        "etag": plan.etag if smart else None, "isDelta": False,
        "timestamp": page.timestamp, "offset": page.offset,
        "nextCursor": encode_cursor(page.next_cursor) if page.next_cursor else None,
    }
    return Fresh(dump_json(body))


FENCE_SCOPE_KEY = "sinal.fenced"  # api/fast_reads.py's fence result for this request


def _list_view(api: ApiContext, resource: Resource) -> Any:
    smart = api.settings.smart_polling

    async def view() -> Response:
        row_filter = await _readable(api, resource)
        plan = plan_list(api, resource, row_filter, request.args)
        g.list_read = True
        if smart and not_modified(plan, request.headers.get("If-None-Match"),
                                  request.args.get("etag")):
            g.cache_hit = True
            return api.empty(304, list_headers(plan, smart))
        # a kept body answers only once the topic is known current (api/freshness.py)
        reuse = api.responses.holds(plan.cache_key)
        if reuse:
            fenced = request.scope.get(FENCE_SCOPE_KEY)  # the fast path's, if it fenced
            reuse = await api.fence.current(resource.topic) if fenced is None else bool(fenced)
        if reuse:
            plan = plan_list(api, resource, row_filter, request.args)  # as of the fence

        async def read() -> Fresh:
            return await read_list_body(api, plan, smart)

        entry = await api.responses.fill(plan.cache_key, resource.topic, plan.version, read,
                                         reuse=reuse)
        headers = list_headers(plan, smart)
        if not entry.cacheable:
            headers.pop("ETag", None)  # a partial delta must not be revalidated
        g.cached_body = entry
        response: Response = api.app.response_class(entry.body, status=200, headers=headers,
                                                    content_type="application/json")
        return response

    view.__name__ = f"list_{resource.table}"
    return view
