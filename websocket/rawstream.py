"""A Trio stream straight over an accepted, non-blocking stdlib socket.

Tens of thousands of idle WebSockets each wait in a receive. Through ``trio.SocketStream``
that wait is six coroutine frames deep and every socket carries trio's socket wrapper and
two conflict detectors (about 3 KB per connection); here it is one frame over
``trio.lowlevel.wait_readable`` and the stream is one slotted object holding the socket.

The checkpoints are trio's: an operation that completes at once still checks for
cancellation before and yields after (a peer that floods cannot starve the scheduler);
one that has to wait yields in the wait. An error of the socket is
``trio.BrokenResourceError``; using the stream after :meth:`aclose` is
``trio.ClosedResourceError``, and closing it wakes a task that waits on it with that error.
"""

from __future__ import annotations

import errno
import socket

import trio

__all__ = ["RawSocketStream"]

_DEFAULT_RECEIVE = 65536


class RawSocketStream(trio.abc.HalfCloseableStream):
    """``trio.abc.HalfCloseableStream`` over a connected TCP socket (made non-blocking and
    TCP_NODELAY here). ``socket`` is the stdlib socket itself. Two tasks sending (or two
    receiving) at once is ``trio.BusyResourceError``, as for trio's own streams."""

    __slots__ = ("_eof_sent", "_receiving", "_sending", "peer", "socket")

    def __init__(self, sock: socket.socket, peer: object = None) -> None:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a socketpair in tests): nothing to turn off
            pass
        self.socket = sock
        self.peer = peer  # the address accept() returned (None: ask the socket when needed)
        self._sending = False
        self._receiving = False
        self._eof_sent = False

    def _check_open(self) -> socket.socket:
        sock = self.socket
        if sock.fileno() == -1:
            raise trio.ClosedResourceError("the stream is closed")
        return sock

    def _failed(self, exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self.socket.fileno() == -1 or exc.errno == errno.EBADF:
            return trio.ClosedResourceError("the stream is closed")
        return trio.BrokenResourceError(exc)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        sock = self._check_open()
        size = _DEFAULT_RECEIVE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    data = sock.recv(size)
                except BlockingIOError:
                    waited = True
                    await trio.lowlevel.wait_readable(sock)
                    sock = self._check_open()
                    continue
                except OSError as exc:
                    raise self._failed(exc) from exc
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        sock = self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError("the sending side was closed (send_eof)")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            with memoryview(data) as view:
                sent, total = 0, len(view)
                while sent < total:
                    try:
                        sent += sock.send(view[sent:])
                    except BlockingIOError:
                        waited = True
                        await trio.lowlevel.wait_writable(sock)
                        sock = self._check_open()
                    except OSError as exc:
                        raise self._failed(exc) from exc
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        sock = self._check_open()
        self._sending = True
        try:
            await trio.lowlevel.wait_writable(sock)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        sock = self._check_open()
        await trio.lowlevel.checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._failed(exc) from exc

    async def aclose(self) -> None:
        sock = self.socket
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)  # a task waiting on it gets ClosedResourceError
            sock.close()
        await trio.lowlevel.checkpoint()
