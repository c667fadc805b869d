"""Frames for the fuzz suite: valid ones, mutated ones and adversarial shapes, in both
encodings, and the valid baseline frame a frame's decoding cost is compared with.

Adversarial shapes are families of builders ``(size, knob) -> frame``: ``size`` is the
frame's length in bytes (about), ``knob`` picks a variant. JSON frames are text (what a
WebSocket text message delivers), MessagePack frames bytes.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from sinal.protocol import DEFAULT_LIMITS, Encoding, encode_payload, to_wire
from tests.protocol.protocol_strategies import client_messages, server_messages

LIMIT = DEFAULT_LIMITS.max_frame_bytes
Frame = bytes | str


def as_message(frame: bytes, encoding: Encoding) -> Frame:
    """What a client's WebSocket message carries: bytes for MessagePack, text for JSON
    (bytes that are not UTF-8 stay bytes: they can only be sent as a binary message)."""
    if encoding.binary:
        return frame
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return frame


# --- valid and mutated ------------------------------------------------------------------


def valid_frames(encoding: Encoding) -> st.SearchStrategy[bytes]:
    return (client_messages | server_messages).map(
        lambda message: encode_payload(to_wire(message), encoding))


@st.composite
def mutated_frames(draw: st.DrawFn, encoding: Encoding) -> Frame:
    """A valid frame after a few bit flips, byte writes, truncations, deletions and
    splices of another valid frame."""
    frame = bytearray(draw(valid_frames(encoding)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "write", "truncate", "delete", "splice",
                                          "repeat"]))
        at = draw(st.integers(0, max(len(frame) - 1, 0)))
        if operation == "flip" and frame:
            frame[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "write" and frame:
            frame[at] = draw(st.integers(0, 255))
        elif operation == "truncate":
            del frame[at:]
        elif operation == "delete":
            del frame[at:at + draw(st.integers(1, 8))]
        elif operation == "splice":
            other = draw(valid_frames(encoding))
            start = draw(st.integers(0, len(other)))
            frame[at:at] = other[start:start + draw(st.integers(1, 40))]
        elif operation == "repeat":
            piece = frame[at:at + draw(st.integers(1, 16))]
            frame[at:at] = piece * draw(st.integers(1, 50))
    return as_message(bytes(frame), encoding)


# --- adversarial shapes -------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    encoding: Encoding
    build: Callable[[int, int], Frame]

    def __str__(self) -> str:
        return f"{self.encoding.name.lower()}:{self.name}"


def _fill(prefix: str, unit: str, suffix: str, size: int) -> str:
    return prefix + unit * max(0, (size - len(prefix) - len(suffix)) // max(len(unit), 1)) + suffix


_PREFIXES = ["", "[", '{"a":', "{" * 9, "[" * 9, '["', '{"event":"connect","token":"']
_UNITS = ['\\"', "\\\\", '"\\"', '\\\\"', '"[', '["', '{"', '"{', "\\u0041", "\\ud800",
          "\\udc00\\ud800", "\\ud83d\\ude00", '"\\\\"', "\\", '"', "[", "{", "]", "é", ","]
_SUFFIXES = ["", '"', '"]', "]", "}", '"}']


def json_escapes(size: int, knob: int) -> str:
    """Runs of escapes, quotes and brackets after an opening, closed or not. Knob 0 is
    issue #10's frame: nine braces, a quote, then escaped quotes to the end."""
    if knob == 0:
        return "{" * 9 + '"' + '\\"' * ((size - 10) // 2)
    rng = random.Random(knob)
    return _fill(rng.choice(_PREFIXES), rng.choice(_UNITS), rng.choice(_SUFFIXES), size)


def json_deep(size: int, knob: int) -> str:
    variants = [("[", "", ""), ("[", "1", "]"), ('{"a":', "1", "}"), ("[{\"a\":", "1", "}]"),
                ('{"event":"connect","token":', '"t"', "}")]
    opener, middle, closer = variants[knob % len(variants)]
    count = max(1, (size - len(middle)) // (len(opener) + len(closer)))
    return opener * count + middle + closer * count


def json_numbers(size: int, knob: int) -> str:
    variant = knob % 7
    if variant == 0:
        return "9" * size
    if variant == 1:
        return '{"event":"heartbeat","timestamp":-' + "9" * (size - 40) + "}"
    if variant == 2:
        return "1e" + "9" * (size - 2)
    if variant == 3:
        return "[0." + "0" * (size - 5) + "1]"
    if variant == 4:
        return "[" + ",".join(["12345678901234567890"] * (size // 21)) + "]"
    if variant == 5:
        return '{"event":"heartbeat","timestamp":1' + "0" * (size - 60) + '.5,"ref":"n"}'
    return "[" + ",".join(["-9223372036854775809", "9223372036854775808"] * (size // 42)) + "]"


def json_surrogates(size: int, knob: int) -> str:
    unit = ["\\ud800", "\\udc00", "\\ud83d\\ude00", "\ud800", "\udfff", "\ud83d\ude00"][knob % 6]
    return _fill('{"event":"connect","token":"', unit, '","ref":"s"}', size)


def json_repeated_keys(size: int, knob: int) -> str:
    if knob % 3 == 0:
        return "{" + ",".join(['"a":1'] * (size // 6)) + "}"
    if knob % 3 == 1:
        return _fill('{"event":"heartbeat",', '"timestamp":1,', '"ref":"r"}', size)
    inner = '{"b":1,"b":2}'
    return "[" + ",".join([inner] * min(256, size // (len(inner) + 1))) + "]"


def _wide_json(size: int, leaf: str) -> str:
    row = "[" + ",".join([leaf] * 256) + "]"
    rows = max(1, min(256, size // (len(row) + 1)))
    return '{"event":"subscribe","events":["a"],"filters":{"x":[' + ",".join([row] * rows) + "]}}"


def json_wide(size: int, knob: int) -> str:
    variant = knob % 6
    if variant == 0:
        return "[" + "1," * (size // 2 - 1) + "1]"
    if variant == 1:
        return "[" + "[]," * (size // 3 - 1) + "[]]"
    if variant == 2:
        return _wide_json(size, "1")
    if variant == 3:
        return _wide_json(size, "[]")
    if variant == 4:
        return _wide_json(size, '""')
    pairs = ",".join(f'"k{index}":[' + ",".join(["0"] * 255) + "]" for index in range(64))
    return ("{" + pairs + "}")[:size]  # 64 keys of 256 items, cut to the size


def json_strings(size: int, knob: int) -> str:
    variant = knob % 5
    if variant == 0:
        return '"' + "a" * (size - 1)
    if variant == 1:
        return '["' + "x" * (size - 4) + '"]'
    if variant == 2:
        return '{"event":"connect","token":"' + "é" * (size // 2 - 20) + '"}'
    if variant == 3:
        return " " * (size - 2) + "{}"
    return "[" + " " * (size - 2) + "]"


_TOKENS = ["[", "]", "{", "}", '"', "\\", ",", ":", "1", "-", "e", "true", "null", '\\"',
           "\\u", "d800", '"a"', '"event"', '"connect"', " ", "9" * 25, "\ud800"]


def json_soup(size: int, knob: int) -> str:
    rng = random.Random(knob)
    tokens = rng.sample(_TOKENS, rng.randint(2, len(_TOKENS)))
    out: list[str] = []
    length = 0
    while length < size:
        token = rng.choice(tokens)
        out.append(token)
        length += len(token)
    return "".join(out)


def mp_deep(size: int, knob: int) -> bytes:
    unit, end = [(b"\x91", b"\x01"), (b"\x81\xa1a", b"\xc0"), (b"\xdc\x00\x01", b"\x01"),
                 (b"\x92\x01", b"\x01")][knob % 4]
    return unit * max(1, (size - 1) // len(unit)) + end


_HEADERS = [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
            b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x05", b"\xdc\xff\xff", b"\xde\xff\xff",
            b"\xdc\x01\x00", b"\xde\x00\x40", b"\xda\x20\x00", b"\xd9\xff"]


def mp_declared(size: int, knob: int) -> bytes:
    """Headers that declare more than the frame holds, or more than the limits allow."""
    header = _HEADERS[knob % len(_HEADERS)]
    if knob % 2:
        return header * max(1, size // len(header))
    return b"\x81\xa5event" + header + b"\x00" * max(0, size - 12)


def _wide_mp(size: int, leaf: bytes, entries: int = 3) -> bytes:
    """A subscribe whose filter holds rows of 256 ``leaf`` values; with ``entries`` 4 the
    map declares one entry more than it has (all is parsed, then the frame ends)."""
    row = b"\xdc\x01\x00" + leaf * 256
    rows = max(1, min(256, (size - 60) // len(row)))
    head = bytes(msgpack.packb({"event": "subscribe", "events": ["a"]}))[1:]
    return (bytes([0x80 + entries]) + head + b"\xa7filters\x81\xa1x\xdc"
            + struct.pack(">H", rows) + row * rows)


def mp_wide(size: int, knob: int) -> bytes:
    leaf = [b"\x01", b"\x90", b"\x91\x01", b"\xa0", b"\xc0", b"\xcb" + struct.pack(">d", 0.5),
            b"\xcf" + b"\xff" * 8, b"\xd3\x80" + b"\x00" * 7][knob % 8]
    return _wide_mp(size, leaf, 3 + knob // 8 % 2)


def mp_values(size: int, knob: int) -> bytes:
    """Arrays of values the protocol refuses: out-of-range ints, NaN, binary, extensions,
    timestamps, bad UTF-8, long strings, repeated and non-string keys."""
    variant = knob % 9
    if variant == 0:
        return _wide_mp(size, b"\xcb" + struct.pack(">d", float("nan")))
    if variant == 1:
        return _wide_mp(size, b"\xc4\x01x")
    if variant == 2:
        return _wide_mp(size, b"\xd4\x05x")
    if variant == 3:
        return _wide_mp(size, b"\xd6\xff\x00\x00\x00\x01")
    if variant == 4:
        return _wide_mp(size, b"\xa2\xff\xfe")
    if variant == 5:
        return b"\x81\xa5event\xdb" + struct.pack(">I", size) + b"x" * size
    if variant == 6:
        return b"\xde\x00\x40" + b"\xa1a\x01" * 64
    if variant == 7:
        return b"\xde\x00\x40" + b"".join(b"\x91" + bytes([i]) + b"\x01" for i in range(64))
    return b"\xdc\x01\x00" + (b"\x82\xa1b\x01\xa1b\x02") * 256


def mp_random(size: int, knob: int) -> bytes:
    return random.Random(knob).randbytes(size)


FAMILIES: list[Family] = [
    Family("escapes", Encoding.JSON, json_escapes),
    Family("deep", Encoding.JSON, json_deep),
    Family("numbers", Encoding.JSON, json_numbers),
    Family("surrogates", Encoding.JSON, json_surrogates),
    Family("repeated-keys", Encoding.JSON, json_repeated_keys),
    Family("wide", Encoding.JSON, json_wide),
    Family("strings", Encoding.JSON, json_strings),
    Family("soup", Encoding.JSON, json_soup),
    Family("deep", Encoding.MSGPACK, mp_deep),
    Family("declared", Encoding.MSGPACK, mp_declared),
    Family("wide", Encoding.MSGPACK, mp_wide),
    Family("values", Encoding.MSGPACK, mp_values),
    Family("random", Encoding.MSGPACK, mp_random),
]
KNOBS = 12  # variants per family in the deterministic table


@st.composite
def adversarial_frames(draw: st.DrawFn, encoding: Encoding, min_size: int = 1,
                       max_size: int = LIMIT + 64) -> Frame:
    family = draw(st.sampled_from([f for f in FAMILIES if f.encoding is encoding]))
    return family.build(draw(st.integers(min_size, max_size)), draw(st.integers(0, 1000)))


def any_frames(encoding: Encoding) -> st.SearchStrategy[Frame]:
    return st.one_of(
        valid_frames(encoding).map(lambda frame: as_message(frame, encoding)),
        mutated_frames(encoding),
        adversarial_frames(encoding, max_size=2048),
        st.binary(max_size=200),
        st.text(max_size=200),
    )


# --- the baseline: a valid frame of a given size -------------------------------------------


def baseline_frame(size: int, encoding: Encoding) -> bytes:
    """A valid ``subscribe`` of ``size`` bytes (at least a few hundred), as dense as the
    protocol allows: 32 filter columns of up to 256 short strings each."""
    values = max(1, min(32 * 256, (size - 120) // 9))
    filters: dict[str, Any] = {}
    for index in range(values):
        filters.setdefault(f"c{index // 256:02d}", []).append(f"v{index:06d}")
    wire = {"event": "subscribe", "events": ["purchase_request_changed"], "filters": filters,
            "ref": "baseline"}
    frame = encode_payload(wire, encoding)
    last = filters[max(filters)]
    # pad the last value to the exact size (a longer string is just as valid)
    while len(frame) < size:
        last[-1] += "v" * (size - len(frame))
        frame = encode_payload(wire, encoding)
    return frame


def plain_parse(frame: Frame) -> object:
    """The parser with no checks at all: what the baseline's cost is measured with."""
    if isinstance(frame, str):
        return json.loads(frame)
    return msgpack.unpackb(frame)
