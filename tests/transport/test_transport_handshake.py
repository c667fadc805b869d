"""The opening handshake: subprotocols, admission, rejections, bad requests, timeout."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

from sinal.websocket import (
    ConnectionClosed,
    HandshakeError,
    Refuse,
    UpgradeRequest,
    WebSocketConnection,
    accept_websocket,
    listener_port,
    serve_websockets,
)
from tests.transport.ws_test_support import upgrade_request


async def handshake(request: bytes, **options: object) -> tuple[object, bytes, trio.abc.Stream]:
    """Feed ``request`` to accept_websocket; return its result (or error) and the reply."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(request)
    result: object
    try:
        result = await accept_websocket(server_stream, **options)  # type: ignore[arg-type]
    except HandshakeError as exc:
        result = exc
    reply = b""
    while b"\r\n\r\n" not in reply:
        data = await client_stream.receive_some(65536)
        if not data:
            break
        reply += data
    return result, bytes(reply), client_stream


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


async def test_accepts_and_exposes_path_query_headers() -> None:
    request = upgrade_request(
        "/ws/v1?token=abc%20d&x=1", extra="Authorization: Bearer T\r\nX-Custom: yes\r\n"
    )
    ws, reply, _ = await handshake(request)
    assert status_of(reply) == 101
    assert isinstance(ws, WebSocketConnection)
    assert ws.request is not None and ws.subprotocol is None
    assert ws.request.path == "/ws/v1"
    assert ws.request.query_param("token") == "abc d"
    assert ws.request.query_param("missing") is None
    assert ws.request.header("authorization") == "Bearer T"
    assert ws.request.header("X-CUSTOM") == "yes"
    assert ws.request.host == "example.test"


async def test_default_chooser_takes_clients_first_supported_subprotocol() -> None:
    request = upgrade_request(extra="Sec-WebSocket-Protocol: json, msgpack\r\n")
    ws, reply, _ = await handshake(request, subprotocols=["msgpack", "json"])
    assert isinstance(ws, WebSocketConnection)
    assert ws.subprotocol == "json"
    assert b"\r\nsec-websocket-protocol: json\r\n" in reply.lower()


@pytest.mark.parametrize("header", ["", " ", ",", " , json"])
async def test_an_empty_subprotocol_header_offers_nothing(header: str) -> None:
    request = upgrade_request(extra=f"Sec-WebSocket-Protocol: {header}\r\n")
    ws, reply, _ = await handshake(request, subprotocols=["msgpack", "json"])
    assert isinstance(ws, WebSocketConnection), reply
    assert ws.subprotocol == ("json" if "json" in header else None)
    assert ws.request is not None and "" not in ws.request.subprotocols


async def test_custom_chooser_sees_the_request() -> None:
    seen: list[UpgradeRequest] = []

    def choose(request: UpgradeRequest) -> str | None:
        seen.append(request)
        return "msgpack" if "msgpack" in request.subprotocols else None

    request = upgrade_request(extra="Sec-WebSocket-Protocol: json, msgpack\r\n")
    ws, _, _ = await handshake(request, select_subprotocol=choose)
    assert isinstance(ws, WebSocketConnection) and ws.subprotocol == "msgpack"
    assert seen[0].subprotocols == ("json", "msgpack")


async def test_unsupported_subprotocol_is_400() -> None:
    request = upgrade_request(extra="Sec-WebSocket-Protocol: mqtt\r\n")
    error, reply, client = await handshake(request, subprotocols=["msgpack"])
    assert isinstance(error, HandshakeError) and error.status == 400
    assert status_of(reply) == 400
    assert b"unsupported subprotocol" in reply + await client.receive_some(1000)


async def test_admit_refusal_answers_its_status_and_closes() -> None:
    async def admit(request: UpgradeRequest) -> None:
        raise Refuse(503, "connection pool full", [("Retry-After", "5")])

    error, reply, client = await handshake(upgrade_request(), admit=admit)
    assert isinstance(error, HandshakeError) and error.status == 503
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 5\r\n" in reply
    body = reply.split(b"\r\n\r\n", 1)[1]
    while True:  # then the server closes the stream
        more = await client.receive_some(1000)
        if not more:
            break
        body += more
    assert body == b"connection pool full\n"


async def test_admit_failure_is_500_and_propagates() -> None:
    async def admit(request: UpgradeRequest) -> None:
        raise RuntimeError("bug in admit")

    server_stream, client_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(upgrade_request())
    with pytest.raises(RuntimeError, match="bug in admit"):
        await accept_websocket(server_stream, admit=admit)
    assert (await client_stream.receive_some(1000)).startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request(key=""), 400),  # no Sec-WebSocket-Key
        (upgrade_request(method="POST"), 405),
        (upgrade_request(version="8"), 426),
        (upgrade_request(http="HTTP/1.0"), 400),
        (upgrade_request(extra="Content-Length: 5\r\n"), 400),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # plain HTTP, no upgrade
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS hello
        (b"hello world\r\n\r\n", 400),
        (upgrade_request(extra="X-Big: " + "a" * 20000 + "\r\n"), 431),
    ],
    ids=["no-key", "post", "version-8", "http-1.0", "body", "no-upgrade", "tls", "junk", "huge"],
)
async def test_bad_requests_get_an_http_error(request_bytes: bytes, status: int) -> None:
    error, reply, _ = await handshake(request_bytes)
    assert isinstance(error, HandshakeError)
    assert error.status == status
    assert status_of(reply) == status
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in reply


async def test_handshake_timeout_with_silent_or_slow_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for head in (b"", b"GET /ws HTTP/1.1\r\nHost: x\r\n"):
        server_stream, client_stream = trio.testing.memory_stream_pair()
        await client_stream.send_all(head)
        start = trio.current_time()
        with pytest.raises(HandshakeError) as info:
            await accept_websocket(server_stream, handshake_timeout=7)
        assert info.value.status is None
        assert trio.current_time() - start == pytest.approx(7)
        assert await client_stream.receive_some(100) == b""  # closed, nothing sent


async def test_peer_gone_before_request() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    await client_stream.send_eof()
    with pytest.raises(HandshakeError) as info:
        await accept_websocket(server_stream)
    assert info.value.status is None


async def test_frames_sent_right_after_the_request_are_not_lost() -> None:
    client = Connection(ConnectionType.CLIENT)
    early = client.send(BytesMessage(data=b"early bird"))
    ws, reply, client_stream = await handshake(upgrade_request() + early)
    assert isinstance(ws, WebSocketConnection)
    with trio.fail_after(1):
        assert await ws.receive() == b"early bird"
        await client_stream.send_all(client.send(CloseConnection(code=1000)))
        async with trio.open_nursery() as nursery:
            await nursery.start(ws.run)
            with pytest.raises(ConnectionClosed):
                await ws.receive()


async def test_real_client_sees_refusal_and_subprotocol() -> None:
    async def admit(request: UpgradeRequest) -> None:
        if request.query_param("token") != "good":
            raise Refuse(401, "bad token")

    async def handler(ws: WebSocketConnection) -> None:
        await ws.send_message(ws.subprotocol or "")
        await ws.receive()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve_websockets, handler, admit=admit, subprotocols=["msgpack", "json"])
            )
            port = listener_port(listeners)
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket(
                    "127.0.0.1", port, "/?token=bad", use_ssl=False
                ):
                    pass  # pragma: no cover
            assert info.value.status_code == 401
            assert info.value.body == b"bad token\n"
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/?token=good", use_ssl=False, subprotocols=["json"]
            ) as client:
                assert client.subprotocol == "json"
                assert await client.get_message() == "json"
            nursery.cancel_scope.cancel()
