"""The accept loop: serve WebSockets on TCP listeners, one task per connection.

:func:`serve_websockets` puts it together: an accept loop per listener that takes
every connection the kernel has queued at each wake-up (up to :data:`ACCEPT_BATCH`), not
one per wake-up, so a connect storm costs few scheduler rounds; each accepted TCP
connection does the opening handshake
(:func:`~sinal.websocket.handshake.accept_websocket`) and then
:func:`run_websocket`, which runs a :data:`ConnectionHandler` beside the
connection's writer task and closes the connection when the handler is done.
:func:`listener_port` gives the port a listener is bound to.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import trio

from sinal.websocket.connection import ConnectionClosed, ConnectionLimits, WebSocketConnection
from sinal.websocket.frames import GOING_AWAY, INTERNAL_ERROR, NORMAL_CLOSURE
from sinal.websocket.handshake import (
    Admit,
    HandshakeError,
    SubprotocolChooser,
    accept_websocket,
)
from sinal.websocket.rawstream import RawSocketStream

__all__ = [
    "ConnectionHandler",
    "listener_port",
    "open_reuse_port_listeners",
    "run_websocket",
    "serve_websockets",
]

log = logging.getLogger(__name__)

#: Connections accepted per wake-up of an accept loop, at most.
ACCEPT_BATCH = 256
#: accept() errors that mean "out of resources now": wait a little, then go on.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

ConnectionHandler = Callable[[WebSocketConnection], Awaitable[None]]


async def run_websocket(ws: WebSocketConnection, handler: ConnectionHandler) -> None:
    """Run ``handler(ws)`` with the connection's writer on demand, then close.

    The handler returning closes with 1000; :class:`ConnectionClosed` escaping
    it is normal; any other exception is logged and closes with 1011, and is
    not re-raised (one connection's failure is not the server's). Cancellation
    closes with 1001 and propagates.
    """
    code, reason = NORMAL_CLOSURE, ""
    async with trio.open_nursery() as nursery:
        ws.write_on_demand(nursery)  # a writer task only while something waits to be sent
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
    reuse_port: bool = False,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on ``host:port`` (0: any free port) and serve WebSockets forever.

    Each accepted TCP connection does the handshake (:func:`accept_websocket`
    with these options) and then :func:`run_websocket` with ``handler``.
    ``admit`` may raise :class:`Refuse` (e.g. 503 when the pool is full) before
    the 101. Start with ``listeners = await nursery.start(serve_websockets, ...)``;
    :func:`listener_port` gives the bound port. Connection tasks live in
    ``handler_nursery`` if given, else in a nursery of their own. With
    ``reuse_port`` the listening sockets set SO_REUSEPORT, so several processes
    can listen on the same port and the kernel spreads connections among them.
    """
    if reuse_port:
        listeners = await open_reuse_port_listeners(port, host=host, backlog=backlog)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)

    async def serve_one(stream: trio.abc.Stream) -> None:
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

    async with trio.open_nursery() as nursery:
        handlers = handler_nursery or nursery
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, serve_one, handlers)
        task_status.started(listeners)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _accept_loop(listener: trio.SocketListener,
                       serve_one: Callable[[trio.abc.Stream], Awaitable[None]],
                       nursery: trio.Nursery) -> NoReturn:
    """Wait until the listening socket is readable, then accept every queued connection
    (up to ACCEPT_BATCH) without a scheduler round between two; each gets its task, with
    the socket as a `RawSocketStream` (no trio socket wrapper: websocket/rawstream.py)."""
    raw = getattr(listener.socket, "_sock", None)
    if not isinstance(raw, stdlib_socket.socket):  # not trio's usual socket: one at a time
        while True:
            nursery.start_soon(serve_one, await listener.accept())
    while True:
        await trio.lowlevel.wait_readable(raw)
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = raw.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error("accept: %s; waiting 100 ms", exc)
                    await trio.sleep(0.1)
                    break
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up; the next one may not have
                raise
            nursery.start_soon(serve_one, RawSocketStream(sock, peer))


async def open_reuse_port_listeners(port: int, *, host: str = "127.0.0.1",
                                    backlog: int | None = None) -> list[trio.SocketListener]:
    """TCP listeners on ``host:port`` with SO_REUSEADDR and SO_REUSEPORT set before bind
    (``trio.open_tcp_listeners`` sets only the former): one per address ``host``
    resolves to."""
    if not hasattr(stdlib_socket, "SO_REUSEPORT"):  # pragma: no cover - not Linux/BSD
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_STREAM,
                                          flags=stdlib_socket.AI_PASSIVE)
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
                if family == stdlib_socket.AF_INET6:
                    sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog if backlog is not None else 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def listener_port(listeners: Sequence[trio.SocketListener]) -> int:
    """The TCP port the first listener is bound to (for ``port=0``)."""
    port = listeners[0].socket.getsockname()[1]
    assert isinstance(port, int)
    return port
