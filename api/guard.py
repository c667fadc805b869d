"""The outermost ASGI layer of the HTTP app: requests no route may see.

- A WebSocket upgrade sent to the HTTP port: the WebSocket endpoint has its own port
  (WEBSOCKET_PORT), so the answer is `404 not_found` as problem details, naming where the
  endpoint is (ASGI's `websocket.http.response` extension, which hypercorn offers), instead
  of letting the upgrade reach Quart, which has no WebSocket route and fails with 500.
- A request with both `Content-Length` and `Transfer-Encoding` (RFC 9112 section 6.1: a
  server may reject it and must then close the connection, since where the body ends is
  ambiguous -- the basis of request smuggling): `400 malformed_request` with
  `Connection: close`, so hypercorn closes the connection after the answer and a request
  pipelined behind it is never served.

Everything else goes to the app untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from sinal.api.http_rules import dump_json
from sinal.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from sinal.api.validation import MAX_BODY_BYTES

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class RequestGuard:
    def __init__(self, app: AsgiApp, websocket_url: Callable[[], str]) -> None:
        self.app = app
        self.websocket_url = websocket_url

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] == "websocket":
            where = self.websocket_url() or "WEBSOCKET_PORT"
            body = dump_json(problem_body(
                404, "not_found", f"no WebSocket endpoint on the HTTP port; connect to {where}"))
            await send({"type": "websocket.http.response.start", "status": 404,
                        "headers": _headers(body)})
            await send({"type": "websocket.http.response.body", "body": body,
                        "more_body": False})
            return
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                await _drain(receive)
                body = dump_json(problem_body(
                    400, "malformed_request", "a request may not carry both Content-Length "
                    "and Transfer-Encoding (RFC 9112); the connection is closed"))
                await send({"type": "http.response.start", "status": 400,
                            "headers": [*_headers(body), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        await self.app(scope, receive, send)


async def _drain(receive: ASGIReceiveCallable) -> None:
    """Read what the server took as the body (up to MAX_BODY_BYTES) before answering: with
    hypercorn 0.18 an answer that ends the connection while the request is still being
    read races the reading task, which may close the socket under the answer."""
    seen = 0
    while seen <= MAX_BODY_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode())]
