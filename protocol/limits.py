"""Limits on untrusted frames, and the checks that enforce them in linear time.

Every check here runs in time linear in the frame's size with a small constant: the
character and item work is done by C code (``re`` with possessive quantifiers, ``map``,
``itertools``), and Python only runs a few statements per nesting level. No check may
look at the same bytes again and again (issue #10: a regex that rescanned an unclosed
string of escaped quotes from every quote took 12 s on one 64 KiB frame).

Who enforces what, once:

- frame size: the codec, before anything is parsed;
- MessagePack string, binary, extension, array and map lengths: the C unpacker while it
  parses (``unpack_options``), so a header that declares 4 GiB costs nothing;
- JSON nesting depth and integer literals too long for 64 bits: ``scan_json``, one pass
  over the text that tracks string and escape state, before ``json.loads`` builds
  anything; JSON map sizes and repeated keys: the object hook while ``json.loads`` runs;
- everything the parsers have no hook for: ``check_values``, one pass over the parsed
  value, level by level (value kinds, 64-bit integers, finite floats, string keys, JSON
  array lengths and string sizes, lone surrogates, MessagePack depth).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import accumulate, chain, compress, repeat
from operator import is_, lt
from typing import Any

from sinal.protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "DEFAULT_LIMITS",
    "INT64_MAX",
    "INT64_MIN",
    "SERVER_FRAME_LIMITS",
    "DuplicateKey",
    "JsonShape",
    "MapTooLong",
    "ProtocolLimits",
    "bounded_int",
    "check_values",
    "json_object_hook",
    "scan_json",
    "too_deep",
    "too_large",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_MAX_DEPTH_LIMIT = 64


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


def too_large(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.FRAME_TOO_LARGE, what)


def too_deep(limits: ProtocolLimits) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_DEEP, f"the frame nests deeper than {limits.max_depth}")


# --- JSON: one pass over the text before it is parsed -------------------------------------

_NOT_DEPTH = bytes(range(256)).translate(None, b"[]{}")
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_DEPTH_STEPS = bytes.maketrans(b"()", b"\x01\xff")  # +1 / -1 as signed bytes
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20  # an integer literal of 20 digits is outside 64 bits
# An escape that decodes to a surrogate (it may be half of a valid pair: checked later).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class JsonShape:
    """What ``scan_json`` learnt about a frame, so later steps skip what cannot occur."""

    long_numbers: bool
    """A run of 20+ digits is present: parse integers with ``bounded_int``."""
    surrogate_escapes: bool
    """A ``\\uD800``-``\\uDFFF`` escape is present: look for lone surrogates."""


def _outside_strings(raw: bytes) -> bytes:
    """``raw`` without its string literals (closed or not), in a few C-level passes.

    JSON escapes read left to right, so dropping every escaped backslash and then every
    escaped quote leaves exactly the quotes that open and close strings; the text
    between the quotes is then cut out. (Outside strings a backslash is invalid JSON,
    which the parser refuses whatever this scan says.)
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def scan_json(raw: bytes, limits: ProtocolLimits) -> JsonShape:
    """Refuse nesting deeper than ``limits.max_depth`` before anything is built (too_deep).

    ``raw`` is the frame in UTF-8. String literals are cut out; the brackets left are
    balanced to depth ``max_depth`` when ``max_depth`` passes that drop every ``()`` pair
    leave nothing, and too deep when ``max_depth + 1`` openers stand in a row; otherwise
    their running sum as +1/-1 steps gives the depth.
    Unbalanced text is left for the parser to refuse (bad_frame), except that more than
    ``max_depth`` unclosed openers is too_deep. Every step is a C-level scan and none
    restarts inside a string, so the whole is linear.
    """
    if raw.count(b"[") + raw.count(b"{") > limits.max_depth:
        bare = _outside_strings(raw) if b'"' in raw else raw
        brackets = bare.translate(_AS_PARENS, _NOT_DEPTH)
        too_many = b"(" * (limits.max_depth + 1)
        # Each pass drops the innermost pairs, so a frame nested at most max_depth deep
        # is gone after max_depth passes; one that opens max_depth + 1 in a row before
        # or between passes is too deep (a few C-level scans of a shrinking text).
        for _ in range(limits.max_depth):
            if too_many in brackets:
                raise too_deep(limits)
            brackets = brackets.replace(b"()", b"")
            if not brackets:
                break
        if brackets:  # unbalanced, or deep in a shape no pass revealed: a running sum
            steps = array("b", brackets.translate(_DEPTH_STEPS))
            if max(accumulate(steps)) > limits.max_depth:
                raise too_deep(limits)
    return JsonShape(
        long_numbers=raw.translate(_DIGITS_AS_ZERO).find(_TWENTY_DIGITS) >= 0,
        surrogate_escapes=b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None,
    )


_OUT_OF_RANGE = INT64_MAX + 1


def bounded_int(literal: str) -> int:
    """``json.loads``'s ``parse_int`` when long digit runs are present: never converts
    more than 20 characters (such a value is out of range anyway and is refused by
    ``check_values``, with the frame's ``ref``)."""
    return int(literal) if len(literal) <= 20 else _OUT_OF_RANGE


class DuplicateKey(Exception):
    """A map repeats a key (raised by the parsers' hooks)."""


class MapTooLong(Exception):
    """A JSON object has more entries than the limit (raised by the object hook)."""


@cache
def json_object_hook(max_map_len: int) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """``json.loads``'s ``object_pairs_hook``: the map, or DuplicateKey / MapTooLong."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > max_map_len:
            raise MapTooLong
        built = dict(pairs)
        if len(built) != len(pairs):
            raise DuplicateKey
        return built

    return build


# --- one pass over the parsed value -------------------------------------------------------

_NULL = type(None)
_KINDS = frozenset({_NULL, bool, int, float, str, list, dict})


def _of_kind(values: list[Any], kinds: list[type], kind: type) -> list[Any]:
    return list(compress(values, map(is_, kinds, repeat(kind))))


def _check_strings(
    strings: list[str], text_limit: int | None, surrogates: bool
) -> None:
    if surrogates:
        try:
            "".join(strings).encode("utf-8")  # Python never pairs surrogates in a str
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a string holds a lone surrogate") from None
    if text_limit is None:
        return
    quick = text_limit // 4  # a character is at most 4 bytes of UTF-8
    if max(map(len, strings)) <= quick:
        return
    for value in compress(strings, map(lt, repeat(quick), map(len, strings))):
        if len(value.encode("utf-8", "surrogatepass")) > text_limit:
            raise too_large(f"a string is above {text_limit} bytes")


def check_values(
    root: Any,
    limits: ProtocolLimits,
    *,
    bounded: bool = False,
    text_limit: int | None = None,
    surrogates: bool = False,
) -> None:
    """Refuse anything but protocol values: null, bool, int within 64 bits, finite float,
    str, list and str-keyed map, nested at most ``limits.max_depth`` deep, arrays of at
    most ``limits.max_array_len`` items. (Map sizes and repeated keys are the parsers'.)

    ``bounded``: the MessagePack unpacker has already bounded every length and every
    integer to [-2**63, 2**64), so only what it cannot know is checked.
    ``text_limit``: also measure strings and keys in UTF-8 bytes against it (JSON frames
    larger than the string limit).
    ``surrogates``: also refuse lone surrogates (JSON frames with surrogate escapes).

    The walk goes level by level: each level's values are sorted by kind with C-level
    ``map``/``compress``, so the cost per value is a few C operations whatever the shape
    (many small containers included).
    """
    level: list[Any] = [root]
    depth = 0
    check_text = text_limit is not None or surrogates
    while level:
        kinds = list(map(type, level))
        single = kinds.count(kinds[0]) == len(kinds)  # one kind: no sorting needed
        present = {kinds[0]} if single else set(kinds)
        if not present <= _KINDS:
            odd = sorted(kind.__name__ for kind in present - _KINDS)
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"{odd[0]} values are not part of the protocol"
            )
        if int in present:
            ints = level if single else _of_kind(level, kinds, int)
            if max(ints) > INT64_MAX or (not bounded and min(ints) < INT64_MIN):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an integer is out of 64-bit range")
        if float in present:
            floats = level if single else _of_kind(level, kinds, float)
            if not all(map(math.isfinite, floats)):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "NaN and infinities are not allowed")
        if check_text and str in present:
            _check_strings(level if single else _of_kind(level, kinds, str), text_limit, surrogates)
        lists = (level if single else _of_kind(level, kinds, list)) if list in present else []
        maps = (level if single else _of_kind(level, kinds, dict)) if dict in present else []
        if not lists and not maps:
            return
        depth += 1
        if depth > limits.max_depth:
            raise too_deep(limits)
        lists = list(filter(None, lists))  # empty ones hold nothing more to check
        if lists and not bounded and max(map(len, lists)) > limits.max_array_len:
            raise too_large(f"an array has more than {limits.max_array_len} items")
        level = list(chain.from_iterable(lists))
        if maps:
            keys = list(chain.from_iterable(maps))
            if keys:
                key_kinds = list(map(type, keys))
                if key_kinds.count(str) != len(key_kinds):
                    raise ProtocolError(ErrorCode.INVALID_MESSAGE, "map keys must be strings")
                if check_text:
                    _check_strings(keys, text_limit, surrogates)
            level.extend(chain.from_iterable(map(dict.values, maps)))
