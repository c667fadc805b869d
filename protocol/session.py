"""The server side of one protocol session, as a sans-IO state machine.

All state transitions of a connection live here::

    AWAITING_CONNECT --accept(welcome)--> OPEN --fail(closing code)/close()--> CLOSING
           |                                                                      |
           +--------- any error, fail(), close() -----------> CLOSING --closed()--> CLOSED

The connection actor feeds every received WebSocket message to ``receive`` and acts on
the answer; it authenticates ``Connect`` and authorises ``Subscribe`` itself and reports
the verdict with ``accept`` or ``fail``. The session decides, from the error table,
whether an error keeps the connection or closes it; the actor does the I/O.

``receive`` answers with one of:

- a ``ClientMessage`` in an order the protocol allows: act on it;
- ``SendError``: send ``frame`` (an ``error`` message) and go on;
- ``CloseConnection``: send ``frame`` if you can (best effort), then close the WebSocket
  with ``close_code`` and ``reason``;
- ``None``: nothing to do (the session is closing; late frames are dropped).

After handing out a ``Connect`` the actor must answer it (``accept`` or ``fail``) before
it calls ``receive`` again; frames a client pipelines behind its ``connect`` then meet an
open session. Before ``welcome`` every error closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sinal.protocol.codec import DEFAULT_LIMITS, Encoding, Frame, ProtocolLimits, decode, encode
from sinal.protocol.errors import ERRORS, ErrorCode, ProtocolError, Ref
from sinal.protocol.messages import ClientMessage, Connect, Error, ServerMessage, Welcome

__all__ = [
    "CloseConnection",
    "Received",
    "SendError",
    "ServerSession",
    "SessionState",
    "SessionUsageError",
]


class SessionState(Enum):
    AWAITING_CONNECT = "awaiting_connect"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionUsageError(RuntimeError):
    """Local code used the session in a way its state forbids (a bug, not the peer's)."""


@dataclass(frozen=True, slots=True)
class SendError:
    """Send ``frame`` (the encoded ``error``) and keep the connection open."""

    error: Error
    frame: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Send ``frame`` (best effort), then close the WebSocket with ``close_code``."""

    error: Error
    frame: bytes
    close_code: int

    @property
    def reason(self) -> str:
        """The WebSocket close reason: the error's code string."""
        return self.error.code


Received = ClientMessage | SendError | CloseConnection | None


class ServerSession:
    """Order and error policy of one server-side connection (no I/O)."""

    def __init__(
        self, encoding: Encoding = Encoding.MSGPACK, limits: ProtocolLimits = DEFAULT_LIMITS
    ) -> None:
        self._encoding = encoding
        self._limits = limits
        self._state = SessionState.AWAITING_CONNECT
        self._connect_pending = False

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def encoding(self) -> Encoding:
        return self._encoding

    @property
    def connect_pending(self) -> bool:
        """A ``Connect`` was handed out and awaits ``accept`` or ``fail``."""
        return self._connect_pending

    def receive(self, frame: Frame) -> Received:
        """Decode one WebSocket message from the client and check its order.

        ``frame`` is the message as the WebSocket delivers it: bytes for a binary message,
        str for a text one. A binary message on a JSON session and a text message on a
        MessagePack session are ``bad_frame``.
        """
        if self._state in (SessionState.CLOSING, SessionState.CLOSED):
            return None
        if not self._encoding.binary and not isinstance(frame, str):
            return self.fail(ErrorCode.BAD_FRAME, "JSON frames must be text messages")
        try:
            message = decode(frame, self._encoding, self._limits)
        except ProtocolError as error:
            return self.fail(error.code, error.message, error.ref)
        ref = getattr(message, "ref", None)
        if isinstance(message, Connect):
            if self._state is SessionState.OPEN or self._connect_pending:
                return self.fail(
                    ErrorCode.ALREADY_AUTHENTICATED, "connect was already received", ref
                )
            self._connect_pending = True
            return message
        if self._state is SessionState.AWAITING_CONNECT:
            return self.fail(ErrorCode.NOT_AUTHENTICATED, "the first frame must be connect", ref)
        return message

    def accept(self, welcome: Welcome) -> bytes:
        """The pending ``Connect`` was authenticated: open the session; send the bytes."""
        if self._state is not SessionState.AWAITING_CONNECT or not self._connect_pending:
            raise SessionUsageError(f"accept() needs a pending connect (state {self._state})")
        self._connect_pending = False
        self._state = SessionState.OPEN
        return encode(welcome, self._encoding)

    def send(self, message: ServerMessage) -> bytes:
        """Encode a server message for this session (open sessions only)."""
        if self._state is not SessionState.OPEN:
            raise SessionUsageError(f"send() needs an open session (state {self._state})")
        if isinstance(message, Welcome | Error):
            raise SessionUsageError("send welcome with accept() and errors with fail()")
        return encode(message, self._encoding)

    def fail(
        self, code: ErrorCode | str, message: str, ref: Ref | None = None
    ) -> SendError | CloseConnection:
        """Report an error; it closes the connection when the table says so or when the
        session is not open yet (then the session is CLOSING)."""
        code = ErrorCode(code)
        if self._state in (SessionState.CLOSING, SessionState.CLOSED):
            raise SessionUsageError(f"fail() on a session that is {self._state.value}")
        error = Error(code.value, message, ref)
        if self._state is SessionState.AWAITING_CONNECT or ERRORS[code].closes:
            return self._closing(error)
        return SendError(error, encode(error, self._encoding))

    def close(self, code: ErrorCode | str, message: str | None = None) -> CloseConnection:
        """Close for ``code`` whatever the table says (shutdown, timeouts, rate limit)."""
        code = ErrorCode(code)
        if self._state in (SessionState.CLOSING, SessionState.CLOSED):
            raise SessionUsageError(f"close() on a session that is {self._state.value}")
        return self._closing(Error(code.value, message or ERRORS[code].description))

    def closed(self) -> None:
        """The WebSocket is gone (closed by either side, or the transport failed)."""
        self._state = SessionState.CLOSED
        self._connect_pending = False

    def _closing(self, error: Error) -> CloseConnection:
        self._state = SessionState.CLOSING
        self._connect_pending = False
        close_code = ERRORS[ErrorCode(error.code)].close_code
        return CloseConnection(error, encode(error, self._encoding), close_code)
