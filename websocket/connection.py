"""One accepted server-side WebSocket: its outbox and writer task, receive, close.

The fast path of a broadcast (docs/architecture.md, "Encode once, write many")
is the connection's outbox:

* a frame is built once with :func:`sinal.websocket.frames.build_frame`;
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

One connection is one :class:`WebSocketConnection` (made by
:func:`~sinal.websocket.handshake.accept_websocket`); its writer task must run in
a nursery (``await nursery.start(ws.run)``, or
:func:`~sinal.websocket.server.run_websocket`, which also runs the handler and
closes the connection).
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING, NoReturn, cast

import trio
from wsproto.connection import Connection as WsprotoConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from sinal.websocket.frames import (
    ABNORMAL_CLOSURE,
    MESSAGE_TOO_BIG,
    NO_STATUS_RECEIVED,
    NORMAL_CLOSURE,
    build_close_frame,
    build_frame,
    build_pong_frame,
)
from sinal.websocket.limits import ConnectionClosed, ConnectionLimits
from sinal.websocket.rawstream import RawSocketStream

if TYPE_CHECKING:
    from sinal.websocket.handshake import UpgradeRequest

__all__ = [
    "ConnectionClosed",
    "ConnectionLimits",
    "WebSocketConnection",
]

#: Buffers joined into one ``sendmsg`` call by the writer (well under IOV_MAX).
_MAX_IOV = 64

#: The outbox of a connection that never queued anything: one shared, always empty deque
#: (a deque costs about 760 bytes; most connections never need one). Never mutated.
_NO_QUEUE: deque[bytes | memoryview] = deque()


_OPEN = "open"
_CLOSING = "closing"
_CLOSED = "closed"


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a ``RawSocketStream`` or a ``trio.SocketStream`` (already
    non-blocking).

    Trio keeps it as ``SocketStream.socket._sock`` (trio/_socket.py); any other
    stream, or a trio without that attribute, gets ``None`` and the connection
    then writes everything through its writer task.
    """
    if isinstance(stream, RawSocketStream):
        return stream.socket
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
        "_spawn",
        "_state",
        "_stream",
        "_writer_running",
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
        self._queue = _NO_QUEUE
        self._queued = 0
        self._head_partial = False  # queue[0] is the unsent tail of a frame
        self._inflight = 0  # frames at the head being written by the writer
        self._deferred_frames = 0
        self._slow = False
        self._refuse_offers = False  # slow or not open: offer() says no at once
        self._lost = False
        self._writer_wakeup: trio.Event | None = None
        self._spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        self._writer_running = False
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
        if self._queue is _NO_QUEUE:
            self._queue = deque()
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._deferred_frames += 1
        self._wake_writer()

    def _wake_writer(self) -> None:
        wakeup = self._writer_wakeup
        if wakeup is not None:
            self._writer_wakeup = None
            wakeup.set()
        elif self._spawn is not None and not self._writer_running \
                and self._state is not _CLOSED:
            self._writer_running = True
            self._spawn(self._write_pending)

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

    def write_on_demand(self, nursery: trio.Nursery) -> None:
        """Instead of :meth:`run`: a writer task is started in ``nursery`` only when
        there is something to flush (the kernel refused bytes, or the socket failed),
        and it ends once the outbox is empty. An idle connection then has no writer
        task at all; the nursery must stay open while the connection is used."""
        self._spawn = nursery.start_soon
        if self._queue or self._lost:
            self._wake_writer()

    async def _write_pending(self) -> None:
        try:
            while self._state is not _CLOSED and (self._queue or self._lost):
                if self._lost:
                    await self.abort()
                else:
                    await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.abort()
        finally:
            self._writer_running = False

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
