"""GET /api/dashboard: every figure of the dashboard the caller may see, exact at `offset`.

    GET /api/dashboard[?aggregates=requestsByStatus,lateOrders][&window=7d]
    If-None-Match: W/"<etag>"  or  ?etag=<etag>         304 when no figure moved

    {"offset": 1042, "today": "2026-11-30", "window": "30d", "etag": "...",
     "requestsByStatus": {"pending_a1": 3, ...}, "pendingByLevel": {...}, ...}

The figures and their scoping are domain/aggregates.py; they are the aggregates actor's,
read from memory through `DashboardSource` (what node/ hands the app as `Node.dashboard`:
`position`, `version()`, `today()`, `view(plan)`, `wait_position(p)`), never from actors/.

The same ETag/304 rules as lists (api/reads.py): the ETag is made from memory (the
figures' version, the caller's scope, the figures asked for, the window), a match is 304
with no query, and a 200 shows every change committed before the request: the commit
fence (api/freshness.py) runs the sequencer and waits, at most LISTENER_WAIT_SECONDS, for
the figures to reach the head; if they do not, the figures are loaded from the tables
instead (`load_state`, exact at its own head). Unknown figures or windows are 400
`invalid_filter` with the valid names; a figure the role may not see is 403.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.freshness import LISTENER_WAIT_SECONDS
from sinal.api.list_reads import parse_flag
from sinal.api.problems import Problem
from sinal.api.reads import etag_matches, make_etag
from sinal.domain.access import AccessError
from sinal.domain.aggregate_sql import load_state
from sinal.domain.aggregates import (
    AGGREGATES,
    WINDOWS,
    DashboardPlan,
    DashboardView,
    dashboard_plan,
    render,
)
from sinal.domain.principals import Principal

PATH = "/api/dashboard"


def register_dashboard(api: ApiContext) -> None:
    smart = api.settings.smart_polling

    async def dashboard() -> Response:
        source = api.realtime.dashboard()
        principal = await api.caller()
        plan = plan_of(principal, request.args)
        parse_flag("compress", request.args.get("compress"))
        etag = make_etag("dashboard", plan.scope.key, plan.names, plan.window,
                         source.version())
        headers = {"Cache-Control": "private, no-cache"}
        if smart:
            headers["ETag"] = f'W/"{etag}"'
            if etag_matches(request.headers.get("If-None-Match"), etag) \
                    or etag_matches(request.args.get("etag"), etag):
                return api.empty(304, headers)
        view = await _current_view(api, plan)
        body: dict[str, Any] = {"offset": view.offset, "today": view.today.isoformat(),
                                "window": plan.window, "etag": etag if smart else None,
                                **view.aggregates}
        return api.json(body, headers=headers)

    api.app.add_url_rule(PATH, endpoint="dashboard", view_func=dashboard, methods=["GET"])


def plan_of(principal: Principal, args: Mapping[str, str]) -> DashboardPlan:
    """The plan for `?aggregates=a,b&window=7d`, or the problem (400 / 403)."""
    filters: dict[str, Any] = {}
    raw = args.get("aggregates")
    if raw is not None:
        filters["aggregates"] = tuple(n.strip() for n in raw.split(",") if n.strip())
    if args.get("window") is not None:
        filters["window"] = args.get("window")
    try:
        return dashboard_plan(principal, filters)
    except AccessError as exc:
        if exc.code == "forbidden":
            raise Problem(403, "forbidden", exc.message) from exc
        raise Problem(400, "invalid_filter", exc.message,
                      extra={"aggregates": list(AGGREGATES), "windows": list(WINDOWS)}) from exc


async def _current_view(api: ApiContext, plan: DashboardPlan) -> DashboardView:
    """The figures as new as every commit before this request (the commit fence)."""
    source = api.realtime.dashboard()
    head = await api.fence.head()
    if head is not None and source.position < head:
        with trio.move_on_after(LISTENER_WAIT_SECONDS):
            await source.wait_position(head)
    if head is not None and source.position >= head:
        return source.view(plan)
    today = source.today()
    state = await api.run(lambda conn: load_state(conn, today))
    return DashboardView(state.position, today, render(state, plan, today))


def problem_responses(*statuses: int) -> dict[str, Any]:
    """OpenAPI responses of problem details (RFC 9457) for these statuses."""
    text = {400: "unknown figure or window (invalid_filter), or a malformed parameter",
            401: "missing, forged or expired token", 403: "the caller may not see this",
            404: "no such request", 429: "over the rate limit; see Retry-After",
            503: "the database does not answer"}
    return {str(status): {"description": text[status], "content": {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for status in statuses}


OPENAPI_PATHS: dict[str, Any] = {
    PATH: {"get": {
        "operationId": "get_dashboard",
        "summary": "the dashboard's figures the caller may see, exact at offset",
        "tags": ["reads"],
        "parameters": [
            {"name": "aggregates", "in": "query", "schema": {"type": "string"},
             "description": "comma-separated figures (default: every one the caller may "
                            f"see): {', '.join(AGGREGATES)}"},
            {"name": "window", "in": "query",
             "schema": {"type": "string", "enum": list(WINDOWS)},
             "description": "days of the time-windowed figures (default 30d)"},
            {"name": "etag", "in": "query", "schema": {"type": "string"},
             "description": "same as If-None-Match"},
            {"name": "compress", "in": "query", "schema": {"type": "boolean"}},
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "the figures", "headers": {
                "ETag": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["offset", "today", "window"],
                    "properties": {
                        "offset": {"type": "integer"}, "today": {"type": "string",
                                                                 "format": "date"},
                        "window": {"type": "string"}, "etag": {"type": ["string", "null"]},
                        **{name: {} for name in AGGREGATES}}}}}},
            "304": {"description": "no figure moved since the ETag (no body, no query)"},
            **problem_responses(400, 401, 403, 429, 503),
        },
    }},
}
