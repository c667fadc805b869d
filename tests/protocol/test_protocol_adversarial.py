"""Random and hostile input never raises anything but ProtocolError."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinal.protocol import (
    MESSAGE_TYPES,
    Decoder,
    Encoding,
    ErrorCode,
    ProtocolError,
    ServerSession,
    decode,
    decode_server,
    encode_client,
    encode_payload,
    to_wire,
)
from sinal.protocol.messages import WIRE_FIELDS
from tests.protocol.protocol_strategies import client_messages, server_messages

ENCODINGS = pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)
WIRE_KEYS = sorted({spec.key for specs in WIRE_FIELDS.values() for spec in specs} | {"event"})


def only_protocol_errors(data: bytes | str, encoding: Encoding) -> None:
    for decode_one in (decode, decode_server):
        try:
            decode_one(data, encoding)
        except ProtocolError as error:
            assert isinstance(error.code, ErrorCode)
    if isinstance(data, bytes):
        try:
            Decoder(encoding).feed(data)
        except ProtocolError:
            pass
    session = ServerSession(encoding)
    session.receive(data)


@ENCODINGS
@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_random_bytes(encoding: Encoding, data: bytes) -> None:
    only_protocol_errors(data, encoding)


@settings(max_examples=150)
@given(text=st.text(max_size=200))
def test_random_text_in_json(text: str) -> None:
    only_protocol_errors(text, Encoding.JSON)
    only_protocol_errors(text.encode("utf-8", "surrogatepass"), Encoding.JSON)


# Wire-like maps: real tags and field names with values of any type, including what
# neither encoding should let through (bytes, NaN, huge ints, bool for int).
HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 + 5),
    st.floats(),
    st.text(max_size=70),
    st.binary(max_size=8),
)
HOSTILE_VALUES: st.SearchStrategy[Any] = st.recursive(
    HOSTILE_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(WIRE_KEYS) | st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)
HOSTILE_MAPS = st.fixed_dictionaries(
    {"event": st.sampled_from(sorted(MESSAGE_TYPES)) | HOSTILE_SCALARS},
).flatmap(
    lambda base: st.dictionaries(st.sampled_from(WIRE_KEYS), HOSTILE_VALUES, max_size=6).map(
        lambda rest: {**rest, **base}
    )
)


def pack_loosely(value: Any, encoding: Encoding) -> bytes | None:
    try:
        if encoding is Encoding.MSGPACK:
            return bytes(msgpack.packb(value))
        return json.dumps(value, default=lambda b: b.hex()).encode("utf-8")
    except (OverflowError, ValueError, TypeError):
        return None


@ENCODINGS
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(wire=HOSTILE_MAPS)
def test_wire_maps_with_hostile_values(encoding: Encoding, wire: dict[str, Any]) -> None:
    frame = pack_loosely(wire, encoding)
    if frame is not None:
        only_protocol_errors(frame, encoding)


@ENCODINGS
@settings(max_examples=200)
@given(
    message=client_messages | server_messages,
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
)
def test_mutated_valid_frames(
    encoding: Encoding, message: Any, edits: list[tuple[int, int]], cut: int
) -> None:
    frame = bytearray(encode_payload(to_wire(message), encoding))
    for position, byte in edits:
        frame[position % len(frame)] = byte
    only_protocol_errors(bytes(frame), encoding)
    only_protocol_errors(bytes(frame[: cut % (len(frame) + 1)]), encoding)


def code_of(data: bytes | str, encoding: Encoding = Encoding.MSGPACK) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        decode(data, encoding)
    return caught.value.code


def test_deep_nesting() -> None:
    assert code_of(b"\x91" * 60_000 + b"\x01") is ErrorCode.TOO_DEEP
    assert code_of(b"\x81\xa1a" * 20_000 + b"\x01") is ErrorCode.TOO_DEEP
    assert code_of("[" * 30_000 + "]" * 30_000, Encoding.JSON) is ErrorCode.TOO_DEEP
    assert code_of('{"a":' * 9 + "1" + "}" * 9, Encoding.JSON) is ErrorCode.TOO_DEEP
    # brackets inside strings are not nesting
    frame = '{"event":"connect","token":"' + "[{" * 40 + '"}'
    assert decode(frame, Encoding.JSON).token == "[{" * 40  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "header",
    [
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32
        b"\xdd\xff\xff\xff\xff",  # array32
        b"\xdf\xff\xff\xff\xff",  # map32
        b"\xc9\xff\xff\xff\xff\x05",  # ext32
        b"\x81\xa5event\xdb\x7f\xff\xff\xff",
    ],
)
def test_huge_length_headers(header: bytes) -> None:
    assert code_of(header + b"abc") in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)
    with pytest.raises(ProtocolError):
        Decoder().feed(header + b"abc" * 30_000)


def test_lengths_within_the_frame_but_above_the_limits() -> None:
    long_token = {"event": "connect", "token": "x" * 9000}
    assert code_of(msgpack.packb(long_token)) is ErrorCode.FRAME_TOO_LARGE
    assert code_of(json.dumps(long_token), Encoding.JSON) is ErrorCode.FRAME_TOO_LARGE
    many = {"event": "subscribe", "events": ["t"] * 300}
    assert code_of(msgpack.packb(many)) is ErrorCode.FRAME_TOO_LARGE
    assert code_of(json.dumps(many), Encoding.JSON) is ErrorCode.FRAME_TOO_LARGE


def test_bad_utf8_and_lone_surrogates() -> None:
    assert code_of(b"\x82\xa5event\xa2\xff\xfe\xa1a\x01") is ErrorCode.BAD_FRAME
    assert code_of(b'{"event":"\xff"}', Encoding.JSON) is ErrorCode.BAD_FRAME
    assert code_of('{"event":"connect","token":"\\ud800"}', Encoding.JSON) is ErrorCode.BAD_FRAME
    assert code_of("\ufeff{}", Encoding.JSON) is ErrorCode.BAD_FRAME  # BOM


def test_nan_infinity_and_out_of_range_integers() -> None:
    for timestamp in (math.nan, math.inf, -math.inf):
        frame = msgpack.packb({"event": "heartbeat", "timestamp": timestamp})
        assert code_of(frame) is ErrorCode.INVALID_MESSAGE
    for literal in ("NaN", "Infinity", "-Infinity", "1e999", str(2**63), str(-(2**63) - 1)):
        frame = '{"event":"heartbeat","timestamp":' + literal + "}"
        assert code_of(frame, Encoding.JSON) is ErrorCode.INVALID_MESSAGE
    assert code_of('{"event":"heartbeat","timestamp":' + "9" * 5000 + "}", Encoding.JSON) in (
        ErrorCode.BAD_FRAME,
        ErrorCode.INVALID_MESSAGE,
    )
    huge = msgpack.packb({"event": "heartbeat", "timestamp": 2**64 - 1})
    assert code_of(huge) is ErrorCode.INVALID_MESSAGE
    unsigned = {"event": "subscribe", "events": ["a"], "filters": {"n": 2**63}}
    assert code_of(msgpack.packb(unsigned)) is ErrorCode.INVALID_MESSAGE


def test_bool_is_not_int_and_int_is_not_bool() -> None:
    assert code_of(msgpack.packb({"event": "heartbeat", "timestamp": True})) is (
        ErrorCode.INVALID_MESSAGE
    )
    frame = msgpack.packb({"event": "subscribe", "events": ["a"], "since": {"a": False}})
    assert code_of(frame) is ErrorCode.INVALID_MESSAGE
    assert code_of(msgpack.packb({"event": "connect", "token": "t", "ref": True})) is (
        ErrorCode.INVALID_MESSAGE
    )
    notification = {
        "event": "notification",
        "id": 1,
        "message": "m",
        "type": "k",
        "action": None,
        "timestamp": "t",
        "sound": 1,
    }
    with pytest.raises(ProtocolError) as caught:
        decode_server(msgpack.packb(notification))
    assert caught.value.code is ErrorCode.INVALID_MESSAGE


def test_extra_and_missing_keys_and_non_map_frames() -> None:
    extra = {"event": "heartbeat", "timestamp": 1, "extra": 1, "ref": "r"}
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(extra))
    assert (caught.value.code, caught.value.ref) == (ErrorCode.INVALID_MESSAGE, "r")
    assert code_of(msgpack.packb({"event": "heartbeat"})) is ErrorCode.INVALID_MESSAGE
    assert code_of(msgpack.packb({"timestamp": 1})) is ErrorCode.INVALID_MESSAGE
    assert code_of(msgpack.packb([1, 2])) is ErrorCode.INVALID_MESSAGE
    assert code_of(msgpack.packb("connect")) is ErrorCode.INVALID_MESSAGE
    assert code_of(msgpack.packb({"event": 3})) is ErrorCode.INVALID_MESSAGE


def test_binary_extension_and_timestamp_values_are_refused() -> None:
    for value in (b"tok", msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0)):
        frame = msgpack.packb({"event": "connect", "token": value})
        assert code_of(frame) is ErrorCode.INVALID_MESSAGE
    assert code_of(b"\x82\xc4\x05event\xa1x\xa5token\xa1t") is ErrorCode.INVALID_MESSAGE


def test_duplicate_keys_and_trailing_bytes() -> None:
    assert code_of(b"\x82\xa5event\xa1x\xa5event\xa1y") is ErrorCode.BAD_FRAME
    assert code_of('{"event":"heartbeat","event":"heartbeat","timestamp":1}', Encoding.JSON) is (
        ErrorCode.BAD_FRAME
    )
    good = encode_client(decode(msgpack.packb({"event": "heartbeat", "timestamp": 1})))
    assert code_of(good + b"\x00") is ErrorCode.BAD_FRAME
    assert code_of('{"event":"heartbeat","timestamp":1} x', Encoding.JSON) is ErrorCode.BAD_FRAME


def test_a_text_frame_on_a_msgpack_session_is_a_bad_frame() -> None:
    assert code_of('{"event":"heartbeat","timestamp":1}') is ErrorCode.BAD_FRAME
