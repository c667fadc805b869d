"""/openapi.json is true: it names every route the app has, and a schema-driven fuzz
(schemathesis generating valid and invalid requests from it) finds no 5xx, only problem
details for errors, and no status the document does not list."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from sinal.api.problems import CODES
from sinal.api.write_routes import ORDER_ACTIONS, REQUEST_ACTIONS
from sinal.node.http import build_app
from tests.api.api_support import ADMIN, APPROVER, BUYER, REQUESTER, Api


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000"}


def app_routes(api: Api) -> set[tuple[str, str]]:
    app = build_app(api.node)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("pages."):
            continue  # the browser app (api/pages.py) is not part of the REST API
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        path = path.replace("{row_id}", "{id}").replace("{request_id}", "{id}")
        path = path.replace("{order_id}", "{id}")
        actions = REQUEST_ACTIONS if "purchase-requests" in path else ORDER_ACTIONS
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            for concrete in ([path.replace("{action}", a) for a in actions]
                             if "{action}" in path else [path]):
                routes.add((method.lower(), concrete))
    return routes


async def test_document_lists_every_route_and_only_those(api: Api) -> None:
    document = await api.ok("get", "/openapi.json")
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item}
    assert documented == app_routes(api)
    for path in ("/api/suppliers", "/api/departments", "/api/users", "/api/users/{id}",
                 "/api/me", "/api/audit"):
        assert "get" in document["paths"][path], path
    for code in ("unsupported_media_type", "malformed_request", "headers_too_large"):
        assert code in CODES
    write = document["paths"]["/api/purchase-requests"]["post"]["responses"]
    assert "415" in write
    assert set(document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]) \
        == set(CODES)


async def test_schema_driven_fuzz_finds_no_server_error(api: Api) -> None:
    document = await api.ok("get", "/openapi.json")
    schema = schemathesis.openapi.from_dict(document)
    operations = {op.ok().label: op.ok()  # type: ignore[union-attr]
                  for op in schema.get_all_operations()}
    tokens = [api.auth(who)["Authorization"] for who in (ADMIN, REQUESTER, APPROVER[1], BUYER)]
    cases = st.one_of(
        *[schema.as_strategy(GenerationMode.POSITIVE, headers={"Authorization": token})
          for token in tokens],
        schema.as_strategy(GenerationMode.NEGATIVE, headers={"Authorization": tokens[0]}),
        schema.as_strategy(GenerationMode.NEGATIVE),
    )
    url = api.node.http_url
    seen: dict[int, int] = {}
    paths: set[str] = set()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=20) as client:

            @settings(max_examples=500, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=cases)
            def no_server_error(case: Any) -> None:
                kwargs = case.as_transport_kwargs(base_url=url)
                body = kwargs.pop("json", None)
                content = kwargs.pop("data", None)
                try:
                    request = client.build_request(
                        kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
                        params=kwargs.get("params"), cookies=kwargs.get("cookies"),
                        **({"json": body} if body is not None else {}),
                        **({"content": content} if content is not None else {}))
                except (UnicodeError, TypeError, ValueError, httpx.HTTPError):
                    assume(False)  # not sendable over HTTP/1.1 by this client
                    return
                try:
                    response = client.send(request)
                except (httpx.LocalProtocolError, UnicodeError):
                    assume(False)
                    return
                status = response.status_code
                seen[status] = seen.get(status, 0) + 1
                paths.add(case.path)
                described = f"{case.method} {case.path} -> {status}: {response.text[:300]}"
                unhealthy = status == 503 and case.path.startswith("/health/")
                assert status < 500 or unhealthy, described
                operation = operations[f"{case.method} {case.path}"]
                assert str(status) in operation.definition.raw["responses"], described
                if status >= 400 and not unhealthy:
                    assert response.headers["content-type"] == "application/problem+json", \
                        described
                    problem = response.json()
                    assert problem["status"] == status and problem["code"] in CODES, described

            no_server_error()

    await trio.to_thread.run_sync(run)
    assert seen.get(200, 0) + seen.get(201, 0) > 20, seen
    assert {"/api/suppliers", "/api/departments", "/api/users", "/api/me",
            "/api/audit"} <= paths, sorted(paths)
    assert sum(v for k, v in seen.items() if 400 <= k < 500) > 50, seen
