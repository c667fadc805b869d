"""The dashboard's messages: round trips in both encodings, and the codec's checks of their
fields (a client reads them strictly; a client may not send them)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinal.protocol import (
    DashboardSnapshot,
    DashboardUpdate,
    Encoding,
    ErrorCode,
    ProtocolError,
    decode,
    decode_server,
    encode,
)
from tests.protocol.protocol_strategies import SERVER_MESSAGES

SNAPSHOT = DashboardSnapshot(offset=1057, today="2026-11-30", window="7d", aggregates={
    "requestsByStatus": {"pending_a1": 3}, "requestsByDepartment": {
        "d": {"approved": {"count": 2, "amount": "1234.50"}}},
    "averageWaitByLevel": {"1": {"decisions": 4, "averageSeconds": 61.25}}, "lateOrders": 0})
UPDATE = DashboardUpdate(offset=1061, today="2026-11-30", aggregates={"lateOrders": 2})


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("message", [SNAPSHOT, UPDATE])
def test_examples_round_trip(message: Any, encoding: Encoding) -> None:
    assert decode_server(encode(message, encoding), encoding) == message


@given(message=st.one_of(SERVER_MESSAGES[DashboardSnapshot], SERVER_MESSAGES[DashboardUpdate]),
       encoding=st.sampled_from(list(Encoding)))
def test_any_dashboard_message_round_trips(message: Any, encoding: Encoding) -> None:
    assert decode_server(encode(message, encoding), encoding) == message


def wire(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(encode(message, Encoding.JSON))
    return out


@pytest.mark.parametrize("change", [
    {"offset": -1}, {"offset": True}, {"offset": "1"}, {"today": 20261130},
    {"today": "2026-11-30T00:00"}, {"aggregates": []}, {"aggregates": None},
    {"window": 7}, {"extra": 1},
])
def test_a_bad_field_is_invalid_message(change: dict[str, Any]) -> None:
    frame = {**wire(SNAPSHOT), **change}
    with pytest.raises(ProtocolError) as caught:
        decode_server(msgpack.packb(frame))
    assert caught.value.code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("missing", ["offset", "today", "aggregates"])
def test_a_missing_field_is_invalid_message(missing: str) -> None:
    for message in (SNAPSHOT, UPDATE):
        frame = wire(message)
        del frame[missing]
        with pytest.raises(ProtocolError) as caught:
            decode_server(json.dumps(frame), Encoding.JSON)
        assert caught.value.code == ErrorCode.INVALID_MESSAGE
    frame = wire(SNAPSHOT)
    del frame["window"]  # the snapshot's window is required too
    with pytest.raises(ProtocolError):
        decode_server(json.dumps(frame), Encoding.JSON)


def test_an_update_has_no_window() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_server(json.dumps({**wire(UPDATE), "window": "7d"}), Encoding.JSON)
    assert caught.value.code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("message", [SNAPSHOT, UPDATE])
def test_a_client_may_not_send_them(message: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(encode(message))
    assert caught.value.code == ErrorCode.UNKNOWN_EVENT
