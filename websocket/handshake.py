"""The opening handshake of a server-side WebSocket, on a Trio stream.

:func:`accept_websocket` reads the HTTP Upgrade request and checks it in one pass
(:mod:`sinal.websocket.upgrade`). A subprotocol chooser (by default
:func:`default_subprotocol_chooser`) and an ``admit`` hook run before the
``101``; either may raise :class:`Refuse` to answer with an HTTP status instead.
What the client asked for is an :class:`UpgradeRequest`; a handshake that does
not complete closes the stream and raises :class:`HandshakeError`. A handshake
that succeeds returns a :class:`~sinal.websocket.connection.WebSocketConnection`
whose writer is not yet running (wsproto takes over the open connection).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

import trio
from wsproto.connection import Connection, ConnectionType

from sinal.websocket.connection import ConnectionLimits, WebSocketConnection
from sinal.websocket.errors import HandshakeError, Refuse
from sinal.websocket.rawstream import RawSocketStream
from sinal.websocket.upgrade import accept_response, find_head_end, parse_upgrade

__all__ = [
    "Admit",
    "HandshakeError",
    "Refuse",
    "SubprotocolChooser",
    "UpgradeRequest",
    "accept_websocket",
    "default_subprotocol_chooser",
]


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """What the client asked for in its HTTP Upgrade request.

    ``headers`` keeps every header in order, names lowercased, values decoded
    as latin-1 (HTTP's byte-preserving choice). ``query`` is the parsed query
    string (``?token=...``); ``subprotocols`` what the client offered, in its
    order of preference.
    """

    target: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    host: str
    remote: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        return next((value for key, value in self.query if key == name), None)


SubprotocolChooser = Callable[[UpgradeRequest], str | None]
Admit = Callable[[UpgradeRequest], Awaitable[None]]


def _http_response(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = (reason or phrase).encode("utf-8") + b"\n"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _remote_of(stream: trio.abc.Stream) -> str | None:
    if isinstance(stream, RawSocketStream) and stream.peer is not None:
        peer = stream.peer  # from accept(): no system call
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return str(peer)
    if isinstance(stream, RawSocketStream | trio.SocketStream):
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return None
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return str(peer)
    return None


async def _read_request_head(stream: trio.abc.Stream, max_bytes: int) -> tuple[bytes, bytes]:
    """Read until the request head is complete: (head, what followed it). Refuses (431) a
    head longer than ``max_bytes``; raises HandshakeError if the peer goes away first."""
    buffer = bytearray()
    while True:
        searched = len(buffer)
        data = await stream.receive_some(max_bytes + 1)
        if not data:
            raise HandshakeError(None, "peer closed before sending a request")
        buffer += data
        end = find_head_end(buffer, searched)
        if end >= 0:
            if end > max_bytes:
                raise Refuse(431, "request header too large")
            return bytes(buffer[:end]), bytes(buffer[end:])
        if len(buffer) > max_bytes:
            raise Refuse(431, "request header too large")


def default_subprotocol_chooser(supported: Sequence[str]) -> SubprotocolChooser:
    """Pick the client's most preferred subprotocol among ``supported``.

    No offer: no subprotocol. Offers but none supported: ``Refuse(400)``.
    """
    supported_set = frozenset(supported)

    def choose(request: UpgradeRequest) -> str | None:
        if not request.subprotocols:
            return None
        for offered in request.subprotocols:
            if offered in supported_set:
                return offered
        raise Refuse(400, "unsupported subprotocol; supported: " + ", ".join(supported))

    return choose


async def _handshake(
    stream: trio.abc.Stream,
    choose: SubprotocolChooser,
    admit: Admit | None,
    max_handshake_bytes: int,
    limits: ConnectionLimits,
) -> WebSocketConnection:
    head, trailing = await _read_request_head(stream, max_handshake_bytes)
    upgrade = parse_upgrade(head)
    parts = urlsplit(upgrade.target)
    request = UpgradeRequest(
        target=upgrade.target,
        path=unquote(parts.path),
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        headers=upgrade.headers,
        subprotocols=upgrade.subprotocols,
        host=upgrade.host,
        remote=_remote_of(stream),
    )
    subprotocol = choose(request)
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"chosen subprotocol {subprotocol!r} was not offered")
    if admit is not None:
        await admit(request)
    await stream.send_all(accept_response(upgrade.key, subprotocol))
    return WebSocketConnection(
        stream, request, subprotocol=subprotocol, limits=limits,
        protocol=Connection(ConnectionType.SERVER), received=trailing,
    )


async def accept_websocket(
    stream: trio.abc.Stream,
    *,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SubprotocolChooser | None = None,
    admit: Admit | None = None,
    max_handshake_bytes: int = 16 * 1024,
    handshake_timeout: float = 10.0,
    limits: ConnectionLimits | None = None,
) -> WebSocketConnection:
    """Run the server side of the opening handshake on ``stream``.

    Reads the HTTP Upgrade request (at most ``max_handshake_bytes`` of head,
    else 431), validates it (400/405/426 otherwise), picks a subprotocol with
    ``select_subprotocol`` (default: the client's first offer that is in
    ``subprotocols``), awaits ``admit(request)`` and answers ``101``. A
    :class:`Refuse` from the chooser or ``admit`` answers its status instead.

    Returns a :class:`WebSocketConnection` whose writer is not yet running. On
    any failure the stream is closed: rejections and timeouts
    (``handshake_timeout`` seconds for the whole handshake) raise
    :class:`HandshakeError`; other
    exceptions from the hooks are answered with 500 and propagate.
    """
    choose = select_subprotocol or default_subprotocol_chooser(subprotocols)
    succeeded = False
    try:
        with trio.fail_after(handshake_timeout):
            ws = await _handshake_or_reject(
                stream, choose, admit, max_handshake_bytes, limits or ConnectionLimits()
            )
        succeeded = True
        return ws
    except trio.TooSlowError:
        raise HandshakeError(None, f"no handshake within {handshake_timeout} s") from None
    finally:
        if not succeeded:
            await trio.aclose_forcefully(stream)


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _handshake_or_reject(
    stream: trio.abc.Stream,
    choose: SubprotocolChooser,
    admit: Admit | None,
    max_handshake_bytes: int,
    limits: ConnectionLimits,
) -> WebSocketConnection:
    try:
        return await _handshake(stream, choose, admit, max_handshake_bytes, limits)
    except Refuse as refusal:
        await _send_quietly(stream, _http_response(refusal.status, refusal.reason, refusal.headers))
        raise HandshakeError(refusal.status, refusal.reason) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(None, f"connection lost during handshake: {exc}") from None
    except HandshakeError:
        raise
    except Exception:
        await _send_quietly(stream, _http_response(500, "internal error"))
        raise
