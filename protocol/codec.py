"""Frame codec: MessagePack (default) and JSON, the same message shapes in both.

Decoding runs in three steps, each with its own error codes:

1. parse (``parse_frame``): size check, then MessagePack ``unpackb`` with length limits
   and string map keys, or JSON after a UTF-8 check and a nesting pre-scan
   (``bad_frame``, ``frame_too_large``, ``too_deep``);
2. tree check: only null, bool, int (signed 64-bit), finite float, str, list and str-keyed map,
   within the depth and length limits, whatever the encoding (``invalid_message``,
   ``too_deep``, ``frame_too_large``, ``bad_frame`` for lone surrogates in JSON);
3. message check (``messages.from_wire``): tag, fields, types
   (``unknown_event``, ``invalid_message``, ``invalid_filter``).

Encoding checks nothing: a server builds each broadcast frame once with ``encode``
(or ``encode_payload`` for a ready wire map) and writes the same bytes to every socket.
MessagePack frames travel as binary WebSocket messages, JSON frames as text messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import msgpack

from sinal.protocol.errors import ErrorCode, ProtocolError
from sinal.protocol.messages import (
    CLIENT_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    ClientMessage,
    Message,
    ServerMessage,
    from_wire,
    to_wire,
    wire_ref,
)

__all__ = [
    "DEFAULT_LIMITS",
    "SERVER_FRAME_LIMITS",
    "Encoding",
    "Frame",
    "ProtocolLimits",
    "check_tree",
    "checked_tree",
    "choose_subprotocol",
    "decode",
    "decode_server",
    "encode",
    "encode_client",
    "encode_payload",
    "msgpack_failure",
    "parse_frame",
    "parse_json_text",
    "unpack_options",
]

Frame = bytes | bytearray | memoryview | str
"""What a WebSocket message delivers: bytes for binary messages, str for text ones."""

_WIRE_INT_MIN = -(2**63)
_WIRE_INT_MAX = 2**63 - 1
_MAX_DEPTH_LIMIT = 64


class Encoding(Enum):
    """A wire encoding; the value is its WebSocket subprotocol name."""

    MSGPACK = "sinal.msgpack.v1"
    JSON = "sinal.json.v1"

    @property
    def subprotocol(self) -> str:
        return self.value

    @property
    def binary(self) -> bool:
        """True when frames travel as binary WebSocket messages (MessagePack)."""
        return self is Encoding.MSGPACK


def choose_subprotocol(offered: Iterable[str]) -> Encoding | None:
    """The encoding for a handshake whose client offered ``offered`` subprotocols.

    Nothing offered: MessagePack, and the server sends no Sec-WebSocket-Protocol.
    Otherwise the first offered name that Sinal speaks (the client's order wins),
    which the server echoes; None when none is ours (refuse the handshake, HTTP 400).
    Items may be comma-separated header values.
    """
    names = [name.strip() for item in offered for name in item.split(",") if name.strip()]
    if not names:
        return Encoding.MSGPACK
    for name in names:
        for encoding in Encoding:
            if encoding.value == name:
                return encoding
    return None


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """Bounds on what a peer may send. Sizes of strings are in UTF-8 bytes.

    Defaults (``DEFAULT_LIMITS``) are for frames from clients: 64 KiB per frame,
    containers nested at most 8 deep (the frame's map is depth 1), strings of at most
    8 KiB (a JWT fits), arrays of at most 256 items, maps of at most 64 entries.
    """

    max_frame_bytes: int = 64 * 1024
    max_depth: int = 8
    max_string_bytes: int = 8 * 1024
    max_array_len: int = 256
    max_map_len: int = 64

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_string_bytes", "max_array_len", "max_map_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProtocolLimits.{name} must be at least 1")
        if not 1 <= self.max_depth <= _MAX_DEPTH_LIMIT:
            raise ValueError(f"ProtocolLimits.max_depth must be 1..{_MAX_DEPTH_LIMIT}")


DEFAULT_LIMITS = ProtocolLimits()
"""Limits on frames from clients."""

SERVER_FRAME_LIMITS = ProtocolLimits(
    max_frame_bytes=16 * 1024 * 1024,
    max_depth=32,
    max_string_bytes=16 * 1024 * 1024,
    max_array_len=1024 * 1024,
    max_map_len=1024 * 1024,
)
"""Looser limits a client applies to frames from the server (rows can be big)."""


# --- encoding -------------------------------------------------------------------------

_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_payload(payload: Mapping[str, Any], encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Encode a ready wire map (``{"event": tag, ...}``) without any check."""
    if encoding is Encoding.MSGPACK:
        return cast(bytes, msgpack.packb(payload))
    return _JSON_ENCODER.encode(payload).encode("utf-8")


def encode(message: ServerMessage, encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Encode a server message (no validation; the server's hot path)."""
    return encode_payload(to_wire(message), encoding)


def encode_client(message: ClientMessage, encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Encode a client message (for clients and tests)."""
    return encode_payload(to_wire(message), encoding)


# --- decoding -------------------------------------------------------------------------


class _DuplicateKey(Exception):
    pass


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    built = dict(pairs)
    if len(built) != len(pairs):
        raise _DuplicateKey
    return built


def _refuse_json_constant(name: str) -> float:
    # NaN, Infinity, -Infinity: let the tree check refuse them as for MessagePack.
    return float(name)


def _too_large(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.FRAME_TOO_LARGE, what)


def _too_deep(limits: ProtocolLimits) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_DEEP, f"the frame nests deeper than {limits.max_depth}")


def unpack_options(limits: ProtocolLimits) -> dict[str, Any]:
    """Keyword arguments for ``msgpack.unpackb``/``Unpacker`` under ``limits``."""
    return {
        "raw": False,
        "strict_map_key": True,
        "use_list": True,
        "object_pairs_hook": _unique_map,
        "max_str_len": limits.max_string_bytes,
        "max_bin_len": limits.max_string_bytes,
        "max_ext_len": limits.max_string_bytes,
        "max_array_len": limits.max_array_len,
        "max_map_len": limits.max_map_len,
    }


def msgpack_failure(error: BaseException) -> ProtocolError:
    """The protocol error for an exception raised by msgpack while unpacking."""
    if isinstance(error, _DuplicateKey):
        return ProtocolError(ErrorCode.BAD_FRAME, "a map repeats a key")
    if isinstance(error, msgpack.StackError | RecursionError):
        return ProtocolError(ErrorCode.TOO_DEEP, "the frame is nested too deeply")
    if isinstance(error, UnicodeDecodeError):
        return ProtocolError(ErrorCode.BAD_FRAME, "a string is not valid UTF-8")
    if isinstance(error, ValueError) and "exceeds max_" in str(error):
        return _too_large("a string, array or map is above its length limit")
    return ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid MessagePack")


def _parse_msgpack(data: Frame, limits: ProtocolLimits) -> Any:
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "MessagePack frames must be binary messages")
    if len(data) > limits.max_frame_bytes:
        raise _too_large(f"the frame is above {limits.max_frame_bytes} bytes")
    try:
        return msgpack.unpackb(data, **unpack_options(limits))
    except Exception as error:  # untrusted input: anything the parser raises is the peer's
        raise msgpack_failure(error) from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _json_too_deep(text: str, max_depth: int) -> bool:
    """Does ``text`` open more than ``max_depth`` nested arrays/objects? (pre-parse scan)"""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def parse_json_text(text: str, limits: ProtocolLimits) -> Any:
    """Parse one JSON frame already known to be within the size limit."""
    if _json_too_deep(text, limits.max_depth):
        raise _too_deep(limits)
    try:
        return json.loads(text, object_pairs_hook=_unique_map, parse_constant=_refuse_json_constant)
    except _DuplicateKey:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an object repeats a key") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.TOO_DEEP, "the frame is nested too deeply") from None
    except Exception:  # untrusted input: anything the parser raises is the peer's
        raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid JSON") from None


def _parse_json(data: Frame, limits: ProtocolLimits) -> Any:
    if isinstance(data, str):
        if len(data) > limits.max_frame_bytes or (
            len(data) * 4 > limits.max_frame_bytes
            and len(data.encode("utf-8", "surrogatepass")) > limits.max_frame_bytes
        ):
            raise _too_large(f"the frame is above {limits.max_frame_bytes} bytes")
        text = data
    else:
        if len(data) > limits.max_frame_bytes:
            raise _too_large(f"the frame is above {limits.max_frame_bytes} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid UTF-8") from None
    return parse_json_text(text, limits)


def _check_text(value: str, limits: ProtocolLimits) -> None:
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a string holds a lone surrogate") from None
    if size > limits.max_string_bytes:
        raise _too_large(f"a string is above {limits.max_string_bytes} bytes")


def check_tree(value: Any, limits: ProtocolLimits, verify_text: bool, depth: int = 0) -> None:
    """Refuse anything but protocol values within ``limits`` (see the module docstring).

    ``verify_text``: also measure strings and look for lone surrogates (JSON; the
    MessagePack parser has already done both).
    """
    kind = type(value)
    if kind is str:
        if verify_text:
            _check_text(value, limits)
    elif kind is int:
        if not _WIRE_INT_MIN <= value <= _WIRE_INT_MAX:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an integer is out of 64-bit range")
    elif kind is float:
        if not math.isfinite(value):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "NaN and infinities are not allowed")
    elif value is None or kind is bool:
        pass
    elif kind is dict:
        depth += 1
        if depth > limits.max_depth:
            raise _too_deep(limits)
        if len(value) > limits.max_map_len:
            raise _too_large(f"a map has more than {limits.max_map_len} entries")
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "map keys must be strings")
            if verify_text:
                _check_text(key, limits)
            check_tree(item, limits, verify_text, depth)
    elif kind is list:
        depth += 1
        if depth > limits.max_depth:
            raise _too_deep(limits)
        if len(value) > limits.max_array_len:
            raise _too_large(f"an array has more than {limits.max_array_len} items")
        for item in value:
            check_tree(item, limits, verify_text, depth)
    else:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"{kind.__name__} values are not part of the protocol"
        )


def parse_frame(
    data: Frame, encoding: Encoding = Encoding.MSGPACK, limits: ProtocolLimits = DEFAULT_LIMITS
) -> Any:
    """Steps 1 and 2: the frame's checked value (normally a map). Raises ProtocolError."""
    if encoding is Encoding.MSGPACK:
        tree = _parse_msgpack(data, limits)
    else:
        tree = _parse_json(data, limits)
    return checked_tree(tree, limits, verify_text=encoding is Encoding.JSON)


def checked_tree(tree: Any, limits: ProtocolLimits, verify_text: bool) -> Any:
    """``check_tree``, echoing the frame's ``ref`` in the error when it is a valid one."""
    try:
        check_tree(tree, limits, verify_text)
    except ProtocolError as error:
        ref = wire_ref(tree)
        if ref is None or error.ref is not None:
            raise
        raise ProtocolError(error.code, error.message, ref) from None
    return tree


def _decode(
    data: Frame,
    encoding: Encoding,
    limits: ProtocolLimits,
    types: Mapping[str, type[Message]],
) -> Message:
    return from_wire(parse_frame(data, encoding, limits), types)


def decode(
    data: Frame, encoding: Encoding = Encoding.MSGPACK, limits: ProtocolLimits = DEFAULT_LIMITS
) -> ClientMessage:
    """Decode and check one frame from a client (server side). Raises ProtocolError."""
    return cast(ClientMessage, _decode(data, encoding, limits, CLIENT_MESSAGE_TYPES))


def decode_server(
    data: Frame,
    encoding: Encoding = Encoding.MSGPACK,
    limits: ProtocolLimits = SERVER_FRAME_LIMITS,
) -> ServerMessage:
    """Decode and check one frame from the server (client side, tests). Strict."""
    return cast(ServerMessage, _decode(data, encoding, limits, SERVER_MESSAGE_TYPES))
