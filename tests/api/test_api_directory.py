"""The reads a client needs besides the workflow's lists: GET /api/suppliers,
/api/departments, /api/users (admins: everyone; others: themselves) and GET /api/me, with
the same ETag, since and fields rules as every list (they are catalogue resources)."""

from __future__ import annotations

import pytest

from sinal.domain.access import AccessError, permission_filter
from sinal.domain.principals import Principal
from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api
from tests.api.test_api_reads import is_problem


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "10000"}


async def test_users_admins_see_everyone_others_themselves(api: Api) -> None:
    everyone, _ = await api.all_rows("/api/users", ADMIN)
    assert {row["email"] for row in everyone.values()} == set(api.users)
    for who in (REQUESTER, APPROVER[2], BUYER):
        page = await api.ok("get", "/api/users", who)
        assert [row["id"] for row in page["data"]] == [api.users[who]["id"]]
        assert page["data"][0]["email"] == who  # their own e-mail, no one else's
        own = await api.ok("get", f"/api/users/{api.users[who]['id']}", who)
        assert own["email"] == who
        other = api.users[OTHER_REQUESTER]["id"]
        assert is_problem(await api.get(f"/api/users/{other}", who), 404, "not_found")
    named = await api.ok("get", "/api/users", ADMIN, params={"fields": "name,role"})
    assert all(set(row) == {"id", "name", "role"} for row in named["data"])
    assert is_problem(await api.get("/api/users", ADMIN, params={"fields": "password"}), 400,
                      "unknown_field")


async def test_departments_for_everyone_suppliers_for_buyers(api: Api) -> None:
    names = {r[0] for r in await api.sql("SELECT name FROM departments")}
    for who in (REQUESTER, APPROVER[1], BUYER, ADMIN):
        page = await api.ok("get", "/api/departments", who)
        assert {row["name"] for row in page["data"]} == names
    suppliers = {r[0] for r in await api.sql("SELECT id::text FROM suppliers")}
    for who in (BUYER, ADMIN):
        rows, _ = await api.all_rows("/api/suppliers", who)
        assert set(rows) == suppliers
    for who in (REQUESTER, APPROVER[3]):
        assert is_problem(await api.get("/api/suppliers", who), 403, "forbidden")
        one = next(iter(suppliers))
        assert is_problem(await api.get(f"/api/suppliers/{one}", who), 403, "forbidden")


async def test_etags_and_deltas_like_every_list(api: Api) -> None:
    await api.settle()
    first = await api.get("/api/users", REQUESTER)
    etag = first.headers["ETag"]
    again = await api.get("/api/users", REQUESTER, headers={"If-None-Match": etag})
    assert again.status_code == 304
    offset = first.json()["offset"]
    # someone else's change: the requester's delta shows nothing of it
    await api.sql("UPDATE users SET name = 'Bruno B.' WHERE email = %s", (OTHER_REQUESTER,))
    await api.sql("UPDATE users SET name = 'Ana A.' WHERE email = %s", (REQUESTER,))
    await api.settle()
    delta = await api.ok("get", "/api/users", REQUESTER, params={"since": offset})
    assert [(r["name"], r["_operation"]) for r in delta["data"]] == [("Ana A.", "update")]
    admin_delta = await api.ok("get", "/api/users", ADMIN, params={"since": offset})
    assert {r["name"] for r in admin_delta["data"]} == {"Bruno B.", "Ana A."}
    changed = await api.get("/api/users", REQUESTER, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["data"][0]["name"] == "Ana A."
    dept = await api.get("/api/departments", BUYER)
    assert (await api.get("/api/departments", BUYER, headers={
        "If-None-Match": dept.headers["ETag"]})).status_code == 304


async def test_me(api: Api) -> None:
    user = api.users[REQUESTER]
    me = await api.ok("get", "/api/me", REQUESTER)
    assert me["principal"] == {"user_id": user["id"], "role": "requester",
                               "department_id": user["department_id"]}
    assert me["user"]["email"] == REQUESTER and me["user"]["is_active"] is True
    assert me["department"]["id"] == user["department_id"] and me["department"]["name"]
    assert me["token_expires_at"] > 0
    admin = await api.ok("get", "/api/me", ADMIN)
    assert admin["principal"]["role"] == "admin"
    assert is_problem(await api.get("/api/me", None), 401, "auth_required")


def test_the_rules_for_users_and_departments() -> None:
    ana = Principal("11111111-1111-4111-8111-111111111111", "requester", "d1")
    users = permission_filter(ana, "user_changed")
    assert users.matches_row({"id": ana.user_id})
    assert not users.matches_row({"id": "22222222-2222-4222-8222-222222222222"})
    assert permission_filter(ana, "department_changed").matches_row({"id": "any"})
    with pytest.raises(AccessError):
        permission_filter(ana, "supplier_changed")
