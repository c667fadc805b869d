"""Frame codec: MessagePack (default) and JSON, the same message shapes in both.

Decoding runs in three steps, each with its own error codes:

1. parse (``parse_frame``): the WebSocket message type (MessagePack frames are binary
   messages, JSON frames text messages), the size, then MessagePack ``unpackb`` with
   length limits and string map keys, or JSON after a one-pass nesting scan
   (``bad_frame``, ``frame_too_large``, ``too_deep``);
2. value check: only null, bool, int (signed 64-bit), finite float, str, list and
   str-keyed map, within the depth and length limits, whatever the encoding
   (``invalid_message``, ``too_deep``, ``frame_too_large``, ``bad_frame`` for lone
   surrogates in JSON);
3. message check (``messages.from_wire``): tag, fields, types
   (``unknown_event``, ``invalid_message``, ``invalid_filter``).

Every step is linear in the frame's size and each frame is parsed once
(``protocol.limits`` says which step enforces which limit).

Encoding checks nothing: a server builds each broadcast frame once with ``encode``
(or ``encode_payload`` for a ready wire map) and writes the same bytes to every socket.
MessagePack frames travel as binary WebSocket messages, JSON frames as text messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, cast

import msgpack

from sinal.protocol.errors import ErrorCode, ProtocolError
from sinal.protocol.limits import (
    DEFAULT_LIMITS,
    SERVER_FRAME_LIMITS,
    DuplicateKey,
    MapTooLong,
    ProtocolLimits,
    bounded_int,
    check_values,
    json_object_hook,
    scan_json,
    too_large,
)
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


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    built = dict(pairs)
    if len(built) != len(pairs):
        raise DuplicateKey
    return built


class _ExtensionValue(Exception):
    pass


def _refuse_extension(code: int, data: bytes) -> Any:
    # Refused at the first one: building extension objects costs far more per byte than
    # any protocol value (the timestamp extension is built by msgpack itself and refused
    # by the value check).
    raise _ExtensionValue


def unpack_options(limits: ProtocolLimits) -> dict[str, Any]:
    """Keyword arguments for ``msgpack.unpackb``/``Unpacker`` under ``limits``: the C
    unpacker refuses a string, binary, extension, array or map above its limit (or above
    the frame size) from its header, before it reads or allocates anything."""
    text = min(limits.max_string_bytes, limits.max_frame_bytes)
    return {
        "raw": False,
        "strict_map_key": True,
        "use_list": True,
        "object_pairs_hook": _unique_map,
        "ext_hook": _refuse_extension,
        "max_str_len": text,
        "max_bin_len": text,
        "max_ext_len": text,
        "max_array_len": min(limits.max_array_len, limits.max_frame_bytes),
        "max_map_len": min(limits.max_map_len, limits.max_frame_bytes),
    }


def msgpack_failure(error: BaseException) -> ProtocolError:
    """The protocol error for an exception raised by msgpack while unpacking."""
    if isinstance(error, DuplicateKey):
        return ProtocolError(ErrorCode.BAD_FRAME, "a map repeats a key")
    if isinstance(error, _ExtensionValue):
        return ProtocolError(
            ErrorCode.INVALID_MESSAGE, "extension values are not part of the protocol"
        )
    if isinstance(error, msgpack.StackError | RecursionError):
        return ProtocolError(ErrorCode.TOO_DEEP, "the frame is nested too deeply")
    if isinstance(error, UnicodeDecodeError):
        return ProtocolError(ErrorCode.BAD_FRAME, "a string is not valid UTF-8")
    if isinstance(error, ValueError) and "exceeds max_" in str(error):
        return too_large("a string, array or map is above its length limit")
    return ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid MessagePack")


def _parse_msgpack(data: Frame, limits: ProtocolLimits) -> Any:
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "MessagePack frames must be binary messages")
    if len(data) > limits.max_frame_bytes:
        raise too_large(f"the frame is above {limits.max_frame_bytes} bytes")
    try:
        tree = msgpack.unpackb(data, **unpack_options(limits))
    except Exception as error:  # untrusted input: anything the parser raises is the peer's
        raise msgpack_failure(error) from None
    return checked_tree(tree, limits, bounded=True)


def parse_json_text(text: str, limits: ProtocolLimits, raw: bytes | None = None) -> Any:
    """Steps 1 and 2 for one JSON frame already known to be within the size limit.

    ``raw``: the same frame in UTF-8 when the caller has it (else it is encoded here).
    """
    if raw is None:
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "the frame holds a lone surrogate") from None
    shape = scan_json(raw, limits)
    try:
        tree = json.loads(
            text,
            object_pairs_hook=json_object_hook(limits.max_map_len),
            parse_constant=_refuse_json_constant,
            parse_int=bounded_int if shape.long_numbers else None,
        )
    except DuplicateKey:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an object repeats a key") from None
    except MapTooLong:
        raise too_large(f"a map has more than {limits.max_map_len} entries") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.TOO_DEEP, "the frame is nested too deeply") from None
    except Exception:  # untrusted input: anything the parser raises is the peer's
        raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid JSON") from None
    # no string can be longer than the whole frame: measure them only in longer frames
    measure = len(raw) > limits.max_string_bytes
    return checked_tree(
        tree,
        limits,
        text_limit=limits.max_string_bytes if measure else None,
        surrogates=shape.surrogate_escapes,
    )


def _refuse_json_constant(name: str) -> float:
    # NaN, Infinity, -Infinity: the value check refuses them as for MessagePack.
    return float(name)


def _parse_json(data: Frame, limits: ProtocolLimits) -> Any:
    if isinstance(data, str):
        if len(data) > limits.max_frame_bytes:  # a character is at least one byte
            raise too_large(f"the frame is above {limits.max_frame_bytes} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "the frame holds a lone surrogate") from None
        text = data
    else:
        if len(data) > limits.max_frame_bytes:
            raise too_large(f"the frame is above {limits.max_frame_bytes} bytes")
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not valid UTF-8") from None
    if len(raw) > limits.max_frame_bytes:
        raise too_large(f"the frame is above {limits.max_frame_bytes} bytes")
    return parse_json_text(text, limits, raw)


def parse_frame(
    data: Frame, encoding: Encoding = Encoding.MSGPACK, limits: ProtocolLimits = DEFAULT_LIMITS
) -> Any:
    """Steps 1 and 2: the frame's checked value (normally a map). Raises ProtocolError."""
    if encoding is Encoding.MSGPACK:
        return _parse_msgpack(data, limits)
    return _parse_json(data, limits)


def checked_tree(
    tree: Any,
    limits: ProtocolLimits,
    *,
    bounded: bool = False,
    text_limit: int | None = None,
    surrogates: bool = False,
) -> Any:
    """Step 2 (``limits.check_values``), echoing the frame's ``ref`` in the error when it
    is a valid one."""
    try:
        check_values(
            tree, limits, bounded=bounded, text_limit=text_limit, surrogates=surrogates
        )
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
    """Decode and check one frame from a client (server side). Raises ProtocolError.

    A MessagePack frame must be bytes (a text message is ``bad_frame``); a JSON frame
    may be text or its UTF-8 bytes. ``ServerSession.receive``, which gets WebSocket
    messages, also refuses a binary message on a JSON session.
    """
    return cast(ClientMessage, _decode(data, encoding, limits, CLIENT_MESSAGE_TYPES))


def decode_server(
    data: Frame,
    encoding: Encoding = Encoding.MSGPACK,
    limits: ProtocolLimits = SERVER_FRAME_LIMITS,
) -> ServerMessage:
    """Decode and check one frame from the server (client side, tests). Strict."""
    return cast(ServerMessage, _decode(data, encoding, limits, SERVER_MESSAGE_TYPES))
