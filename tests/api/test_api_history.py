"""GET /api/purchase-requests/<id>/history: every change of a request and of its approvals,
quotations and orders, in order, with who made it (the user the workflow named in its
transaction; unknown for other writers); visible to whoever may see the request; changes
removed by retention are reported, not silently missing."""

from __future__ import annotations

import pytest

from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api
from tests.api.test_api_reads import is_problem

PR = "/api/purchase-requests"
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "10000"}


def history_of(request_id: str) -> str:
    return f"{PR}/{request_id}/history"


async def delivered_request(api: Api) -> tuple[str, str]:
    """A request taken through the whole workflow over REST; (request id, a 2nd quote id)."""
    made = await api.ok("post", PR, REQUESTER, 201, json={"title": "Desk", "amount": "350.5",
                                                           "submit": True})
    request = str(made["id"])
    for level in (1, 2, 3):
        await api.ok("post", f"{PR}/{request}/approve", APPROVER[level])
    vendors = [r[0] for r in await api.sql("SELECT id::text FROM suppliers ORDER BY name")]
    quote = await api.ok("post", f"{PR}/{request}/quotations", BUYER, 201,
                         json={"supplier_id": vendors[0], "amount": 300})
    spare = await api.ok("post", f"{PR}/{request}/quotations", BUYER, 201,
                         json={"supplier_id": vendors[1], "amount": 320})
    order = await api.ok("post", f"{PR}/{request}/orders", BUYER, 201,
                         json={"quotation_id": quote["id"]})
    await api.ok("post", f"/api/purchase-orders/{order['id']}/in-transit", BUYER)
    await api.ok("post", f"/api/purchase-orders/{order['id']}/delivered", BUYER)
    return request, str(spare["id"])


async def test_every_change_in_order_with_who_made_it(api: Api) -> None:
    request, spare = await delivered_request(api)
    # a writer that names nobody: psql, another application
    await api.sql("UPDATE purchase_requests SET title = 'Desk (oak)' WHERE id = %s", (request,))
    await api.sql("DELETE FROM quotations WHERE id = %s", (spare,))
    body = await api.ok("get", history_of(request), ADMIN)
    assert body["complete"] is True and body["gap"] is None and body["hasMore"] is False
    entries = body["entries"]
    offsets = [e["offset"] for e in entries]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert offsets[-1] <= body["offset"]
    expected_rows = await api.sql(
        "SELECT count(*) FROM change_log WHERE row_id = %s OR new_row ->> "
        "'purchase_request_id' = %s OR old_row ->> 'purchase_request_id' = %s",
        (request, request, request))
    assert len(entries) == expected_rows[0][0]

    names = {u["id"]: u["name"] for u in api.users.values()}
    steps = [(e["resource"], e["op"], e["changed"].get(
        "delivery_status" if e["resource"] == "purchase_order" else "status"),
        (e["actor"] or {}).get("id")) for e in entries]
    who = {email: api.users[email]["id"] for email in api.users}
    assert steps[0] == ("purchase_request", "insert", "pending_a1", who[REQUESTER])
    for level in (1, 2, 3):
        decision = next(e for e in entries if e["resource"] == "approval"
                        and e["changed"].get("level") == level)
        assert decision["op"] == "insert" and decision["actor"]["id"] == who[APPROVER[level]]
        assert decision["actor"]["name"] == names[who[APPROVER[level]]]
    moves = [e for e in entries if e["resource"] == "purchase_request" and e["op"] == "update"]
    assert [m["changed"].get("status") for m in moves[:4]] == [
        "pending_a2", "pending_a3", "approved", "quoting"]
    assert moves[0]["previous"]["status"] == "pending_a1"
    assert ("purchase_order", "insert", "pending", who[BUYER]) in steps
    assert ("purchase_order", "update", "in_transit", who[BUYER]) in steps
    assert ("purchase_request", "update", "delivered", who[BUYER]) in steps
    unknown = entries[-2]
    assert unknown["op"] == "update" and unknown["changed"]["title"] == "Desk (oak)"
    assert unknown["actor"] is None and unknown["previous"]["title"] == "Desk"
    removed = entries[-1]
    assert (removed["resource"], removed["op"], removed["id"]) == ("quotation", "delete", spare)
    assert removed["previous"]["amount"] == 320 and removed["changed"] == {} \
        and removed["actor"] is None

    # when the request began waiting at each level: level N's decision moved it on
    waits = await api.sql(
        "SELECT level, decided_at, waiting_since FROM approvals WHERE purchase_request_id = %s "
        "ORDER BY level", (request,))
    assert waits[1][2] == waits[0][1] and waits[2][2] == waits[1][1]
    assert all(since is not None and since <= decided for _, decided, since in waits)

    # pages: after= and limit=
    first = await api.ok("get", history_of(request), ADMIN, params={"limit": 3})
    assert first["hasMore"] is True and first["entries"] == entries[:3]
    rest = await api.ok("get", history_of(request), ADMIN,
                        params={"after": entries[2]["offset"]})
    assert rest["entries"] == entries[3:]


async def test_whoever_may_see_the_request_may_read_its_history(api: Api) -> None:
    request, _ = await delivered_request(api)
    for who in (ADMIN, REQUESTER, BUYER):  # the owner; a buyer sees delivered requests
        assert (await api.ok("get", history_of(request), who))["entries"]
    # another department's requester, an approver whose level it has left: not theirs
    for who in (OTHER_REQUESTER, APPROVER[1]):
        assert is_problem(await api.get(history_of(request), who), 403, "forbidden")
    assert is_problem(await api.get(history_of(MISSING), ADMIN), 404, "not_found")
    assert is_problem(await api.get(history_of("not-a-uuid"), ADMIN), 404, "not_found")
    assert is_problem(await api.get(history_of(request), None), 401, "auth_required")
    for bad in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}):
        assert is_problem(await api.get(history_of(request), ADMIN, params=bad), 400,
                          "invalid_parameter")
    # a deleted request keeps its history, for those who could see it
    draft = await api.ok("post", PR, REQUESTER, 201, json={"title": "Pens", "amount": 9})
    await api.sql("DELETE FROM purchase_requests WHERE id = %s", (draft["id"],))
    gone = await api.ok("get", history_of(draft["id"]), REQUESTER)
    assert gone["deleted"] is True and [e["op"] for e in gone["entries"]] == ["insert",
                                                                                "delete"]
    assert is_problem(await api.get(history_of(draft["id"]), OTHER_REQUESTER), 403,
                      "forbidden")


async def test_changes_removed_by_retention_are_reported(api: Api) -> None:
    made = await api.ok("post", PR, REQUESTER, 201, json={"title": "Chair", "amount": 80,
                                                           "submit": True})
    await api.ok("post", f"{PR}/{made['id']}/approve", APPROVER[1])
    await api.ok("post", f"{PR}/{made['id']}/approve", APPROVER[2])
    full = (await api.ok("get", history_of(made["id"]), ADMIN))["entries"]
    assert len(full) == 5  # insert, decision, move, decision, move
    # retention removes the oldest changes (as the housekeeping actor does)
    cut = full[2]["offset"]
    await api.sql("DELETE FROM change_log WHERE position <= %s", (cut,))
    body = await api.ok("get", history_of(made["id"]), ADMIN)
    assert body["complete"] is False
    assert body["gap"]["reason"] == "retention" and body["gap"]["throughOffset"] >= cut
    assert body["entries"] == full[3:]
    assert body["gap"]["throughOffset"] < full[3]["offset"]


async def test_history_is_a_documented_route(api: Api) -> None:
    document = await api.ok("get", "/openapi.json")
    operation = document["paths"]["/api/purchase-requests/{id}/history"]["get"]
    assert {"200", "403", "404"} <= set(operation["responses"])
