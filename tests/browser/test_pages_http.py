"""api/pages.py over HTTP: what GET / answers to whom, the pages and the files of web/
(content types, ETag and 304, gzip, no traversal), /web/config.json, and the development
login endpoint, which a production node does not have."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from sinal.api.pages import CONTENT_SECURITY_POLICY, PAGES, WEB_ROOT
from sinal.node.wiring import Node
from tests.realtime.realtime_support import node_config, token_for, users_of

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def raw_get(host: str, port: int, target: str) -> bytes:
    """GET with the request line exactly as given; the whole answer (head and body)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += await stream.receive_some(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def users(db_url: str) -> dict[str, dict[str, Any]]:
    return users_of(db_url)


async def start(db_url: str, nursery: trio.Nursery, **settings: str) -> Node:
    config = node_config(db_url, ENABLE_PERFORMANCE_MONITORING="false", **settings)
    node: Node = await nursery.start(Node(config, db_url).run)
    return node


@pytest.fixture
async def http(db_url: str, users: dict[str, Any], nursery: trio.Nursery
               ) -> AsyncIterator[httpx.AsyncClient]:
    node = await start(db_url, nursery, SINAL_ENV="development")
    async with httpx.AsyncClient(base_url=node.http_url, timeout=20) as client:
        client.node = node  # type: ignore[attr-defined]
        yield client


async def check_root_is_json_for_programs_and_the_start_page_for_browsers(
        http: httpx.AsyncClient) -> None:
    for accept in (None, "*/*", "application/json", "application/json, text/html;q=0.5"):
        headers = {"Accept": accept} if accept else {}
        response = await http.get("/", headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json", accept
        assert response.json()["name"] == "sinal"
    page = await http.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (WEB_ROOT / "index.html").read_text()
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (await http.post("/", headers={"Accept": BROWSER_ACCEPT})).status_code == 405


async def check_pages_and_files_have_their_types_and_revalidate(http: httpx.AsyncClient) -> None:
    for route, name in PAGES.items():
        page = await http.get(route)
        assert page.status_code == 200, route
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == (WEB_ROOT / name).read_text()
        assert '<script type="module"' in page.text and 'lang="pt-BR"' in page.text
    expected = {"sinal-client.js": "text/javascript; charset=utf-8",
                "js/board.js": "text/javascript; charset=utf-8",
                "css/sinal.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}
    for name, content_type in expected.items():
        response = await http.get(f"/web/{name}", headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type
        assert response.content == (WEB_ROOT / name).read_bytes()
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-content-type-options"] == "nosniff"
        etag = response.headers["etag"]
        again = await http.get(f"/web/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        weak = await http.get(f"/web/{name}", headers={"If-None-Match": f"W/{etag}"})
        assert weak.status_code == 304  # a proxy's gzip may weaken the tag
    async with http.stream("GET", "/web/sinal-client.js",
                           headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        assert "Accept-Encoding" in zipped.headers["vary"]
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert gzip.decompress(raw) == (WEB_ROOT / "sinal-client.js").read_bytes()


async def check_no_file_outside_web_can_be_named(http: httpx.AsyncClient) -> None:
    node = http.node  # type: ignore[attr-defined]
    host, port = node.http_url.removeprefix("http://").rsplit(":", 1)
    for target in ("/web/../pyproject.toml", "/web/%2e%2e/pyproject.toml",
                   "/web/..%2fapi%2fpages.py", "/web/js/../../api/pages.py",
                   "/web//etc/passwd", "/web/%2Fetc%2Fpasswd", "/web/", "/web/js",
                   "/web/nothing.js", "/web/../api/pages.py"):
        # a raw request line: no client-side normalisation of the path
        answer = await raw_get(host, int(port), target)
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), (target, answer[:200])
        assert b"[project]" not in answer and b"root:" not in answer
        assert b"def register_pages" not in answer


async def check_web_config_tells_the_pages_where_the_socket_is(http: httpx.AsyncClient) -> None:
    node = http.node  # type: ignore[attr-defined]
    config = (await http.get("/web/config.json")).json()
    assert config == {"httpPort": int(node.http_url.rsplit(":", 1)[1]),
                      "websocketPort": int(node.websocket_url.rsplit(":", 1)[1].split("/")[0]),
                      "websocketPath": "/ws", "development": True}


async def check_development_lists_demo_users_with_working_tokens(
        http: httpx.AsyncClient, users: dict[str, Any]) -> None:
    answer = await http.get("/api/dev/users")
    assert answer.status_code == 200
    listed = answer.json()["users"]
    assert [u["email"] for u in listed] == [
        "ana@sinal.dev", "bruno@sinal.dev", "carla@sinal.dev", "diego@sinal.dev",
        "elisa@sinal.dev", "fabio@sinal.dev", "admin@sinal.dev"]
    ana = listed[0]
    assert (ana["name"], ana["role"], ana["department"]) == ("Ana Souza", "requester", "TI")
    assert ana["departmentId"] == users["ana@sinal.dev"]["department_id"]
    mine = await http.get("/api/purchase-requests",
                          headers={"Authorization": f"Bearer {ana['token']}"})
    assert mine.status_code == 200
    forged = await http.get("/api/purchase-requests",
                            headers={"Authorization": f"Bearer {ana['token']}x"})
    assert forged.status_code == 401


async def test_pages_on_a_development_node(http: httpx.AsyncClient,
                                          users: dict[str, Any]) -> None:
    """One node for these checks (each would otherwise start its own)."""
    await check_root_is_json_for_programs_and_the_start_page_for_browsers(http)
    await check_pages_and_files_have_their_types_and_revalidate(http)
    await check_no_file_outside_web_can_be_named(http)
    await check_web_config_tells_the_pages_where_the_socket_is(http)
    await check_development_lists_demo_users_with_working_tokens(http, users)


async def test_production_has_no_demo_login(db_url: str, users: dict[str, Any],
                                            nursery: trio.Nursery) -> None:
    node = await start(db_url, nursery, SINAL_ENV="production")
    async with httpx.AsyncClient(base_url=node.http_url, timeout=20) as client:
        answer = await client.get("/api/dev/users")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
        token = token_for(users["admin@sinal.dev"])
        answer = await client.get("/api/dev/users", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404
        assert (await client.get("/web/config.json")).json()["development"] is False
        page = await client.get("/", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 200 and "Entrar com um token" in page.text
