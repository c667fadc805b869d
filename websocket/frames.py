"""Server-to-client WebSocket frames, built once and written to many sockets.

A server frame is never masked (RFC 6455, section 5.1), so the bytes of a
broadcast are the same for every socket: :func:`build_frame` makes them once
and the caller hands the very same ``bytes`` object to every connection's
outbox (``WebSocketConnection.offer`` in :mod:`sinal.websocket.connection`).

Only what the server sends lives here: complete, unfragmented data frames
(FIN set, opcode text 0x1 or binary 0x2, 7/16/64-bit payload length) and the
control frames ping, pong and close. Parsing what clients send (masked,
possibly fragmented) is wsproto's job in :mod:`sinal.websocket.connection`.

Close codes used by the transport are defined here as plain ``int`` constants.
``SLOW_CONSUMER`` (4301) is ours: a connection whose outbox overflowed and that
the owner decided to close rather than resync. The protocol layer may define
its own table of codes later; these values are the ones on the wire.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "ABNORMAL_CLOSURE",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "INVALID_PAYLOAD",
    "MAX_CONTROL_PAYLOAD",
    "MESSAGE_TOO_BIG",
    "NORMAL_CLOSURE",
    "NO_STATUS_RECEIVED",
    "POLICY_VIOLATION",
    "PROTOCOL_ERROR",
    "SLOW_CONSUMER",
    "TRY_AGAIN_LATER",
    "UNSUPPORTED_DATA",
    "Opcode",
    "build_close_frame",
    "build_frame",
    "build_ping_frame",
    "build_pong_frame",
    "frame_header_size",
]

# Close codes (RFC 6455 section 7.4.1, plus our private 4xxx range).
NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
NO_STATUS_RECEIVED: Final = 1005  # local only: a close frame without a code
ABNORMAL_CLOSURE: Final = 1006  # local only: the TCP connection was lost
INVALID_PAYLOAD: Final = 1007
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
TRY_AGAIN_LATER: Final = 1013
SLOW_CONSUMER: Final = 4301  # = protocol.errors slow_consumer

#: Codes that must never appear in a close frame on the wire.
_LOCAL_ONLY_CODES: Final = frozenset({1004, NO_STATUS_RECEIVED, ABNORMAL_CLOSURE, 1015})

#: Control frames carry at most 125 bytes of payload.
MAX_CONTROL_PAYLOAD: Final = 125


class Opcode:
    """Frame opcodes (RFC 6455 section 5.2) as plain ints."""

    CONTINUATION: Final = 0x0
    TEXT: Final = 0x1
    BINARY: Final = 0x2
    CLOSE: Final = 0x8
    PING: Final = 0x9
    PONG: Final = 0xA


_FIN: Final = 0x80
_TEXT_HEAD: Final = bytes((_FIN | Opcode.TEXT,))
_BINARY_HEAD: Final = bytes((_FIN | Opcode.BINARY,))
_SHORT_LENGTHS: Final = tuple(bytes((n,)) for n in range(126))
_LEN16: Final = struct.Struct("!BH")
_LEN64: Final = struct.Struct("!BQ")


def frame_header_size(payload_length: int) -> int:
    """Bytes of header an unmasked frame with this payload length carries."""
    if payload_length < 126:
        return 2
    if payload_length < 0x10000:
        return 4
    return 10


def _length_field(n: int) -> bytes:
    if n < 126:
        return _SHORT_LENGTHS[n]
    if n < 0x10000:
        return _LEN16.pack(126, n)
    return _LEN64.pack(127, n)


def build_frame(payload: bytes | bytearray | memoryview, *, text: bool = False) -> bytes:
    """Return one complete, unmasked server-to-client data frame.

    ``text=True`` makes a text frame (opcode 0x1); the payload must then already
    be valid UTF-8 (it is not checked: this is the hot path, and encoded JSON
    is). Otherwise the frame is binary (opcode 0x2). The result is immutable
    and meant to be built once and offered to every subscriber's connection.
    """
    head = _TEXT_HEAD if text else _BINARY_HEAD
    return b"".join((head, _length_field(len(payload)), payload))


def _control_frame(opcode: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"control frame payload is {len(payload)} bytes; at most {MAX_CONTROL_PAYLOAD}"
        )
    return bytes((_FIN | opcode, len(payload))) + payload


def build_ping_frame(payload: bytes = b"") -> bytes:
    """A ping control frame (payload of at most 125 bytes)."""
    return _control_frame(Opcode.PING, bytes(payload))


def build_pong_frame(payload: bytes = b"") -> bytes:
    """A pong control frame, normally echoing the payload of a received ping."""
    return _control_frame(Opcode.PONG, bytes(payload))


def _truncate_utf8(data: bytes, limit: int) -> bytes:
    """Cut ``data`` to at most ``limit`` bytes without splitting a character."""
    if len(data) <= limit:
        return data
    cut = data[:limit]
    # Drop a trailing partial multi-byte sequence, if any.
    return cut.decode("utf-8", errors="ignore").encode("utf-8")


def build_close_frame(code: int | None = NORMAL_CLOSURE, reason: str = "") -> bytes:
    """A close control frame with a status code and a UTF-8 reason.

    ``code=None`` sends an empty close frame (no status); a reason then is an
    error. Codes reserved for local use (1005, 1006, 1015) and codes outside
    1000-4999 raise ``ValueError``. The reason is truncated to fit the 125-byte
    control payload without splitting a character.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return _control_frame(Opcode.CLOSE, b"")
    if not 1000 <= code <= 4999 or code in _LOCAL_ONLY_CODES:
        raise ValueError(f"close code {code} may not be sent on the wire")
    body = _truncate_utf8(reason.encode("utf-8"), MAX_CONTROL_PAYLOAD - 2)
    return _control_frame(Opcode.CLOSE, struct.pack("!H", code) + body)
