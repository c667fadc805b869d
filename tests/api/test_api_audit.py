"""The audit trail over HTTP: refused requests (401, 403, 429) and admin or user actions
(supervisor reads, preference changes) reach `audit_logs` through the node's audit writer,
and admins read the trail at GET /api/audit (since, limit, keyset pages, filters)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from sinal.domain.tokens import mint_token
from tests.api.api_support import ADMIN, APPROVER, BUYER, REQUESTER, Api
from tests.api.test_api_reads import is_problem
from tests.realtime.realtime_support import token_for

AUDIT = "/api/audit"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "40"}


async def http_events(api: Api, **filters: str) -> list[dict[str, Any]]:
    assert api.node.audit is not None
    with trio.fail_after(10):
        await api.node.audit.run_now()
    page = await api.ok("get", AUDIT, ADMIN, params={"table": "http", "limit": 1000,
                                                     **filters})
    assert page["nextCursor"] is None
    return list(page["data"])


async def test_refusals_and_actions_are_audited(api: Api) -> None:
    user = api.users[REQUESTER]
    forged = mint_token("x" * 40, user["id"], user["role"])
    assert (await api.client.get("/api/quotations",
                                 headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    expired = token_for(user, ttl=-10)
    assert (await api.client.get("/api/approvals",
                                 headers={"Authorization": f"Bearer {expired}"})).status_code == 401
    assert is_problem(await api.get("/api/quotations", APPROVER[1]), 403, "forbidden")
    assert is_problem(await api.get("/api/supervisor", BUYER), 403, "forbidden")
    assert (await api.get("/api/supervisor", ADMIN)).status_code == 200
    await api.ok("put", "/api/user/notification-preferences", REQUESTER,
                 json={"frequency": "daily", "soundEnabled": False})
    # no token at all is not an authentication failure: nothing recorded
    assert (await api.client.get("/api/purchase-orders")).status_code == 401

    events = await http_events(api)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["table_name"] == "http"
        by_action.setdefault(event["action"], []).append(event)
    assert set(by_action) == {"auth_failed", "token_expired", "forbidden", "supervisor_read",
                              "preferences_changed"}, by_action
    [failed] = by_action["auth_failed"]
    assert failed["record_id"] == "/api/quotations" and failed["actor_id"] is None
    [late] = by_action["token_expired"]
    assert late["record_id"] == "/api/approvals" and late["actor_id"] is None
    forbidden = {(e["record_id"], e["actor_id"]) for e in by_action["forbidden"]}
    assert forbidden == {("/api/quotations", api.users[APPROVER[1]]["id"]),
                         ("/api/supervisor", api.users[BUYER]["id"])}
    [read] = by_action["supervisor_read"]
    assert read["actor_id"] == api.users[ADMIN]["id"]
    [prefs] = by_action["preferences_changed"]
    assert prefs["actor_id"] == user["id"]
    assert prefs["details"]["frequency"] == "daily" and prefs["details"]["soundEnabled"] is False
    # the 403 of an audit read by a non-admin is itself audited
    assert is_problem(await api.get(AUDIT, REQUESTER), 403, "forbidden")
    again = await http_events(api, action="forbidden")
    assert {e["record_id"] for e in again} == {"/api/quotations", "/api/supervisor", AUDIT}


async def test_rate_limited_is_audited_once_per_minute(api: Api) -> None:
    statuses = [(await api.get("/api/purchase-requests", REQUESTER)).status_code
                for _ in range(45)]
    assert statuses.count(429) >= 5
    [limited] = await http_events(api, action="rate_limited")
    assert limited["actor_id"] == api.users[REQUESTER]["id"]
    assert limited["record_id"] == "/api/purchase-requests"


async def test_audit_pages_since_and_filters(api: Api) -> None:
    admin_id = api.users[ADMIN]["id"]
    for index in range(7):
        await api.sql("INSERT INTO audit_logs (table_name, record_id, action, actor_id, details)"
                      " VALUES ('test', %s, %s, %s, '{}')",
                      (f"r{index}", "even" if index % 2 == 0 else "odd", admin_id))
    first = await api.ok("get", AUDIT, ADMIN, params={"table": "test", "limit": 3})
    assert [r["record_id"] for r in first["data"]] == ["r0", "r1", "r2"], "oldest first"
    ids = [r["id"] for r in first["data"]]
    assert ids == sorted(ids)
    walked = list(first["data"])
    cursor = first["nextCursor"]
    while cursor is not None:
        page = await api.ok("get", AUDIT, ADMIN, params={"table": "test", "limit": 3,
                                                         "cursor": cursor})
        walked.extend(page["data"])
        cursor = page["nextCursor"]
    assert [r["record_id"] for r in walked] == [f"r{i}" for i in range(7)]
    after = await api.ok("get", AUDIT, ADMIN, params={"table": "test", "since": ids[1]})
    assert [r["record_id"] for r in after["data"]] == ["r2", "r3", "r4", "r5", "r6"]
    odd = await api.ok("get", AUDIT, ADMIN, params={"table": "test", "action": "odd"})
    assert [r["record_id"] for r in odd["data"]] == ["r1", "r3", "r5"]
    assert odd["data"][0]["actor_id"] == admin_id and odd["data"][0]["details"] == {}
    for params, code in (({"since": "-1"}, "invalid_parameter"),
                         ({"since": "x"}, "invalid_parameter"),
                         ({"limit": "0"}, "invalid_parameter"),
                         ({"cursor": "nope"}, "invalid_cursor"),
                         ({"action": "a" * 65}, "invalid_parameter")):
        assert is_problem(await api.get(AUDIT, ADMIN, params=params), 400, code), params
    for who in (REQUESTER, APPROVER[2], BUYER):
        assert is_problem(await api.get(AUDIT, who), 403, "forbidden")
