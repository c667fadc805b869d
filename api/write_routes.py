"""The workflow over HTTP: each POST is one transaction in api/workflow.py.

| endpoint | body | who | answer |
|---|---|---|---|
| POST /api/purchase-requests | CREATE_REQUEST | requester, buyer, admin | 201 the request |
| POST /api/purchase-requests/<id>/submit | - | its requester, admin | 200 |
| POST /api/purchase-requests/<id>/approve | {comment} | approver of its level, admin | 200 |
| POST /api/purchase-requests/<id>/reject | {comment} | approver of its level, admin | 200 |
| POST /api/purchase-requests/<id>/cancel | - | its requester, admin | 200 |
| POST /api/purchase-requests/<id>/quotations | ADD_QUOTATION | buyer, admin | 201 |
| POST /api/purchase-requests/<id>/orders | {quotation_id} | buyer, admin | 201 the order |
| POST /api/purchase-orders/<id>/in-transit | - | buyer, admin | 200 the order |
| POST /api/purchase-orders/<id>/delivered | - | buyer, admin | 200 the order |

400 malformed JSON (or a key given twice); 415 a body that is not `application/json`
(a body-less action needs no Content-Type); 422 a bad value (or an unknown field); 403
wrong role (or a requester naming another department); 404 unknown row; 409 a step the
workflow does not allow now (`invalid_transition`, with the reason).
The change reaches subscribers and REST deltas through the change log, like any write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.problems import Problem
from sinal.api.validation import Field, is_uuid, parse_json, validate
from sinal.domain import workflow
from sinal.domain.principals import Principal
from sinal.domain.workflow import WorkflowError

CREATE_REQUEST = (
    Field("title", "string", required=True, max_length=200, minimum=1),
    Field("amount", "amount", required=True, description="BRL, 0 to 999999999999.99"),
    Field("description", "string", max_length=10_000),
    Field("items", "items", max_length=500, description="free-form line items"),
    Field("department_id", "uuid", description="default: the caller's department"),
    Field("needed_by", "date", nullable=True),
    Field("submit", "boolean", description="true: go straight to pending_a1"),
)
DECISION = (Field("comment", "string", max_length=2000),)
ADD_QUOTATION = (
    Field("supplier_id", "uuid", required=True),
    Field("amount", "amount", required=True),
    Field("delivery_days", "integer", minimum=0, maximum=3650),
    Field("notes", "string", max_length=2000),
)
ISSUE_ORDER = (Field("quotation_id", "uuid", required=True),)
NO_BODY: tuple[Field, ...] = ()

# action -> (body fields, success status, call(conn, actor, row id, body))
Action = tuple[tuple[Field, ...], int, Callable[..., dict[str, Any]]]

REQUEST_ACTIONS: dict[str, Action] = {
    "submit": (NO_BODY, 200, lambda c, a, rid, b: workflow.submit_request(c, a, rid)),
    "approve": (DECISION, 200, lambda c, a, rid, b: workflow.decide(
        c, a, rid, "approved", b.get("comment", ""))),
    "reject": (DECISION, 200, lambda c, a, rid, b: workflow.decide(
        c, a, rid, "rejected", b.get("comment", ""))),
    "cancel": (NO_BODY, 200, lambda c, a, rid, b: workflow.cancel_request(c, a, rid)),
    "quotations": (ADD_QUOTATION, 201, lambda c, a, rid, b: workflow.add_quotation(
        c, a, rid, supplier_id=b["supplier_id"], amount=b["amount"],
        delivery_days=b.get("delivery_days"), notes=b.get("notes", ""))),
    "orders": (ISSUE_ORDER, 201, lambda c, a, rid, b: workflow.issue_order(
        c, a, rid, b["quotation_id"])),
}
ORDER_ACTIONS: dict[str, Action] = {
    "in-transit": (NO_BODY, 200, lambda c, a, oid, b: workflow.mark_in_transit(c, a, oid)),
    "delivered": (NO_BODY, 200, lambda c, a, oid, b: workflow.mark_delivered(c, a, oid)),
}
LOCATION = {"quotations": "/api/quotations/{id}", "orders": "/api/purchase-orders/{id}"}


async def _body(fields: tuple[Field, ...]) -> dict[str, Any]:
    data = await request.get_data(as_text=False)
    required = any(f.required for f in fields)
    return validate(parse_json(data, optional=not required,
                               content_type=request.headers.get("Content-Type")), fields)


async def _perform(api: ApiContext, work: Callable[[psycopg.Connection[Any]], dict[str, Any]]
                   ) -> dict[str, Any]:
    try:
        return await api.run(work)
    except WorkflowError as exc:
        raise Problem(exc.status, exc.code, exc.reason) from exc


def register_writes(api: ApiContext) -> None:
    app = api.app

    async def actor() -> Principal:
        return await api.caller()

    @app.post("/api/purchase-requests")
    async def create_purchase_request() -> Response:
        who = await actor()
        body = await _body(CREATE_REQUEST)

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            return workflow.create_request(
                conn, who, title=body["title"], amount=body["amount"],
                items=body.get("items"), description=body.get("description", ""),
                department_id=body.get("department_id"), needed_by=body.get("needed_by"),
                submit=body.get("submit", False))

        row = await _perform(api, work)
        return api.json(row, 201, {"Location": f"/api/purchase-requests/{row['id']}"})

    @app.post("/api/purchase-requests/<request_id>/<action>")
    async def purchase_request_action(request_id: str, action: str) -> Response:
        spec = REQUEST_ACTIONS.get(action)
        if spec is None:
            raise Problem(404, "not_found", f"no action {action[:40]!r} on purchase requests")
        return await _act(api, await actor(), spec, request_id, "purchase request",
                          LOCATION.get(action))

    @app.post("/api/purchase-orders/<order_id>/<action>")
    async def purchase_order_action(order_id: str, action: str) -> Response:
        spec = ORDER_ACTIONS.get(action)
        if spec is None:
            raise Problem(404, "not_found", f"no action {action[:40]!r} on purchase orders")
        return await _act(api, await actor(), spec, order_id, "purchase order", None)


async def _act(api: ApiContext, who: Principal,
               spec: Action,
               row_id: str, noun: str, location: str | None) -> Response:
    fields, status, call = spec
    if not is_uuid(row_id):
        raise Problem(404, "not_found", f"no such {noun}")
    body = await _body(fields)

    def work(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return call(conn, who, row_id, body)

    row = await _perform(api, work)
    headers = {"Location": location.format(id=row["id"])} if location else None
    return api.json(row, status, headers)
