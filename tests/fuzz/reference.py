"""A slow, obviously correct statement of the codec's rules (docs/protocol.md section 2),
to judge the real decoder's answer to any frame.

The real decoder stops at the first problem it meets, and it meets them in its own order
(a streaming parser sees a length header before the bytes behind it). So the reference
does not predict one code: it gives every code the frame deserves, and the real answer
must be one of them. When the frame breaks no codec rule, the answer must be exactly what
``from_wire`` makes of the parsed value (a message, or its error and ``ref``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from sinal.protocol import DEFAULT_LIMITS, Encoding, ErrorCode, ProtocolError, ProtocolLimits
from sinal.protocol.messages import CLIENT_MESSAGE_TYPES, Message, from_wire, wire_ref

FRAME_CODES = frozenset({ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE, ErrorCode.TOO_DEEP})
"""What an unparseable frame may get: the parser may stop on any of these first."""

DECODER_CODES = FRAME_CODES | {
    ErrorCode.INVALID_MESSAGE,
    ErrorCode.UNKNOWN_EVENT,
    ErrorCode.INVALID_FILTER,
}
"""Every code ``decode`` may answer (docs/protocol.md section 9)."""


class _Pairs(list[tuple[Any, Any]]):
    """A map as the parser read it, repeated keys kept."""


@dataclass(frozen=True)
class Verdict:
    """What a frame deserves: ``codes`` (any of them is right), or, when it breaks no
    codec rule, exactly ``message`` or ``error`` (from_wire's answer)."""

    codes: frozenset[ErrorCode]
    message: Message | None = None
    error: ProtocolError | None = None
    ref: object = None
    """Codec rules broken: the ref an error raised after parsing echoes (errors raised
    while parsing cannot echo one)."""


def _violations(root: Any, limits: ProtocolLimits) -> set[ErrorCode]:
    found: set[ErrorCode] = set()
    stack = [(root, 0)]  # (value, depth of the containers around it)
    while stack:
        value, depth = stack.pop()
        if isinstance(value, _Pairs):
            if depth + 1 > limits.max_depth:
                found.add(ErrorCode.TOO_DEEP)
            if len(value) > limits.max_map_len:
                found.add(ErrorCode.FRAME_TOO_LARGE)
            keys = [key for key, _ in value]
            try:
                if len(set(keys)) != len(keys):  # equal keys, as a dict sees them
                    found.add(ErrorCode.BAD_FRAME)
            except TypeError:  # a list or map as a key
                found.add(ErrorCode.BAD_FRAME)
            for key, item in value:
                if isinstance(key, str):
                    _text(key, limits, found)
                else:  # refused by the unpacker (bad_frame) or by the value check
                    found.update((ErrorCode.INVALID_MESSAGE, ErrorCode.BAD_FRAME))
                    stack.append((key, depth + 1))
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth + 1 > limits.max_depth:
                found.add(ErrorCode.TOO_DEEP)
            if len(value) > limits.max_array_len:
                found.add(ErrorCode.FRAME_TOO_LARGE)
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _text(value, limits, found)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not -(2**63) <= value <= 2**63 - 1:
                found.add(ErrorCode.INVALID_MESSAGE)
        elif isinstance(value, float):
            if not math.isfinite(value):
                found.add(ErrorCode.INVALID_MESSAGE)
        else:  # bytes, extension types, timestamps
            found.add(ErrorCode.INVALID_MESSAGE)
            payload = value.data if isinstance(value, msgpack.ExtType) else value
            if isinstance(payload, bytes) and len(payload) >= limits.max_string_bytes:
                found.add(ErrorCode.FRAME_TOO_LARGE)  # >=: either way of counting
    return found


def _text(value: str, limits: ProtocolLimits, found: set[ErrorCode]) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        found.add(ErrorCode.BAD_FRAME)
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > limits.max_string_bytes:
        found.add(ErrorCode.FRAME_TOO_LARGE)


def _plain(value: Any) -> Any:
    """The parsed value as the decoder builds it (maps as dicts); only for frames that
    keep the rules (so at most max_depth deep)."""
    if isinstance(value, _Pairs):
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _ref(tree: Any) -> Any:
    """The ref an error would echo: the top map's last "ref", if it is a valid one."""
    if not isinstance(tree, _Pairs):
        return None
    refs = [item for key, item in tree if key == "ref" and isinstance(key, str)]
    if not refs or isinstance(refs[-1], (_Pairs, list)):
        return None
    return wire_ref({"ref": refs[-1]})


def _json_int(literal: str) -> int:
    # a literal of more than 20 characters is outside 64 bits whatever it says
    return int(literal) if len(literal) <= 20 else 2**64


class _Extension(Exception):
    pass


def _extension(code: int, data: bytes) -> Any:
    raise _Extension


def _parse(data: bytes | str, encoding: Encoding) -> Any:
    if encoding is Encoding.MSGPACK:
        if isinstance(data, str):
            raise ValueError("text")
        try:  # the decoder refuses an extension value as soon as it meets one
            msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                            object_pairs_hook=_Pairs, ext_hook=_extension)
        except _Extension:
            raise
        except Exception:
            pass
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                               object_pairs_hook=_Pairs)
    text = data if isinstance(data, str) else data.decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError("BOM")
    return json.loads(text, object_pairs_hook=_Pairs, parse_int=_json_int,
                      parse_constant=float)


def judge(data: bytes | str, encoding: Encoding,
          limits: ProtocolLimits = DEFAULT_LIMITS) -> Verdict:
    """What ``decode(data, encoding, limits)`` must answer."""
    whole: set[ErrorCode] = set()  # problems of the whole message, found in any order
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > limits.max_frame_bytes:
        whole.add(ErrorCode.FRAME_TOO_LARGE)
    if isinstance(data, str) and encoding is Encoding.MSGPACK:
        whole.add(ErrorCode.BAD_FRAME)  # a text message on a MessagePack session
    elif encoding is Encoding.JSON:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # bad UTF-8, or lone surrogates in the text
            whole.add(ErrorCode.BAD_FRAME)
    if whole:
        return Verdict(frozenset(whole))
    try:
        tree = _parse(data, encoding)
    except _Extension:  # met before anything else is wrong, or after: either is right
        return Verdict(FRAME_CODES | {ErrorCode.INVALID_MESSAGE})
    except Exception:  # not parseable at all: any frame-level code is right
        return Verdict(FRAME_CODES)
    found = _violations(tree, limits)
    if found:
        return Verdict(frozenset(found), ref=_ref(tree))
    try:
        return Verdict(frozenset(), message=from_wire(_plain(tree), CLIENT_MESSAGE_TYPES))
    except ProtocolError as error:
        return Verdict(frozenset({error.code}), error=error)
