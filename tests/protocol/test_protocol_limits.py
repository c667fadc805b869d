"""Regressions of issue #10 in the sans-IO codec: where each limit is enforced, and what
the one-pass JSON scan makes of escapes, strings and brackets."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from sinal.protocol import (
    DEFAULT_LIMITS,
    Connect,
    Decoder,
    Encoding,
    ErrorCode,
    Heartbeat,
    ProtocolError,
    ProtocolLimits,
    Subscribe,
    decode,
)
from sinal.protocol.codec import unpack_options
from sinal.protocol.limits import scan_json

JSON = Encoding.JSON


def refused(data: bytes | str, encoding: Encoding = JSON) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode(data, encoding)
    return caught.value


def nested_json(levels: int) -> str:
    """A connect whose token is ``levels - 1`` arrays deep (the frame's map is level 1)."""
    return '{"event":"connect","token":' + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "}"


def test_nesting_is_measured_outside_strings_only() -> None:
    assert refused(nested_json(8)).code is ErrorCode.INVALID_MESSAGE  # 8 deep: allowed
    assert refused(nested_json(9)).code is ErrorCode.TOO_DEEP
    assert refused("[" * 9).code is ErrorCode.TOO_DEEP  # unclosed openers count
    assert refused("[" * 8).code is ErrorCode.BAD_FRAME
    assert refused("[]" * 40 + "[").code is ErrorCode.BAD_FRAME  # wide, not deep
    assert refused("[[],[[],[[],[[],[[],[[],[[],[[],[[]]]]]]]]]]").code is ErrorCode.TOO_DEEP
    tokens = [
        "[{" * 40,  # brackets in a string
        '\\"[[[[[[[[[[',  # an escaped quote does not end the string
        "\\\\",  # an escaped backslash ends with the string's own quote
        "a\\\\\\\"[[[[[[[[[[",  # backslash, backslash, escaped quote
        "\\u005b" * 20,  # "[" as escapes
    ]
    for token in tokens:
        frame = '{"event":"connect","token":"' + token + '"}'
        assert decode(frame, JSON) == Connect(json.loads(frame)["token"]), token
    frame = '{"event":"connect","token":"\\\\","ref":' + "[" * 9 + "1" + "]" * 9 + "}"
    assert refused(frame).code is ErrorCode.TOO_DEEP  # the string ended: these count


def test_the_scan_is_one_pass_over_strings_of_escapes() -> None:
    shape = scan_json(b'{"a":"\\ud83d\\ude00","b":12345678901234567890}', DEFAULT_LIMITS)
    assert shape.surrogate_escapes and shape.long_numbers
    shape = scan_json(b'{"a":"x","b":1234567890123456789}', DEFAULT_LIMITS)
    assert not shape.surrogate_escapes and not shape.long_numbers
    issue = "{" * 9 + '"' + '\\"' * 32_700  # issue #10's frame, 65,410 bytes
    assert refused(issue).code is ErrorCode.TOO_DEEP
    assert refused('"' + '\\"' * 32_700).code is ErrorCode.BAD_FRAME


def test_long_integer_literals_are_out_of_range_and_echo_the_ref() -> None:
    for literal in ("9" * 5000, "-" + "9" * 60_000, "12345678901234567890",
                    str(2**63), str(-(2**63) - 1)):
        frame = '{"event":"heartbeat","timestamp":' + literal + ',"ref":"r"}'
        error = refused(frame)
        assert (error.code, error.ref) == (ErrorCode.INVALID_MESSAGE, "r"), literal
    assert decode('{"event":"heartbeat","timestamp":9223372036854775807}', JSON) == Heartbeat(
        2**63 - 1)
    # a long run of digits inside a string is just text
    assert decode('{"event":"connect","token":"' + "9" * 500 + '"}', JSON) == Connect("9" * 500)


def test_lone_surrogates_in_keys_and_values_and_valid_pairs() -> None:
    assert refused('{"event":"connect","token":"\\udc00"}').code is ErrorCode.BAD_FRAME
    assert refused('{"event":"connect","\\ud800":1}').code is ErrorCode.BAD_FRAME
    assert refused('{"event":"connect","token":"\\ud800\\ud800"}').code is ErrorCode.BAD_FRAME
    assert decode('{"event":"connect","token":"\\ud83d\\ude00"}', JSON) == Connect("\U0001f600")
    assert refused('{"event":"connect","token":"\ud800"}').code is ErrorCode.BAD_FRAME  # raw


def test_json_maps_are_bounded_while_parsing() -> None:
    many = '{"event":"heartbeat",' + ",".join(f'"k{i}":1' for i in range(70)) + "}"
    assert refused(many).code is ErrorCode.FRAME_TOO_LARGE
    repeated = '{"event":"subscribe","events":["a"],"filters":{"a":1,"a":2}}'
    assert refused(repeated).code is ErrorCode.BAD_FRAME
    wide = '{"event":"subscribe","events":["a"],"filters":{"a":[' + ",".join("1" * 257) + "]}}"
    assert refused(wide).code is ErrorCode.FRAME_TOO_LARGE


def test_unpacker_limits_come_from_the_limits_and_the_frame_size() -> None:
    options = unpack_options(DEFAULT_LIMITS)
    assert (options["max_str_len"], options["max_bin_len"], options["max_ext_len"]) == (
        8192, 8192, 8192)
    assert (options["max_array_len"], options["max_map_len"]) == (256, 64)
    small = unpack_options(ProtocolLimits(max_frame_bytes=100))
    assert small["max_str_len"] == small["max_bin_len"] == small["max_array_len"] == 100
    assert small["max_map_len"] == 64


def test_extension_values_are_refused_where_met() -> None:
    for value in (msgpack.ExtType(5, b"x"), msgpack.ExtType(127, b"x" * 100)):
        frame = msgpack.packb({"event": "connect", "token": [1, value], "ref": "e"})
        assert refused(frame, Encoding.MSGPACK).code is ErrorCode.INVALID_MESSAGE
        with pytest.raises(ProtocolError) as caught:
            Decoder().feed(frame)
        assert caught.value.code is ErrorCode.INVALID_MESSAGE
    timestamp = msgpack.packb({"event": "connect", "token": msgpack.Timestamp(1, 0), "ref": "t"})
    error = refused(timestamp, Encoding.MSGPACK)
    assert (error.code, error.ref) == (ErrorCode.INVALID_MESSAGE, "t")
    many = b"\xdc\x01\x00" + b"\xd4\x05x" * 256  # an array of 256 extension values
    assert refused(many, Encoding.MSGPACK).code is ErrorCode.INVALID_MESSAGE


def test_out_of_range_values_in_msgpack_echo_the_ref() -> None:
    for value in (2**64 - 1, 2**63, float("nan"), float("-inf"), b"bin"):
        wire: dict[str, Any] = {"event": "subscribe", "events": ["a"],
                                "filters": {"a": [1, value]}, "ref": 7}
        error = refused(msgpack.packb(wire), Encoding.MSGPACK)
        assert (error.code, error.ref) == (ErrorCode.INVALID_MESSAGE, 7), value


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name.lower())
def test_filters_take_32_columns_as_documented(encoding: Encoding) -> None:
    def frame(columns: int) -> bytes | str:
        wire = {"event": "subscribe", "events": ["a"],
                "filters": {f"c{i}": i for i in range(columns)}}
        return bytes(msgpack.packb(wire)) if encoding.binary else json.dumps(wire)

    subscribe = decode(frame(32), encoding)
    assert isinstance(subscribe, Subscribe) and len(subscribe.filters) == 32
    assert refused(frame(33), encoding).code is ErrorCode.INVALID_FILTER
