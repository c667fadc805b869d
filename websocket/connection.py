"""Server side of WebSocket on Trio streams: handshake, connection, listener.

The fast path of a broadcast (DESIGN.md decision 4) is the connection's outbox:

* a frame is built once with :func:`actors.wsframe.build_frame`;
* :meth:`WebSocketConnection.offer` hands the same bytes to every connection.
  It never blocks and never awaits: when nothing is queued for the socket it
  writes the bytes straight to the kernel with one non-blocking ``send``;
  only what the kernel refuses (a partial write or ``EAGAIN``) is queued for the
  connection's writer task (:meth:`WebSocketConnection.run`), which waits for
  writability and flushes the queue in order, many frames per ``sendmsg``;
* the queue is bounded in bytes (:attr:`ConnectionLimits.outbox_limit`). Past
  the bound ``offer`` returns ``False`` and the connection becomes *slow*: every
  later ``offer`` is refused too (so a subscriber never sees a silent gap) until
  the owner applies its policy -- tell the client to resync with
  :meth:`~WebSocketConnection.send_message` then :meth:`~WebSocketConnection.clear_slow`,
  or ``close(SLOW_CONSUMER, ..., discard_pending=True)``.

Streams without a real socket (``trio.testing`` memory streams, TLS) take the
same outbox, with every frame going through the writer task.

Inbound, :meth:`WebSocketConnection.receive` returns whole messages; wsproto
unmasks, validates and reports fragments, and this module reassembles them under
a size bound, answers pings and runs the close handshake.

The handshake (:func:`accept_websocket`) parses the HTTP request with h11 and
lets wsproto validate and answer it. A subprotocol chooser and an ``admit`` hook
run before the ``101``; either may raise :class:`Refuse` to answer with an HTTP
status instead. :func:`serve_websockets` puts it together on ``trio.serve_listeners``.

One connection is one :class:`WebSocketConnection`; its writer task must run in
a nursery (``await nursery.start(ws.run)``, or :func:`run_websocket`, which also
runs the handler and closes the connection).
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from itertools import islice
from typing import NoReturn, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio
import wsproto
from wsproto.connection import Connection as WsprotoConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from sinal.websocket.frames import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NO_STATUS_RECEIVED,
    NORMAL_CLOSURE,
    build_close_frame,
    build_frame,
    build_pong_frame,
)

__all__ = [
    "Admit",
    "ConnectionClosed",
    "ConnectionHandler",
    "ConnectionLimits",
    "HandshakeError",
    "Refuse",
    "SubprotocolChooser",
    "UpgradeRequest",
    "WebSocketConnection",
    "accept_websocket",
    "default_subprotocol_chooser",
    "listener_port",
    "run_websocket",
    "serve_websockets",
]

log = logging.getLogger(__name__)

#: Buffers joined into one ``sendmsg`` call by the writer (well under IOV_MAX).
_MAX_IOV = 64


class ConnectionClosed(Exception):
    """The WebSocket is closed (or closing); ``code`` and ``reason`` say why.

    ``code`` is the close code of whichever side closed first; 1006 means the
    TCP connection was lost without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        suffix = f": {self.reason}" if self.reason else ""
        return f"WebSocket closed with code {self.code}{suffix}"


class Refuse(Exception):
    """Raised by a subprotocol chooser or an ``admit`` hook to refuse the upgrade.

    The client gets an HTTP response with ``status`` (503 when the connection
    pool is full, 401/403 for a bad token, ...) and ``reason`` as a short body.
    """

    def __init__(
        self, status: int, reason: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


class HandshakeError(Exception):
    """The opening handshake did not complete; the stream has been closed.

    ``status`` is the HTTP status sent to the client, or ``None`` when nothing
    was sent (timeout, peer gone).
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection bounds.

    ``max_message_size``: largest inbound message, in bytes (text: in code
    points); larger closes with 1009. It is also what a slow-loris peer can
    make us hold, plus one ``receive_chunk``.
    ``outbox_limit``: bytes queued for the writer before ``offer`` refuses and
    the connection turns slow. The outbox never holds more than this plus one
    frame. ``close_timeout``: how long closing waits for the outbox to flush
    and for the peer's close frame before dropping the TCP connection.
    """

    max_message_size: int = 1 << 20
    outbox_limit: int = 1 << 20
    receive_chunk: int = 64 * 1024
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_message_size", "outbox_limit", "receive_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConnectionLimits.{name} must be positive")
        if self.close_timeout < 0:
            raise ValueError("ConnectionLimits.close_timeout must not be negative")


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
ConnectionHandler = Callable[["WebSocketConnection"], Awaitable[None]]


# --------------------------------------------------------------------------- handshake


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
    if isinstance(stream, trio.SocketStream):
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return None
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return str(peer)
    return None


async def _read_request_head(
    stream: trio.abc.Stream, parser: h11.Connection, max_bytes: int
) -> h11.Request | None:
    """Read until h11 has the request head; ``None`` if the peer went away.

    h11 refuses (431) a buffer over ``max_bytes`` without a complete head; a
    complete head that arrived in one piece is measured here.
    """
    received = 0
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Request):
            if received - len(parser.trailing_data[0]) > max_bytes:
                raise Refuse(431, "request header too large")
            return event
        if event is h11.NEED_DATA:
            data = await stream.receive_some(max_bytes + 1)
            received += len(data)
            parser.receive_data(bytes(data))  # b"" marks the end of input
            continue
        return None  # ConnectionClosed (or anything else before a request)


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
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=max_handshake_bytes)
    try:
        head = await _read_request_head(stream, parser, max_handshake_bytes)
        if head is None:
            raise HandshakeError(None, "peer closed before sending a request")
        if head.method != b"GET":
            raise Refuse(405, "a WebSocket upgrade must be a GET", [("Allow", "GET")])
        if head.http_version != b"1.1":
            raise Refuse(400, "a WebSocket upgrade needs HTTP/1.1")
        for name, value in head.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                raise Refuse(400, "an upgrade request has no body")
        trailing = parser.trailing_data[0]
        handshake = wsproto.WSConnection(ConnectionType.SERVER)
        handshake.initiate_upgrade_connection(list(head.headers), head.target)
        offer = next(handshake.events())
        assert isinstance(offer, Request)
    except h11.RemoteProtocolError as exc:
        raise Refuse(exc.error_status_hint, f"bad request: {exc}") from None
    except (h11.LocalProtocolError, UnicodeError) as exc:
        raise Refuse(400, f"bad request: {exc}") from None
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = getattr(hint, "status_code", 400)
        hint_headers = getattr(hint, "headers", [])
        extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hint_headers]
        raise Refuse(status, f"bad upgrade request: {exc}", extra) from None

    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    request = UpgradeRequest(
        target=target,
        path=unquote(parts.path),
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
        subprotocols=tuple(offer.subprotocols),
        host=offer.host,
        remote=_remote_of(stream),
    )
    subprotocol = choose(request)
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"chosen subprotocol {subprotocol!r} was not offered")
    if admit is not None:
        await admit(request)
    await stream.send_all(handshake.send(AcceptConnection(subprotocol=subprotocol)))
    protocol = handshake.connection
    assert protocol is not None
    return WebSocketConnection(
        stream, request, subprotocol=subprotocol, limits=limits, protocol=protocol,
        received=trailing,
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


# --------------------------------------------------------------------------- connection

_OPEN = "open"
_CLOSING = "closing"
_CLOSED = "closed"


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a ``trio.SocketStream`` (already non-blocking).

    Trio keeps it as ``SocketStream.socket._sock`` (trio/_socket.py); any other
    stream, or a trio without that attribute, gets ``None`` and the connection
    then writes everything through its writer task.
    """
    if isinstance(stream, trio.SocketStream):
        raw = getattr(stream.socket, "_sock", None)
        if isinstance(raw, socket.socket) and raw.gettimeout() == 0.0:
            return raw
    return None


class WebSocketConnection:
    """One accepted server-side WebSocket.

    Outbound bytes share one ordered outbox: :meth:`offer` (pre-built frames,
    never blocks), :meth:`send_frame`/:meth:`send_message` (wait while the outbox
    is over its bound), pongs and the close frame. :meth:`run` is the writer
    task; it must run in a nursery for as long as the connection is used, and
    returns once the connection is closed. :meth:`receive` is called by one
    task at a time.
    """

    __slots__ = (
        "_changes",
        "_close_code",
        "_close_reason",
        "_deferred_frames",
        "_head_partial",
        "_inflight",
        "_limits",
        "_lost",
        "_outbox_limit",
        "_parts",
        "_parts_size",
        "_peer_closed",
        "_protocol",
        "_queue",
        "_queued",
        "_receiving",
        "_refuse_offers",
        "_slow",
        "_sock",
        "_state",
        "_stream",
        "_writer_wakeup",
        "request",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        request: UpgradeRequest | None = None,
        *,
        subprotocol: str | None = None,
        limits: ConnectionLimits | None = None,
        protocol: WsprotoConnection | None = None,
        received: bytes = b"",
    ) -> None:
        """Wrap a stream whose handshake is done (``accept_websocket`` does it).

        ``protocol`` is wsproto's connection after the handshake (a fresh
        server-side one by default); ``received`` is anything the client sent
        after its request head.
        """
        self.request = request
        self.subprotocol = subprotocol
        self._stream = stream
        self._sock = _raw_socket(stream)
        self._limits = limits or ConnectionLimits()
        self._outbox_limit = self._limits.outbox_limit
        self._protocol = protocol or WsprotoConnection(ConnectionType.SERVER)
        if received:
            self._protocol.receive_data(bytes(received))
        self._state = _OPEN
        self._queue: deque[bytes | memoryview] = deque()
        self._queued = 0
        self._head_partial = False  # queue[0] is the unsent tail of a frame
        self._inflight = 0  # frames at the head being written by the writer
        self._deferred_frames = 0
        self._slow = False
        self._refuse_offers = False  # slow or not open: offer() says no at once
        self._lost = False
        self._writer_wakeup: trio.Event | None = None
        self._changes = trio.lowlevel.ParkingLot()  # outbox progress, state changes
        self._receiving = False
        self._peer_closed = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._parts: list[bytes | bytearray | str] | None = None
        self._parts_size = 0

    # ------------------------------------------------------------------ status

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed."""
        return self._state is _CLOSED

    @property
    def close_code(self) -> int | None:
        """The close code of whoever closed first (1006: lost), or ``None``."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    @property
    def outbox_bytes(self) -> int:
        """Bytes queued for the writer (what the kernel has not taken yet)."""
        return self._queued

    @property
    def outbox_limit(self) -> int:
        return self._outbox_limit

    @property
    def deferred_frames(self) -> int:
        """How many outbound frames the kernel refused at first (went via the queue)."""
        return self._deferred_frames

    @property
    def is_slow(self) -> bool:
        """True after an ``offer`` overflowed the outbox, until :meth:`clear_slow`."""
        return self._slow

    async def wait_slow(self) -> None:
        """Return once the connection is slow (or closed)."""
        while not self._slow and self._state is not _CLOSED:
            await self._changes.park()

    def clear_slow(self) -> None:
        """Accept offers again (call it after telling the client to resync)."""
        self._slow = False
        self._refuse_offers = self._state is not _OPEN

    # ------------------------------------------------------------------ outbox

    def offer(self, frame: bytes) -> bool:
        """Queue a complete pre-built frame without ever blocking.

        Written straight to the socket when nothing is queued; otherwise
        appended for the writer. Returns ``False`` if the connection is closed,
        closing or slow, or if the frame would take the outbox past its bound
        (which makes the connection slow). ``frame`` must not be mutated later.
        """
        if self._refuse_offers:
            return False
        if self._queue and self._queued + len(frame) > self._outbox_limit:
            self._slow = True
            self._refuse_offers = True
            self._changes.unpark_all()
            return False
        return self._write_or_queue(frame)

    def _write_or_queue(self, frame: bytes) -> bool:
        sock = self._sock
        if self._queue or sock is None:
            self._append(frame)
            return True
        try:
            sent = sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._connection_lost()
            return False
        if sent < len(frame):
            self._head_partial = sent > 0
            self._append(memoryview(frame)[sent:] if sent else frame)
        return True

    def _append(self, chunk: bytes | memoryview) -> None:
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._deferred_frames += 1
        self._wake_writer()

    def _wake_writer(self) -> None:
        wakeup = self._writer_wakeup
        if wakeup is not None:
            self._writer_wakeup = None
            wakeup.set()

    def _connection_lost(self) -> None:
        """The socket failed under a synchronous write: refuse offers, let the writer abort."""
        self._lost = True
        self._refuse_offers = True
        self._wake_writer()

    def _consume(self, sent: int) -> None:
        """Drop ``sent`` bytes from the head of the queue."""
        queue = self._queue
        self._queued -= sent
        while sent:
            head = queue[0]
            if sent >= len(head):
                queue.popleft()
                sent -= len(head)
            else:
                queue[0] = memoryview(head)[sent:]
                self._head_partial = True
                return
        self._head_partial = False

    def _discard_pending(self) -> None:
        """Drop queued whole frames; keep a partly written one and any in flight."""
        keep = max(self._inflight, 1 if self._head_partial else 0)
        while len(self._queue) > keep:
            self._queued -= len(self._queue.pop())

    async def send_frame(self, frame: bytes) -> None:
        """Queue a pre-built frame in order, waiting while the outbox is over its bound.

        Ignores the slow flag (this is how a resync notice gets through).
        Raises :class:`ConnectionClosed` once the connection is closing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while self._state is _OPEN and self._queue and (
            self._queued + len(frame) > self._outbox_limit
        ):
            await self._changes.park()
            parked = True
        if self._state is not _OPEN or self._lost or not self._write_or_queue(frame):
            raise self._closed_error()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_message(self, message: bytes | str) -> None:
        """Send one whole message (binary for ``bytes``, text for ``str``)."""
        if isinstance(message, str):
            await self.send_frame(build_frame(message.encode("utf-8"), text=True))
        else:
            await self.send_frame(build_frame(message))

    def _send_control(self, frame: bytes) -> None:
        """Queue a pong; dropped when the outbox is full (only the latest ping matters)."""
        if self._state is _OPEN and self._queued + len(frame) <= self._outbox_limit:
            self._write_or_queue(frame)

    # ------------------------------------------------------------------ writer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: flush what the kernel refused, in order, until closed."""
        task_status.started()
        try:
            while self._state is not _CLOSED:
                if self._lost:
                    await self.abort()
                elif self._queue:
                    await self._flush()
                else:
                    self._writer_wakeup = wakeup = trio.Event()
                    await wakeup.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.abort()

    async def _flush(self) -> None:
        queue = self._queue
        sock = self._sock
        if sock is None:
            batch = list(islice(queue, _MAX_IOV))
            self._inflight = len(batch)
            try:
                await self._stream.send_all(b"".join(batch))
            finally:
                self._inflight = 0
            if self._state is not _CLOSED:
                self._consume(sum(map(len, batch)))
                self._changes.unpark_all()
            return
        while queue and not self._lost and self._state is not _CLOSED:
            try:
                if len(queue) == 1:
                    sent = sock.send(queue[0])
                else:
                    sent = sock.sendmsg(list(islice(queue, _MAX_IOV)))
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            self._consume(sent)
            self._changes.unpark_all()

    # ------------------------------------------------------------------ receive

    async def receive(self) -> bytes | str:
        """The next whole message: ``bytes`` (binary) or ``str`` (text).

        Answers pings, and completes the close handshake when the peer closes.
        Raises :class:`ConnectionClosed` when the connection is or becomes
        closed, including after a protocol error (1002/1007) or an oversize
        message (1009), which close the connection first.
        """
        if self._state is not _OPEN:
            await self._wait_closed()
            raise self._closed_error()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this WebSocket")
        self._receiving = True
        try:
            while True:
                for event in self._protocol.events():
                    if isinstance(event, (BytesMessage, TextMessage)):
                        message = self._add_fragment(event)
                        if message is not None:
                            return message
                        if self._parts_size > self._limits.max_message_size:
                            await self._fail(MESSAGE_TOO_BIG, "message too big")
                    elif isinstance(event, Ping):
                        self._send_control(build_pong_frame(event.payload))
                    elif isinstance(event, CloseConnection):
                        if self._protocol.state is ConnectionState.OPEN:
                            # wsproto reports bad input as a close it did not receive.
                            await self._fail(int(event.code), event.reason or "protocol error")
                        await self._peer_close(int(event.code), event.reason or "")
                try:
                    data = await self._stream.receive_some(self._limits.receive_chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    await self.abort()
                    raise self._closed_error()
                self._protocol.receive_data(bytes(data))
        finally:
            self._receiving = False
            if self._state is not _OPEN:
                self._changes.unpark_all()  # a closing task may read now

    def _add_fragment(self, event: BytesMessage | TextMessage) -> bytes | str | None:
        """Collect one piece of a message; the whole message once it is complete."""
        data = event.data
        parts = self._parts
        if parts is None:
            if event.message_finished and len(data) <= self._limits.max_message_size:
                return data if isinstance(data, str) else bytes(data)
            self._parts = parts = [data]
            self._parts_size = len(data)
        else:
            parts.append(data)
            self._parts_size += len(data)
        if not event.message_finished or self._parts_size > self._limits.max_message_size:
            return None
        self._parts = None
        self._parts_size = 0
        if isinstance(data, str):
            return "".join(cast("list[str]", parts))
        return b"".join(cast("list[bytes]", parts))

    async def _peer_close(self, code: int, reason: str) -> NoReturn:
        """The peer sent a close frame: answer it (unless it answers ours) and hang up."""
        self._peer_closed = True
        if self._state is _OPEN:
            self._begin_close(code, reason)
            self._write_or_queue(
                build_close_frame(None if code == NO_STATUS_RECEIVED else code)
            )
            await self._flush_with_timeout()
        await self.abort()
        raise self._closed_error()

    async def _fail(self, code: int, reason: str) -> NoReturn:
        """Fail the connection on bad input: send a close frame, flush briefly, hang up."""
        if self._state is _OPEN:
            self._begin_close(code, reason)
            self._write_or_queue(build_close_frame(code, reason))
            await self._flush_with_timeout()
        await self.abort()
        raise self._closed_error()

    # ------------------------------------------------------------------ close

    def _begin_close(self, code: int, reason: str) -> None:
        self._close_code = code
        self._close_reason = reason
        self._state = _CLOSING
        self._refuse_offers = True
        self._changes.unpark_all()

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self._close_code or ABNORMAL_CLOSURE, self._close_reason)

    async def _wait_closed(self) -> None:
        while self._state is not _CLOSED:
            await self._changes.park()

    async def _flush_with_timeout(self) -> None:
        with trio.move_on_after(self._limits.close_timeout):
            while self._queue and self._state is not _CLOSED:
                await self._changes.park()

    async def close(
        self, code: int = NORMAL_CLOSURE, reason: str = "", *, discard_pending: bool = False
    ) -> None:
        """Close the WebSocket: close frame, wait for the peer's, then close TCP.

        Everything queued before is sent first, unless ``discard_pending``
        (for a slow consumer: drop queued frames, keep a partly sent one).
        Waiting is bounded by ``close_timeout``; the TCP connection is closed
        in any case, cancellation included. Idempotent.
        """
        if self._state is _OPEN:
            frame = build_close_frame(code, reason)  # ValueError for a bad code, before any change
            self._begin_close(code, reason)
            if discard_pending:
                self._discard_pending()
            self._write_or_queue(frame)
        try:
            if self._state is not _CLOSED:
                with trio.move_on_after(self._limits.close_timeout):
                    while self._queue and self._state is not _CLOSED:
                        await self._changes.park()
                    while not self._peer_closed and self._state is not _CLOSED:
                        if self._receiving:  # that task will see the peer's close frame
                            await self._changes.park()
                        else:
                            await self._read_until_peer_close()
                            break
        finally:
            await self.abort()

    async def aclose(self) -> None:
        """Close with 1000 (normal closure)."""
        await self.close()

    async def _read_until_peer_close(self) -> None:
        self._receiving = True
        try:
            while not self._peer_closed:
                for event in self._protocol.events():
                    if isinstance(event, CloseConnection):
                        self._peer_closed = True
                        return
                try:
                    data = await self._stream.receive_some(self._limits.receive_chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                self._protocol.receive_data(bytes(data))
        finally:
            self._receiving = False
            self._changes.unpark_all()

    async def abort(self) -> None:
        """Close the TCP connection now, without a close handshake.

        Idempotent, and it closes even when cancelled. Pending output is dropped.
        """
        if self._state is _CLOSED:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if self._close_code is None:
            self._close_code = ABNORMAL_CLOSURE
            self._close_reason = "connection lost"
        self._state = _CLOSED
        self._refuse_offers = True
        self._sock = None
        self._queue.clear()
        self._queued = 0
        self._parts = None
        self._wake_writer()
        self._changes.unpark_all()
        await trio.aclose_forcefully(self._stream)


# --------------------------------------------------------------------------- server


async def run_websocket(ws: WebSocketConnection, handler: ConnectionHandler) -> None:
    """Run ``handler(ws)`` with the connection's writer beside it, then close.

    The handler returning closes with 1000; :class:`ConnectionClosed` escaping
    it is normal; any other exception is logged and closes with 1011, and is
    not re-raised (one connection's failure is not the server's). Cancellation
    closes with 1001 and propagates.
    """
    code, reason = NORMAL_CLOSURE, ""
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        try:
            await handler(ws)
        except ConnectionClosed:
            pass
        except trio.Cancelled:
            code, reason = GOING_AWAY, "server shutting down"
            raise
        except Exception as exc:
            if isinstance(exc, ExceptionGroup) and exc.split(ConnectionClosed)[1] is None:
                pass  # only ConnectionClosed, from the handler's own tasks
            else:
                log.exception("WebSocket handler failed (%s)", ws.request and ws.request.remote)
                code, reason = INTERNAL_ERROR, "internal error"
        finally:
            with trio.CancelScope(shield=True):  # bounded by close_timeout
                await ws.close(code, reason)


async def serve_websockets(
    handler: ConnectionHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SubprotocolChooser | None = None,
    admit: Admit | None = None,
    handshake_timeout: float = 10.0,
    max_handshake_bytes: int = 16 * 1024,
    limits: ConnectionLimits | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on ``host:port`` (0: any free port) and serve WebSockets forever.

    Each accepted TCP connection does the handshake (:func:`accept_websocket`
    with these options) and then :func:`run_websocket` with ``handler``.
    ``admit`` may raise :class:`Refuse` (e.g. 503 when the pool is full) before
    the 101. Start with ``listeners = await nursery.start(serve_websockets, ...)``;
    :func:`listener_port` gives the bound port. Connection tasks live in
    ``handler_nursery`` if given, else in a nursery of their own.
    """
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            ws = await accept_websocket(
                stream,
                subprotocols=subprotocols,
                select_subprotocol=select_subprotocol,
                admit=admit,
                max_handshake_bytes=max_handshake_bytes,
                handshake_timeout=handshake_timeout,
                limits=limits,
            )
        except HandshakeError as exc:
            log.debug("WebSocket handshake failed: %s", exc.reason)
            return
        except Exception:
            log.exception("WebSocket handshake hook failed")
            return
        await run_websocket(ws, handler)

    await trio.serve_listeners(
        serve_one, listeners, handler_nursery=handler_nursery, task_status=task_status
    )


def listener_port(listeners: Sequence[trio.SocketListener]) -> int:
    """The TCP port the first listener is bound to (for ``port=0``)."""
    port = listeners[0].socket.getsockname()[1]
    assert isinstance(port, int)
    return port
