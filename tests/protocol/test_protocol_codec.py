"""Subprotocol choice, limits and the codec's input types."""

from __future__ import annotations

import msgpack
import pytest

from sinal.protocol import (
    DEFAULT_LIMITS,
    DataUpdate,
    Encoding,
    ErrorCode,
    Heartbeat,
    ProtocolError,
    ProtocolLimits,
    choose_subprotocol,
    decode,
    encode,
    encode_client,
    encode_payload,
)


@pytest.mark.parametrize(
    "offered,chosen",
    [
        ([], Encoding.MSGPACK),
        (["sinal.json.v1"], Encoding.JSON),
        (["sinal.msgpack.v1"], Encoding.MSGPACK),
        (["chat", "sinal.json.v1", "sinal.msgpack.v1"], Encoding.JSON),
        (["sinal.msgpack.v1, sinal.json.v1"], Encoding.MSGPACK),  # one header value
        (["sinal.json.v2", "chat"], None),
        ([" , "], Encoding.MSGPACK),
    ],
)
def test_choose_subprotocol(offered: list[str], chosen: Encoding | None) -> None:
    assert choose_subprotocol(offered) is chosen


def test_subprotocol_names() -> None:
    assert Encoding.MSGPACK.subprotocol == "sinal.msgpack.v1"
    assert Encoding.JSON.subprotocol == "sinal.json.v1"


def test_limits_are_configurable_and_checked() -> None:
    frame = encode_client(Heartbeat(1))
    assert decode(frame, limits=ProtocolLimits(max_frame_bytes=len(frame))) == Heartbeat(1)
    with pytest.raises(ProtocolError) as caught:
        decode(frame, limits=ProtocolLimits(max_frame_bytes=len(frame) - 1))
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError) as caught:
        decode(frame, limits=ProtocolLimits(max_depth=1, max_map_len=1))
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    for bad in ({"max_depth": 0}, {"max_depth": 65}, {"max_frame_bytes": 0}):
        with pytest.raises(ValueError):
            ProtocolLimits(**bad)
    assert DEFAULT_LIMITS.max_frame_bytes == 65_536 and DEFAULT_LIMITS.max_depth == 8


def test_string_limits_count_utf8_bytes_in_both_encodings() -> None:
    limits = ProtocolLimits(max_string_bytes=10)
    fits, too_long = "ação!", "açãoação"  # 7 and 12 bytes of UTF-8
    for encoding in Encoding:
        assert decode(encode_client(Heartbeat(1, ref=fits), encoding), encoding, limits)
        with pytest.raises(ProtocolError) as caught:
            decode(encode_client(Heartbeat(1, ref=too_long), encoding), encoding, limits)
        assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


def test_decode_takes_bytes_bytearray_memoryview_and_text_for_json() -> None:
    frame = encode_client(Heartbeat(7))
    for data in (frame, bytearray(frame), memoryview(frame)):
        assert decode(data) == Heartbeat(7)
    text = encode_client(Heartbeat(7), Encoding.JSON)
    assert decode(text.decode("utf-8"), Encoding.JSON) == Heartbeat(7)
    assert decode(memoryview(text), Encoding.JSON) == Heartbeat(7)


def test_server_encode_does_not_validate() -> None:
    # the hot path trusts its caller: whatever the dataclass holds is written
    odd = DataUpdate("t", "upsert", "", {}, {}, -1, "")  # type: ignore[arg-type]
    assert msgpack.unpackb(encode(odd))["op"] == "upsert"


def test_encode_payload_writes_a_prebuilt_map_once_for_every_socket() -> None:
    payload = {"event": "heartbeat", "timestamp": 5}
    frame = encode_payload(payload)
    assert frame == encode(Heartbeat(5)) == encode_payload(dict(payload))
    assert encode_payload(payload, Encoding.JSON) == b'{"event":"heartbeat","timestamp":5}'


def test_json_text_is_measured_in_utf8_bytes() -> None:
    emoji = "\U0001f600" * 20_000  # 20,000 characters, 80,000 bytes
    with pytest.raises(ProtocolError) as caught:
        decode('{"event":"connect","token":"' + emoji + '"}', Encoding.JSON)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
