"""Helpers for fuzzing a live node: raw HTTP, fuzz frames drawn by hypothesis ahead of the
async test, and sockets that send them and collect what the node answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sinal.node.wiring import Node
from sinal.protocol import ERRORS, Connect, Encoding, Error, ErrorCode, decode_server
from tests.fuzz.frames import Frame, adversarial_frames, any_frames
from tests.realtime.realtime_support import Client, client

GUARD = 10.0  # seconds: a hang guard for real-socket waits
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")

# Close codes a client can cause: every error's code but the server's own troubles.
CLIENT_CLOSE_CODES = frozenset(
    spec.close_code for code, spec in ERRORS.items()
    if code not in (ErrorCode.INTERNAL_ERROR, ErrorCode.SERVER_SHUTDOWN, ErrorCode.POOL_FULL))


async def http_status(node: Node, request: bytes, *, then_close: bool = False) -> int | None:
    """Send ``request`` as is to the node's HTTP port (``then_close``: and end the sending
    side); the answer's status, or None when the node closed without one."""
    url = urlsplit(node.http_url)
    assert url.hostname is not None and url.port is not None
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        async with stream:
            await stream.send_all(request)
            if then_close:
                await stream.send_eof()
            answer = b""
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                answer += chunk
    found = _STATUS.match(answer)
    return int(found.group(1)) if found else None


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             "Content-Type: application/json", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def live_status(node: Node) -> int | None:
    return await http_status(node, get("/health/live"))


def drawn_frames(encoding: Encoding, count: int, batch: int) -> list[Frame]:
    """``count`` frames drawn by hypothesis (valid, mutated, adversarial up to the frame
    limit), the same ones on every run for a given batch; only what a WebSocket client
    can send (text that is valid Unicode, or bytes)."""
    drawn: list[Frame] = []
    frames = st.one_of(any_frames(encoding), adversarial_frames(encoding))

    @seed(1000 * batch + (encoding is Encoding.JSON))
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(frame=frames)
    def collect(frame: Frame) -> None:
        if isinstance(frame, str):
            try:
                frame.encode("utf-8")
            except UnicodeEncodeError:
                return  # not sendable as a text message
        drawn.append(frame)

    collect()
    return drawn


@dataclass
class Outcome:
    """What the node answered on one socket: its error codes and its close code."""

    errors: list[str] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)

    def check(self) -> None:
        for code in self.errors:
            assert ErrorCode(code) is not ErrorCode.INTERNAL_ERROR
        for close in self.close_codes:
            assert close in CLIENT_CLOSE_CODES, close


async def _drain(c: Client, outcome: Outcome) -> None:
    """Read until the node closes; note error codes and the close code."""
    try:
        while True:
            raw = await c.ws.get_message()
            message = decode_server(raw, c.encoding)
            if isinstance(message, Error):
                outcome.errors.append(message.code)
    except trio_websocket.ConnectionClosed as closed:
        assert closed.reason is not None
        outcome.close_codes.append(closed.reason.code)


async def send_one_each(node: Node, encoding: Encoding, frames: list[Frame],
                        outcome: Outcome) -> None:
    """Before login: each frame as the first message of its own connection (any error
    closes a connection that has not been welcomed)."""
    for frame in frames:
        async with client(node, encoding) as c:
            try:
                await c.send_raw(frame)
            except trio_websocket.ConnectionClosed:
                pass
            with trio.fail_after(GUARD):
                await _drain(c, outcome)


async def send_after_login(node: Node, encoding: Encoding, token: str, frames: list[Frame],
                           outcome: Outcome) -> None:
    """After login: the frames one after the other; when one closes the connection, a new
    connection logs in again and goes on with the next."""
    pending = list(frames)
    while pending:
        async with client(node, encoding) as c:
            await c.send(Connect(token=token, ref="login"))
            with trio.fail_after(GUARD * 3):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, c, outcome)
                    try:
                        while pending:
                            await c.send_raw(pending.pop(0))
                            await trio.lowlevel.checkpoint()
                        await c.send_raw(_closing_frame(encoding))  # ends the connection
                    except trio_websocket.ConnectionClosed:
                        pass


def _closing_frame(encoding: Encoding) -> Frame:
    """A frame that closes the connection with bad_frame, so that draining ends."""
    return "not json" if encoding is Encoding.JSON else b"\xc1"
