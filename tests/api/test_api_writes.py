"""Workflow writes over HTTP: every endpoint allowed, wrong role (403), invalid transition
(409), bad body (400 malformed JSON, 422 bad values), unknown row (404)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api
from tests.api.test_api_reads import is_problem

JSON = {"Content-Type": "application/json"}
PR = "/api/purchase-requests"
PO = "/api/purchase-orders"
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "10000"}


async def supplier(api: Api) -> str:
    return str((await api.sql("SELECT id::text FROM suppliers ORDER BY name LIMIT 1"))[0][0])


async def approved_request(api: Api) -> str:
    made = await api.ok("post", PR, REQUESTER, 201, json={"title": "Desk", "amount": "350.5",
                                                           "submit": True})
    for level in (1, 2, 3):
        await api.ok("post", f"{PR}/{made['id']}/approve", APPROVER[level])
    return str(made["id"])


async def test_create_purchase_request(api: Api) -> None:
    made = await api.post(PR, REQUESTER, json={
        "title": "Monitors", "amount": 999.99, "items": [{"sku": "M-1", "qty": 2}],
        "description": "for the new team", "needed_by": "2030-01-31"})
    assert made.status_code == 201, made.text
    row = made.json()
    assert made.headers["Location"] == f"{PR}/{row['id']}"
    assert row["status"] == "draft" and row["amount"] == 999.99
    assert row["department_id"] == api.users[REQUESTER]["department_id"]
    assert row["needed_by"] == "2030-01-31" and row["items"] == [{"sku": "M-1", "qty": 2}]
    assert (await api.ok("get", made.headers["Location"], REQUESTER))["id"] == row["id"]

    assert is_problem(await api.post(PR, APPROVER[1], json={"title": "x", "amount": 1}),
                      403, "forbidden")
    assert is_problem(await api.post(PR, REQUESTER, content=b"{not json", headers=JSON), 400,
                      "malformed_json")
    assert is_problem(await api.post(PR, REQUESTER, content=b"", headers=JSON),
                      400, "malformed_json")
    assert is_problem(await api.post(PR, REQUESTER, content=b'{"amount": NaN}', headers=JSON), 400,
                      "malformed_json")
    for body, field in (([1, 2], "(body)"),
                        ({"amount": 1}, "title"),
                        ({"title": "x"}, "amount"),
                        ({"title": "", "amount": 1}, "title"),
                        ({"title": "x" * 201, "amount": 1}, "title"),
                        ({"title": "x\u0000", "amount": 1}, "title"),
                        ({"title": "x", "amount": True}, "amount"),
                        ({"title": "x", "amount": 1, "submit": "yes"}, "submit"),
                        ({"title": "x", "amount": 1, "needed_by": "soon"}, "needed_by"),
                        ({"title": "x", "amount": 1, "department_id": "7"}, "department_id"),
                        ({"title": "x", "amount": 1, "items": [1]}, "items"),
                        ({"title": "x", "amount": 1, "items": [{"k": "\u0000"}]}, "items"),
                        ({"title": "x", "amount": 1, "colour": "red"}, "colour")):
        response = await api.post(PR, REQUESTER, json=body)
        assert is_problem(response, 422, "invalid_body"), body
        assert response.json()["field"] == field
    for amount in (-1, "1e20", "abc", 10**15):
        assert is_problem(await api.post(PR, REQUESTER, json={"title": "x", "amount": amount}),
                          422, "invalid_amount")
    # (a requester may name only their own department: a buyer names any)
    assert is_problem(await api.post(PR, BUYER, json={
        "title": "x", "amount": 1, "department_id": MISSING}), 422, "invalid_department")


async def test_submit_and_cancel(api: Api) -> None:
    draft = (await api.ok("post", PR, REQUESTER, 201, json={"title": "a", "amount": 1}))["id"]
    assert is_problem(await api.post(f"{PR}/{draft}/submit", OTHER_REQUESTER), 403, "forbidden")
    submitted = await api.ok("post", f"{PR}/{draft}/submit", REQUESTER)
    assert submitted["status"] == "pending_a1"
    again = await api.post(f"{PR}/{draft}/submit", REQUESTER)
    assert is_problem(again, 409, "invalid_transition") and "pending_a1" in again.json()["detail"]
    assert is_problem(await api.post(f"{PR}/{draft}/submit", REQUESTER,
                                     content=b"[1", headers=JSON),
                      400,
                      "malformed_json")
    assert is_problem(await api.post(f"{PR}/{draft}/submit", REQUESTER, json={"x": 1}), 422,
                      "invalid_body")
    assert is_problem(await api.post(f"{PR}/{MISSING}/submit", REQUESTER), 404, "not_found")
    assert is_problem(await api.post(f"{PR}/nope/submit", REQUESTER), 404, "not_found")
    assert is_problem(await api.post(f"{PR}/{draft}/fly", REQUESTER), 404, "not_found")

    assert is_problem(await api.post(f"{PR}/{draft}/cancel", OTHER_REQUESTER), 403, "forbidden")
    assert (await api.ok("post", f"{PR}/{draft}/cancel", REQUESTER))["status"] == "cancelled"
    assert is_problem(await api.post(f"{PR}/{draft}/cancel", ADMIN), 409, "invalid_transition")
    assert is_problem(await api.post(f"{PR}/{draft}/cancel", REQUESTER, content=b"{", headers=JSON),
                      400,
                      "malformed_json")


async def test_approve_and_reject_at_the_callers_level(api: Api) -> None:
    made = (await api.ok("post", PR, REQUESTER, 201, json={"title": "a", "amount": 1,
                                                           "submit": True}))["id"]
    wrong = await api.post(f"{PR}/{made}/approve", APPROVER[2])
    assert is_problem(wrong, 403, "forbidden") and "level 1" in wrong.json()["detail"]
    assert is_problem(await api.post(f"{PR}/{made}/approve", BUYER), 403, "forbidden")
    assert is_problem(await api.post(f"{PR}/{made}/approve", APPROVER[1],
                                     json={"comment": 5}), 422, "invalid_body")
    assert is_problem(await api.post(f"{PR}/{made}/reject", APPROVER[1],
                                     content=b"{,}", headers=JSON),
                      400,
                      "malformed_json")
    after = await api.ok("post", f"{PR}/{made}/approve", APPROVER[1], json={"comment": "ok"})
    assert after["status"] == "pending_a2"
    assert is_problem(await api.post(f"{PR}/{made}/reject", APPROVER[1]), 403, "forbidden")
    rejected = await api.ok("post", f"{PR}/{made}/reject", APPROVER[2], json={"comment": "no"})
    assert rejected["status"] == "rejected"
    assert is_problem(await api.post(f"{PR}/{made}/approve", APPROVER[3]), 409,
                      "invalid_transition")
    decisions = await api.sql("SELECT level, verdict, comment FROM approvals "
                              "WHERE purchase_request_id = %s ORDER BY level", (made,))
    assert decisions == [(1, "approved", "ok"), (2, "rejected", "no")]


async def test_quotations_orders_and_delivery(api: Api) -> None:
    vendor = await supplier(api)
    draft = (await api.ok("post", PR, REQUESTER, 201, json={"title": "a", "amount": 1}))["id"]
    body = {"supplier_id": vendor, "amount": 300, "delivery_days": 5, "notes": "fast"}
    assert is_problem(await api.post(f"{PR}/{draft}/quotations", BUYER, json=body), 409,
                      "invalid_transition")
    request_id = await approved_request(api)
    quotes = f"{PR}/{request_id}/quotations"
    assert is_problem(await api.post(quotes, REQUESTER, json=body), 403, "forbidden")
    assert is_problem(await api.post(quotes, BUYER, content=b"nope", headers=JSON),
                      400, "malformed_json")
    for bad in ({**body, "delivery_days": -1}, {**body, "supplier_id": "x"},
                {"amount": 1}, {**body, "delivery_days": 1.5}):
        assert is_problem(await api.post(quotes, BUYER, json=bad), 422, "invalid_body"), bad
    assert is_problem(await api.post(quotes, BUYER, json={**body, "supplier_id": MISSING}),
                      422, "invalid_supplier")
    made = await api.post(quotes, BUYER, json=body)
    assert made.status_code == 201 and made.headers["Location"].startswith("/api/quotations/")
    quote = made.json()
    assert quote["status"] == "active" and quote["amount"] == 300.0
    cheaper = await api.ok("post", quotes, BUYER, 201, json={**body, "amount": "250.00"})

    orders = f"{PR}/{request_id}/orders"
    assert is_problem(await api.post(orders, REQUESTER, json={"quotation_id": quote["id"]}),
                      403, "forbidden")
    assert is_problem(await api.post(orders, BUYER, json={}), 422, "invalid_body")
    assert is_problem(await api.post(orders, BUYER, content=b"{", headers=JSON),
                      400, "malformed_json")
    assert is_problem(await api.post(orders, BUYER, json={"quotation_id": MISSING}), 404,
                      "not_found")
    order = await api.ok("post", orders, BUYER, 201, json={"quotation_id": cheaper["id"]})
    assert order["amount"] == 250.0 and order["delivery_status"] == "pending"
    assert is_problem(await api.post(orders, BUYER, json={"quotation_id": quote["id"]}), 409,
                      "invalid_transition")
    states = dict(await api.sql("SELECT id::text, status FROM quotations "
                                "WHERE purchase_request_id = %s", (request_id,)))
    assert states == {quote["id"]: "declined", cheaper["id"]: "selected"}

    path = f"{PO}/{order['id']}"
    assert is_problem(await api.post(f"{path}/in-transit", REQUESTER), 403, "forbidden")
    assert is_problem(await api.post(f"{path}/in-transit", BUYER, json={"x": 1}), 422,
                      "invalid_body")
    assert is_problem(await api.post(f"{path}/in-transit", BUYER, content=b"{", headers=JSON), 400,
                      "malformed_json")
    assert (await api.ok("post", f"{path}/in-transit", BUYER))["delivery_status"] == \
        "in_transit"
    assert is_problem(await api.post(f"{path}/in-transit", BUYER), 409, "invalid_transition")
    assert is_problem(await api.post(f"{path}/delivered", APPROVER[3]), 403, "forbidden")
    assert is_problem(await api.post(f"{path}/delivered", BUYER, content=b"]", headers=JSON), 400,
                      "malformed_json")
    assert is_problem(await api.post(f"{path}/delivered", BUYER, json=[]), 422, "invalid_body")
    delivered = await api.ok("post", f"{path}/delivered", BUYER)
    assert delivered["delivery_status"] == "delivered"
    assert is_problem(await api.post(f"{path}/delivered", BUYER), 409, "invalid_transition")
    assert is_problem(await api.post(f"{PO}/{MISSING}/delivered", BUYER), 404, "not_found")
    status = await api.ok("get", f"{PR}/{request_id}", ADMIN, params={"fields": "status"})
    assert status["status"] == "delivered"


async def test_writes_reach_reads_and_subscribers_through_the_log(api: Api) -> None:
    start = (await api.ok("get", PR))["offset"]
    made: dict[str, Any] = await api.ok("post", PR, REQUESTER, 201,
                                        json={"title": "Log", "amount": 5, "submit": True})
    delta = await api.ok("get", PR, APPROVER[1], params={"since": start})
    assert [r["id"] for r in delta["data"]] == [made["id"]]
    audit = await api.sql("SELECT action FROM audit_logs WHERE record_id = %s", (made["id"],))
    assert audit == [("create",)]


async def test_answers_before_the_body_is_needed_keep_the_connection_usable(api: Api) -> None:
    """Regression: with hypercorn 0.18, an answer sent before the request body was read
    (a 404 for a malformed id, a 401) left the next request on the same keep-alive
    connection unanswered; the app now reads every body first."""
    url, auth = api.node.http_url, api.auth(ADMIN)

    def hammer() -> list[int]:
        statuses = []
        with httpx.Client(base_url=url, timeout=5) as client:
            for index in range(150):
                headers = {"content-type": "application/json", **(auth if index % 2 else {})}
                statuses.append(client.post(f"{PR}/0/cancel", content=b'{"x": 1}',
                                            headers=headers).status_code)
        return statuses

    statuses = await trio.to_thread.run_sync(hammer)
    assert statuses == [401, 404] * 75
