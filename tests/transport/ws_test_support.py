"""Helpers for the transport tests: a sans-IO client peer and a raw socket client."""

from __future__ import annotations

import base64
import os
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage

from sinal.websocket import ConnectionLimits, WebSocketConnection


def upgrade_request(
    target: str = "/ws",
    *,
    extra: str = "",
    method: str = "GET",
    version: str = "13",
    key: str | None = None,
    http: str = "HTTP/1.1",
) -> bytes:
    """A client's HTTP Upgrade request, tweakable to make it wrong."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"{method} {target} {http}",
        "Host: example.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Version: {version}",
    ]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    head = "\r\n".join(lines) + "\r\n" + extra
    return (head + "\r\n").encode("latin-1")


class ClientPeer:
    """The client end of a memory stream, speaking WebSocket frames via wsproto."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.proto = Connection(ConnectionType.CLIENT)
        self.pending: list[Event] = []
        self.eof = False

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.proto.send(event))

    async def next_event(self) -> Event | None:
        """The next event from the server, or ``None`` at end of stream."""
        while not self.pending:
            self.pending.extend(self.proto.events())
            if self.pending:
                break
            if self.eof:
                return None
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
            else:
                self.proto.receive_data(bytes(data))
        return self.pending.pop(0)

    async def next_message(self) -> bytes | str:
        parts: list[bytes | str] = []
        while True:
            event = await self.next_event()
            assert isinstance(event, (BytesMessage, TextMessage)), event
            parts.append(bytes(event.data) if isinstance(event, BytesMessage) else event.data)
            if event.message_finished:
                if isinstance(parts[0], str):
                    return "".join(str(p) for p in parts)
                return b"".join(bytes(p) for p in parts)  # type: ignore[arg-type]

    async def next_close(self) -> CloseConnection:
        while True:
            event = await self.next_event()
            assert event is not None, "stream ended before a close frame"
            if isinstance(event, CloseConnection):
                return event

    async def read_until_eof(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(bytes(data))


@asynccontextmanager
async def running_connection(
    limits: ConnectionLimits | None = None,
    *,
    lockstep: bool = False,
) -> AsyncIterator[tuple[WebSocketConnection, ClientPeer]]:
    """A server connection on a memory stream, its writer running, and its client peer."""
    server_stream: trio.abc.Stream
    client_stream: trio.abc.Stream
    if lockstep:
        server_stream, client_stream = trio.testing.lockstep_stream_pair()
    else:
        server_stream, client_stream = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server_stream, limits=limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        yield ws, ClientPeer(client_stream)
        await ws.abort()  # the writer ends with the connection


async def raw_client(
    port: int, *, rcvbuf: int | None = None, target: str = "/ws"
) -> trio.SocketStream:
    """A TCP client that has done the handshake and reads only when told to."""
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(upgrade_request(target))
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(1)
        assert data, "server closed during handshake"
        head += data
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream
