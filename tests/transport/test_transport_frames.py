"""Frames built once by actors.wsframe, read by wsproto and by a real trio-websocket client."""

from __future__ import annotations

import struct

import pytest
import trio
import trio_websocket
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from sinal.websocket import WebSocketConnection, listener_port, serve_websockets
from sinal.websocket.frames import (
    SLOW_CONSUMER,
    build_close_frame,
    build_frame,
    build_ping_frame,
    build_pong_frame,
    frame_header_size,
)

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20]


def parse_as_client(data: bytes) -> list[object]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


@pytest.mark.parametrize("size", SIZES)
def test_binary_frame_header_and_payload(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = build_frame(payload)
    assert frame[0] == 0x82  # FIN + binary
    assert len(frame) == frame_header_size(size) + size
    if size < 126:
        assert frame[1] == size
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size
    (event,) = parse_as_client(frame)
    assert isinstance(event, BytesMessage)
    assert event.data == payload and event.message_finished


@pytest.mark.parametrize("size", [0, 125, 126, 70000])
def test_text_frame(size: int) -> None:
    text = ("ação" * size)[:size]
    frame = build_frame(text.encode(), text=True)
    assert frame[0] == 0x81
    (event,) = parse_as_client(frame)
    assert isinstance(event, TextMessage)
    assert event.data == text


def test_many_frames_in_one_buffer_parse_in_order() -> None:
    frames = b"".join(build_frame(i.to_bytes(4, "big") * 60) for i in range(100))
    events = parse_as_client(frames)
    assert [bytes(e.data)[:4] for e in events] == [  # type: ignore[attr-defined]
        i.to_bytes(4, "big") for i in range(100)
    ]


def test_control_frames() -> None:
    events = parse_as_client(
        build_ping_frame(b"p1") + build_pong_frame(b"p2") + build_close_frame(SLOW_CONSUMER, "slow")
    )
    assert events == [Ping(payload=b"p1"), Pong(payload=b"p2"), CloseConnection(4301, "slow")]


def test_close_frame_without_code_and_truncated_reason() -> None:
    (event,) = parse_as_client(build_close_frame(None))
    assert isinstance(event, CloseConnection) and event.code == 1005
    long_reason = "é" * 100  # 200 bytes: cut to at most 123 without splitting a character
    frame = build_close_frame(1000, long_reason)
    assert len(frame) <= 2 + 125
    (event,) = parse_as_client(frame)
    assert isinstance(event, CloseConnection)
    assert event.reason == "é" * 61


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 5000])
def test_close_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(ValueError):
        build_close_frame(code)


def test_control_payload_limit_and_reason_without_code() -> None:
    with pytest.raises(ValueError):
        build_ping_frame(b"x" * 126)
    with pytest.raises(ValueError):
        build_close_frame(None, "why")


async def test_real_client_reads_frames_of_every_size() -> None:
    """One frame built once, offered over a real loopback socket, read by trio-websocket."""
    connections: list[WebSocketConnection] = []
    arrived = trio.Event()

    async def handler(ws: WebSocketConnection) -> None:
        connections.append(ws)
        arrived.set()
        await ws.receive()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = listener_port(await nursery.start(serve_websockets, handler))
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, max_message_size=2 << 20
            ) as client:
                await arrived.wait()
                ws = connections[0]
                for size in SIZES:
                    payload = bytes(i % 253 for i in range(size))
                    assert ws.offer(build_frame(payload))
                    assert await client.get_message() == payload
                    text = ("x" * (size - 1) + "ã")[:size] if size else ""
                    assert ws.offer(build_frame(text.encode(), text=True))
                    assert await client.get_message() == text
            nursery.cancel_scope.cancel()
