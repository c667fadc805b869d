"""Every message survives encode -> decode in both encodings, in its direction(s)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinal.protocol import (
    CLIENT_MESSAGE_TYPES,
    MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    ClientMessage,
    DataUpdate,
    Encoding,
    Heartbeat,
    ServerMessage,
    Subscribe,
    decode,
    decode_server,
    encode,
    encode_client,
    encode_payload,
    to_wire,
)
from tests.protocol.protocol_strategies import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    client_messages,
    server_messages,
)

ENCODINGS = pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)


def test_every_tag_has_a_strategy_in_its_direction() -> None:
    assert set(CLIENT_MESSAGES) == set(CLIENT_MESSAGE_TYPES.values())
    assert set(SERVER_MESSAGES) == set(SERVER_MESSAGE_TYPES.values())
    assert set(CLIENT_MESSAGES) | set(SERVER_MESSAGES) == set(MESSAGE_TYPES.values())


@ENCODINGS
@settings(max_examples=150)
@given(message=client_messages)
def test_client_messages_round_trip(encoding: Encoding, message: ClientMessage) -> None:
    frame = encode_client(message, encoding)
    decoded = decode(frame, encoding)
    assert decoded == message
    assert type(decoded) is type(message)
    # byte-exact re-encoding catches what == hides (True == 1, 1.0 == 1)
    assert encode_client(decoded, encoding) == frame


@ENCODINGS
@settings(max_examples=150)
@given(message=server_messages)
def test_server_messages_round_trip(encoding: Encoding, message: ServerMessage) -> None:
    frame = encode(message, encoding)
    decoded = decode_server(frame, encoding)
    assert decoded == message
    assert type(decoded) is type(message)
    assert encode(decoded, encoding) == frame


@given(message=client_messages | server_messages)
def test_both_encodings_carry_the_same_shape(message: Any) -> None:
    from_msgpack = msgpack.unpackb(encode_payload(to_wire(message), Encoding.MSGPACK))
    from_json = json.loads(encode_payload(to_wire(message), Encoding.JSON))
    assert from_msgpack == from_json
    assert from_json["event"] == next(t for t, c in MESSAGE_TYPES.items() if c is type(message))


@given(message=st.sampled_from([Heartbeat(0), Heartbeat(1.5, ref="h")]))
def test_heartbeat_goes_both_ways(message: Heartbeat) -> None:
    for encoding in Encoding:
        assert decode(encode(message, encoding), encoding) == message
        assert decode_server(encode_client(message, encoding), encoding) == message


def test_encodings_use_binary_and_text_frames() -> None:
    update = DataUpdate("quotation_changed", "insert", 7, {"id": 7}, {}, 12, "2024-01-15T10:30:00Z")
    packed = encode(update, Encoding.MSGPACK)
    text = encode(update, Encoding.JSON)
    assert Encoding.MSGPACK.binary and not Encoding.JSON.binary
    assert packed[0] == 0x88  # a fixmap of 8 entries: event + 7 fields
    assert text.decode("utf-8").startswith('{"event":"data_update","type":"quotation_changed"')
    assert decode_server(text.decode("utf-8"), Encoding.JSON) == update


def test_optional_fields_are_left_out_and_null_reads_as_absent() -> None:
    assert to_wire(Subscribe(("a",))) == {"event": "subscribe", "events": ("a",)}
    frame = b'{"event":"subscribe","events":["a"],"filters":null,"since":null,"ref":null}'
    assert decode(frame, Encoding.JSON) == Subscribe(("a",))


def test_encode_payload_is_the_fast_path_of_encode() -> None:
    update = DataUpdate(
        "t", "update", "x", {"id": "x", "n": 1}, {"n": 1}, 5, "2024-01-01T00:00:00Z"
    )
    for encoding in Encoding:
        assert encode_payload(to_wire(update), encoding) == encode(update, encoding)
