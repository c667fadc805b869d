"""The incremental decoder gives the same messages whatever the split of the stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinal.protocol import (
    ClientMessage,
    Connect,
    Decoder,
    Encoding,
    ErrorCode,
    Heartbeat,
    ProtocolLimits,
    StreamDecodeError,
    Subscribe,
    Unsubscribe,
    decode,
    encode_client,
)
from tests.protocol.protocol_strategies import client_messages

ENCODINGS = pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)

SAMPLE: list[ClientMessage] = [
    Connect(token="eyJhbGciOiJIUzI1NiJ9.e30.sig", user_id="u-1", ref=1),
    Subscribe(
        events=("purchase_request_changed", "quotation_changed"),
        filters={"status": ("pending_a1", "pending_a2"), "department_id": 7, "urgent": True},
        since={"purchase_request_changed": 1041},
        ref="sub-1",
    ),
    Heartbeat(timestamp=1_705_314_600_000),
    Heartbeat(timestamp=1.5),
    Unsubscribe(events=("quotation_changed",), ref="ação-✓"),
]


def stream_of(messages: list[ClientMessage], encoding: Encoding) -> bytes:
    frames = [encode_client(message, encoding) for message in messages]
    return (
        b"".join(frame + b"\n" for frame in frames)
        if encoding is Encoding.JSON
        else b"".join(frames)
    )


@ENCODINGS
def test_every_split_point_gives_the_same_messages(encoding: Encoding) -> None:
    stream = stream_of(SAMPLE, encoding)
    for split in range(len(stream) + 1):
        decoder = Decoder(encoding)
        got = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert got == SAMPLE, split
        assert decoder.buffered == 0


@ENCODINGS
def test_one_byte_at_a_time(encoding: Encoding) -> None:
    stream = stream_of(SAMPLE, encoding)
    decoder = Decoder(encoding)
    got: list[ClientMessage] = []
    for index in range(len(stream)):
        got += decoder.feed(stream[index : index + 1])
    assert got == SAMPLE


@ENCODINGS
@settings(max_examples=60)
@given(
    messages=st.lists(client_messages, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=5),
)
def test_random_messages_at_random_splits(
    encoding: Encoding, messages: list[ClientMessage], cuts: list[int]
) -> None:
    stream = stream_of(messages, encoding)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    decoder = Decoder(encoding)
    got: list[ClientMessage] = []
    for start, end in zip(points, points[1:], strict=False):
        got += decoder.feed(stream[start:end])
    assert got == messages
    expected = [decode(encode_client(message, encoding), encoding) for message in messages]
    assert got == expected


def test_json_stream_skips_blank_lines_and_accepts_crlf() -> None:
    decoder = Decoder(Encoding.JSON)
    got = decoder.feed(b'\n\r\n  \n{"event":"heartbeat","timestamp":5}\r\n\n')
    assert got == [Heartbeat(5)]


@ENCODINGS
def test_a_bad_message_is_reported_and_the_stream_goes_on(encoding: Encoding) -> None:
    if encoding is Encoding.JSON:
        bad = b'{"event":"heartbeat","timestamp":true,"ref":"r9"}\n'
    else:
        bad = bytes.fromhex("83") + b"\xa5event\xa9heartbeat\xa9timestamp\xc3\xa3ref\xa2r9"
    stream = stream_of(SAMPLE[:2], encoding) + bad + stream_of(SAMPLE[2:], encoding)
    decoder = Decoder(encoding)
    with pytest.raises(StreamDecodeError) as caught:
        decoder.feed(stream)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    assert caught.value.ref == "r9"
    assert caught.value.decoded == SAMPLE[:2]
    assert decoder.feed(b"") == SAMPLE[2:]


def test_undecodable_bytes_break_the_msgpack_stream() -> None:
    decoder = Decoder(Encoding.MSGPACK)
    with pytest.raises(StreamDecodeError) as caught:
        decoder.feed(encode_client(Heartbeat(1)) + b"\xc1" + encode_client(Heartbeat(2)))
    assert caught.value.code is ErrorCode.BAD_FRAME
    assert caught.value.decoded == [Heartbeat(1)]
    with pytest.raises(StreamDecodeError) as again:
        decoder.feed(encode_client(Heartbeat(3)))
    assert again.value.code is ErrorCode.BAD_FRAME
    assert again.value.decoded == []


@ENCODINGS
def test_a_frame_above_the_limit_is_refused_before_it_is_complete(encoding: Encoding) -> None:
    limits = ProtocolLimits(max_frame_bytes=100)
    decoder = Decoder(encoding, limits)
    big = encode_client(Connect(token="x" * 200), encoding)
    with pytest.raises(StreamDecodeError) as caught:
        for index in range(0, len(big), 10):
            decoder.feed(big[index : index + 10])
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered <= limits.max_frame_bytes + 10


@ENCODINGS
def test_frames_exactly_at_the_limit_pass(encoding: Encoding) -> None:
    frame = encode_client(Connect(token="t" * 50), encoding)
    limits = ProtocolLimits(max_frame_bytes=len(frame))
    decoder = Decoder(encoding, limits)
    stream = (frame + b"\n") * 3 if encoding is Encoding.JSON else frame * 3
    assert decoder.feed(stream) == [Connect(token="t" * 50)] * 3
