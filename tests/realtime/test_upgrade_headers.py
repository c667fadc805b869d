"""An empty `Sec-WebSocket-Protocol:` header on the WebSocket port offers nothing: the
upgrade is answered 101 with the default encoding (it used to be a 500)."""

from __future__ import annotations

import base64
import os

import trio

from sinal.node.wiring import Node


async def test_empty_subprotocol_header_is_no_offer(node: Node) -> None:
    port = int(node.websocket_url.rsplit(":", 1)[1].split("/")[0])
    key = base64.b64encode(os.urandom(16)).decode()
    request = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: \r\n\r\n")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
    status = head.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-protocol" not in head.lower()
