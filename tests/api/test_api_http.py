"""HTTP rules: bearer tokens (401), rate limit (429), problem details for every error,
CORS."""

from __future__ import annotations

import pytest

from sinal.domain.tokens import mint_token
from tests.api.api_support import ADMIN, REQUESTER, Api
from tests.api.test_api_reads import is_problem
from tests.realtime.realtime_support import SECRET, token_for

PR = "/api/purchase-requests"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "6",
            "WEBSOCKET_CORS_ORIGIN": "http://app.example, https://ops.example",
            "ENABLE_SMART_POLLING": "false", "ENABLE_DELTA_UPDATES": "false"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_forged_or_expired_token_is_401(api: Api) -> None:
    user = api.users[REQUESTER]
    cases = [
        ({}, "auth_required"),
        ({"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}, "auth_required"),
        (bearer("not-a-jwt"), "auth_failed"),
        (bearer(mint_token("x" * 40, user["id"], user["role"])), "auth_failed"),
        (bearer(token_for(user, ttl=-10)), "token_expired"),
    ]
    for headers, code in cases:
        response = await api.client.get(PR, headers=headers)
        assert is_problem(response, 401, code), headers
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer")
        assert (code == "auth_required") == ("invalid_token" not in challenge)
    # a valid signature for a user that is gone, or deactivated
    ghost = mint_token(SECRET, "00000000-0000-4000-8000-000000000000", "admin")
    assert is_problem(await api.client.get(PR, headers=bearer(ghost)), 401, "auth_failed")
    assert is_problem(await api.client.get(PR, headers=bearer("a" * 5000)), 401, "auth_failed")


async def test_deactivated_user_is_refused_once_the_change_is_read(api: Api) -> None:
    assert (await api.get(PR, REQUESTER)).status_code == 200
    await api.sql("UPDATE users SET is_active = false WHERE email = %s", (REQUESTER,))
    await api.settle()
    assert is_problem(await api.get(PR, REQUESTER), 401, "auth_failed")


async def test_rate_limit_is_429_with_retry_after(api: Api) -> None:
    for _ in range(6):
        assert (await api.get(PR, REQUESTER)).status_code == 200
    limited = await api.get(PR, REQUESTER)
    assert is_problem(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # per user: another user still has its budget; unauthenticated callers share the address's
    assert (await api.get(PR, ADMIN)).status_code == 200
    for _ in range(6):
        assert (await api.get(PR, None)).status_code == 401
    assert is_problem(await api.get(PR, None), 429, "rate_limited")
    # health and metrics are not charged
    for _ in range(10):
        assert (await api.get("/health/live", None)).status_code == 200


async def test_every_error_is_a_problem(api: Api) -> None:
    assert is_problem(await api.get("/api/nothing"), 404, "not_found")
    assert is_problem(await api.get("/nothing/at/all", None), 404, "not_found")
    wrong = await api.client.delete(PR, headers=api.auth(ADMIN))
    assert is_problem(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"] and "GET" in wrong.headers["Allow"]
    huge = await api.post(PR, REQUESTER, content=b"{" + b" " * (1 << 20) + b"}",
                          headers={"Content-Type": "application/json"})
    assert is_problem(huge, 413, "payload_too_large")
    for doubled in ("/api//purchase-requests", "/health//live", "//api/purchase-requests"):
        answer = await api.get(doubled)
        assert answer.status_code < 500, (doubled, answer.status_code, answer.text[:200])


async def test_cors_for_the_configured_origins(api: Api) -> None:
    allowed = await api.get(PR, headers={"Origin": "http://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Origin" in allowed.headers["Vary"]
    other = await api.get(PR, headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await api.client.options(PR, headers={
        "Origin": "https://ops.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ops.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    # problems carry CORS headers too, so a browser can read them
    denied = await api.client.get(PR, headers={"Origin": "http://app.example"})
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "http://app.example"


async def test_smart_polling_and_deltas_can_be_switched_off(api: Api) -> None:
    first = await api.get(PR)
    assert first.status_code == 200 and "ETag" not in first.headers
    assert first.json()["etag"] is None
    again = await api.get(PR, headers={"If-None-Match": "*"}, params={"since": 0})
    assert again.status_code == 200, "no 304 without ENABLE_SMART_POLLING"
    assert again.json()["isDelta"] is False, "since is ignored without ENABLE_DELTA_UPDATES"
