"""No input can hurt a node (issue #10, REST): every bad request gets a 4xx with a
documented code as problem details, never a 5xx, and nothing else is disturbed. Some
requests are not sendable by an HTTP client: those go over a raw socket."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import trio

from sinal.domain.tokens import ALGORITHM
from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api
from tests.api.test_api_reads import is_problem
from tests.realtime.realtime_support import SECRET

PR = "/api/purchase-requests"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "10000"}


async def raw_exchange(api: Api, data: bytes, count: int | None = None) -> bytes:
    """Send `data` on a fresh connection; everything the server sends until it closes
    (or, with `count`, until that many complete answers arrived)."""
    host, port = api.node.http_url.rsplit("/", 1)[-1].rsplit(":", 1)
    received = b""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                received += chunk
                if count is not None and len(answers(received)) >= count:
                    break
    return received


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The complete HTTP/1.1 responses in `raw` (each with a Content-Length)."""
    out = []
    while b"\r\n\r\n" in raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers.get("content-length", "0"))
        if len(rest) < size:
            break
        out.append((status, headers, rest[:size]))
        raw = rest[size:]
    return out


async def test_lone_surrogates_are_422_naming_the_field(api: Api) -> None:
    draft = await api.ok("post", PR, REQUESTER, 201, json={"title": "Desk", "amount": 1,
                                                           "submit": True})
    cases = [
        (PR, b'{"title": "\\ud800", "amount": 1}', "title"),
        (PR, b'{"title": "ok", "amount": 1, "description": "x\\udfff"}', "description"),
        (PR, b'{"title": "ok", "amount": 1, "items": [{"\\ud800": 1}]}', "items"),
        (PR, b'{"title": "ok", "amount": 1, "items": [{"k": "\\ud83d"}]}', "items"),
        (f"{PR}/{draft['id']}/approve", b'{"comment": "\\udc00"}', "comment"),
    ]
    for path, body, field in cases:
        who = APPROVER[1] if "approve" in path else REQUESTER
        response = await api.post(path, who, content=body, headers=JSON)
        assert is_problem(response, 422, "invalid_body"), body
        assert response.json()["field"] == field
    # an unknown field named by a lone surrogate is named back as valid UTF-8
    response = await api.post(PR, REQUESTER, content=b'{"\\ud800": 1}', headers=JSON)
    assert is_problem(response, 422, "invalid_body")
    # a proper pair is a character like any other
    made = await api.ok("post", PR, REQUESTER, 201, content=b'{"title": "\\ud83d\\ude00",'
                        b' "amount": 1}', headers=JSON)
    assert made["title"] == "\U0001f600"


async def test_repeated_keys_are_malformed_json(api: Api) -> None:
    for body in (b'{"title": "a", "title": "b", "amount": 1}',
                 b'{"title": "a", "amount": 1, "items": [{"k": 1, "k": 2}]}'):
        response = await api.post(PR, REQUESTER, content=body, headers=JSON)
        assert is_problem(response, 400, "malformed_json"), body
        assert "twice" in response.json()["detail"]
    assert (await api.sql("SELECT count(*) FROM purchase_requests WHERE title IN ('a', 'b')")
            ) == [(0,)]


async def test_writes_take_json_bodies_only(api: Api) -> None:
    body = json.dumps({"title": "Typed", "amount": 1}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "application/json; charset=latin-1", "multipart/form-data", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await api.post(PR, REQUESTER, content=body, headers=headers)
        assert is_problem(response, 415, "unsupported_media_type"), content_type
    prefs = await api.put("/api/user/notification-preferences", REQUESTER,
                          content=b'{"frequency": "off"}', headers={"Content-Type": "text/plain"})
    assert is_problem(prefs, 415, "unsupported_media_type")
    assert (await api.sql("SELECT count(*) FROM purchase_requests WHERE title = 'Typed'")
            ) == [(0,)]
    for content_type in ("application/json", "application/json; charset=utf-8",
                         "Application/JSON;charset=UTF-8"):
        await api.ok("post", PR, REQUESTER, 201, content=body,
                     headers={"Content-Type": content_type})
    # an action without a body needs no Content-Type at all
    draft = await api.ok("post", PR, REQUESTER, 201, json={"title": "Bare", "amount": 1})
    submitted = await api.post(f"{PR}/{draft['id']}/submit", REQUESTER)
    assert submitted.status_code == 200 and submitted.json()["status"] == "pending_a1"


async def test_requesters_file_for_their_own_department(api: Api) -> None:
    own = api.users[REQUESTER]["department_id"]
    other = api.users[OTHER_REQUESTER]["department_id"]
    assert own != other
    refused = await api.post(PR, REQUESTER, json={"title": "Elsewhere", "amount": 1,
                                                  "department_id": other})
    assert is_problem(refused, 403, "forbidden")
    assert "own department" in refused.json()["detail"]
    mine = await api.ok("post", PR, REQUESTER, 201, json={"title": "Here", "amount": 1,
                                                           "department_id": own})
    assert mine["department_id"] == own
    for who in (BUYER, ADMIN):  # buyers and admins file for any department
        made = await api.ok("post", PR, who, 201, json={"title": "For them", "amount": 1,
                                                         "department_id": other})
        assert made["department_id"] == other
    assert (await api.sql("SELECT count(*) FROM purchase_requests WHERE title = 'Elsewhere'")
            ) == [(0,)]


async def test_exp_must_be_a_number(api: Api) -> None:
    user = api.users[REQUESTER]
    now = int(time.time())
    for exp in (str(now + 3600), "soon", True, [now + 3600], {"at": 1}):
        token = jwt.encode({"sub": user["id"], "role": "requester", "iat": now, "exp": exp},
                           SECRET, algorithm=ALGORITHM)
        response = await api.client.get(PR, headers={"Authorization": f"Bearer {token}"})
        assert is_problem(response, 401, "auth_failed"), exp
    expired_string = jwt.encode({"sub": user["id"], "exp": str(now - 10)}, SECRET,
                                algorithm=ALGORITHM)
    response = await api.client.get(PR, headers={"Authorization": f"Bearer {expired_string}"})
    assert is_problem(response, 401, "auth_failed")
    good = jwt.encode({"sub": user["id"], "role": "requester", "exp": now + 3600.5}, SECRET,
                      algorithm=ALGORITHM)
    assert (await api.client.get(PR, headers={"Authorization": f"Bearer {good}"})
            ).status_code == 200


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


async def test_websocket_upgrade_on_the_http_port_is_404(api: Api) -> None:
    for extra in (b"", b"Sec-WebSocket-Protocol:\r\n", b"Sec-WebSocket-Protocol: json\r\n"):
        [(status, headers, body)] = answers(await raw_exchange(api, UPGRADE + extra + b"\r\n"))
        assert status == 404, (extra, body)
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["code"] == "not_found" and "ws://" in problem["detail"]
    # an invalid handshake (no key) is refused by the server itself: problem details too
    broken = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    [(status, headers, body)] = answers(await raw_exchange(api, broken, count=1))
    assert status == 400 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "malformed_request"
    assert (await api.get("/health/live", None)).status_code == 200


async def test_headers_too_large_is_431_problem(api: Api) -> None:
    request = b"GET /api/purchase-requests HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000
    [(status, headers, body)] = answers(await raw_exchange(api, request + b"\r\n\r\n"))
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert json.loads(body)["code"] == "headers_too_large"
    [(status, headers, body)] = answers(await raw_exchange(api, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and json.loads(body)["code"] == "malformed_request"


async def test_content_length_with_transfer_encoding_closes_the_connection(api: Api) -> None:
    token = api.auth(ADMIN)["Authorization"].encode()
    smuggled = (b"POST /api/purchase-requests HTTP/1.1\r\nHost: x\r\nAuthorization: " + token
                + b"\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    replies = answers(await raw_exchange(api, smuggled))
    assert len(replies) == 1, "the request pipelined behind it must not be served"
    status, headers, body = replies[0]
    assert status == 400 and headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "malformed_request"
    # a clean keep-alive pipeline is still served in full
    clean = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    replies = answers(await raw_exchange(api, clean, count=2))
    assert [r[0] for r in replies] == [200, 200]
