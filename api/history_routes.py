"""GET /api/purchase-requests/<id>/history: every change of the request and of its
approvals, quotations and orders, in order, from the change log (domain/history.py).

    GET /api/purchase-requests/<id>/history[?after=<offset>][&limit=100]

    {"id": "...", "offset": 1042, "complete": true, "gap": null, "hasMore": false,
     "entries": [{"offset": 17, "at": "2026-11-30T10:00:00.1+00:00",
                  "resource": "purchase_request", "id": "...", "op": "update",
                  "changed": {"status": "pending_a2", ...}, "previous": {"status": "pending_a1",
                  ...}, "actor": {"id": "...", "name": "Carla Dias", "email": "..."}}, ...]}

`changed`: an insert's whole row, an update's changed fields (new values), nothing for a
delete; `previous`: an update's old values, a delete's whole row. `actor` is the user who
made the change (named by the writer in its transaction), `{"system": "delivery_watch"}`
for Sinal's own writes, or null: unknown (psql, another application). Changes removed by
retention are reported: `complete` is false and `gap` says up to which offset the log may
have lost them. `offset` is the log's head the history was read at.

Who may read it: whoever may see the request (its row, or for a deleted request the row
its delete removed) -- the same permission filter as `GET /api/purchase-requests/<id>`.
A request that exists but is not the caller's to see is 403; one that never existed (in
the table or in the log) is 404.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.dashboard_routes import problem_responses
from sinal.api.problems import Problem, bad_parameter
from sinal.api.reads import MAX_OFFSET, parse_limit
from sinal.api.validation import is_uuid
from sinal.domain.access import AccessError, permission_filter
from sinal.domain.history import read_history

PATH = "/api/purchase-requests/<request_id>/history"
TOPIC = "purchase_request_changed"


def parse_after(raw: str | None) -> int:
    if raw is None:
        return 0
    value = raw.strip()
    if not value.isdigit() or len(value) > 19 or int(value) > MAX_OFFSET:
        raise bad_parameter("after", "an offset (integer >= 0)")
    return int(value)


def register_history(api: ApiContext) -> None:
    async def history(request_id: str) -> Response:
        principal = await api.caller()
        try:
            row_filter = permission_filter(principal, TOPIC)
        except AccessError as exc:
            raise Problem(403, "forbidden",
                          f"role {principal.role} may not read purchase requests") from exc
        after = parse_after(request.args.get("after"))
        limit = parse_limit(request.args.get("limit"))
        missing = Problem(404, "not_found", "no such purchase request")
        if not is_uuid(request_id):
            raise missing
        found = await api.run(lambda conn: read_history(conn, request_id, after, limit))
        if found is None:
            raise missing
        if not row_filter.matches_row(found.request):
            raise Problem(403, "forbidden", "this purchase request is not yours to see")
        gap = None if found.complete else {
            "reason": "retention", "throughOffset": found.retained_since,
            "detail": "changes at or before this offset may have been removed by retention "
                      "(SINAL_RETENTION_HOURS)"}
        return api.json({
            "id": request_id, "offset": found.offset, "deleted": found.deleted,
            "complete": found.complete, "gap": gap, "hasMore": found.has_more,
            "entries": found.entries,
        }, headers={"Cache-Control": "private, no-cache"})

    api.app.add_url_rule(PATH, endpoint="purchase_request_history", view_func=history,
                         methods=["GET"])


_ENTRY = {"type": "object", "required": ["offset", "at", "resource", "id", "op", "actor"],
          "properties": {
              "offset": {"type": "integer"}, "at": {"type": "string"},
              "resource": {"type": "string", "enum": ["purchase_request", "approval",
                                                      "quotation", "purchase_order"]},
              "id": {"type": "string"}, "op": {"enum": ["insert", "update", "delete"]},
              "changed": {"type": "object"}, "previous": {"type": "object"},
              "actor": {"type": ["object", "null"]}}}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/purchase-requests/{id}/history": {"get": {
        "operationId": "get_purchase_request_history",
        "summary": "every change of a request and of its approvals, quotations and orders, "
                   "in order, with who made it",
        "tags": ["reads"],
        "parameters": [
            {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"}},
            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0},
             "description": "only changes after this offset (the next page)"},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        ],
        "responses": {
            "200": {"description": "the history", "content": {"application/json": {
                "schema": {"type": "object",
                           "required": ["id", "offset", "complete", "entries"],
                           "properties": {
                               "id": {"type": "string"}, "offset": {"type": "integer"},
                               "deleted": {"type": "boolean"},
                               "complete": {"type": "boolean"},
                               "gap": {"type": ["object", "null"]},
                               "hasMore": {"type": "boolean"},
                               "entries": {"type": "array", "items": _ENTRY}}}}}},
            **problem_responses(400, 401, 403, 404, 429, 503),
        },
    }},
}
