"""Every documented error code is produced by some input; the docs match the code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from sinal.protocol import (
    CLIENT_MESSAGE_TYPES,
    CLOSE_CODES,
    ERRORS,
    MESSAGE_TYPES,
    CloseConnection,
    Connect,
    Encoding,
    ErrorCode,
    ProtocolError,
    SendError,
    ServerSession,
    Subscribe,
    Welcome,
    decode,
    decode_server,
    encode,
    encode_client,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
WELCOME = Welcome("s", 0, 30_000, 60_000, "u", "admin")


def packed(value: object) -> bytes:
    return bytes(msgpack.packb(value))


# Inputs that the decoder alone refuses, one per code.
DECODER_INPUTS: dict[ErrorCode, bytes] = {
    ErrorCode.BAD_FRAME: b"\xc1",
    ErrorCode.FRAME_TOO_LARGE: packed({"event": "connect", "token": "t" * 70_000}),
    ErrorCode.TOO_DEEP: packed({"event": "connect", "token": [[[[[[[[["t"]]]]]]]]]}),
    ErrorCode.UNKNOWN_EVENT: packed({"event": "welcome", "sessionId": "s"}),
    ErrorCode.INVALID_MESSAGE: packed({"event": "subscribe", "events": []}),
    ErrorCode.INVALID_FILTER: packed(
        {"event": "subscribe", "events": ["a"], "filters": {"status": {"in": [1]}}}
    ),
}


@pytest.mark.parametrize("code", list(DECODER_INPUTS), ids=str)
def test_decoder_inputs_give_their_code(code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(DECODER_INPUTS[code])
    assert caught.value.code is code
    assert caught.value.close_code == ERRORS[code].close_code


def opened() -> ServerSession:
    session = ServerSession()
    session.receive(encode_client(Connect("tok")))
    session.accept(WELCOME)
    return session


def not_authenticated() -> SendError | CloseConnection | None:
    outcome = ServerSession().receive(encode_client(Subscribe(("a",))))
    assert isinstance(outcome, SendError | CloseConnection)
    return outcome


def already_authenticated() -> SendError | CloseConnection | None:
    outcome = opened().receive(encode_client(Connect("again")))
    assert isinstance(outcome, SendError | CloseConnection)
    return outcome


SESSION_INPUTS: dict[ErrorCode, Callable[[], SendError | CloseConnection | None]] = {
    ErrorCode.NOT_AUTHENTICATED: not_authenticated,
    ErrorCode.ALREADY_AUTHENTICATED: already_authenticated,
}


@pytest.mark.parametrize("code", list(SESSION_INPUTS), ids=str)
def test_session_order_errors(code: ErrorCode) -> None:
    outcome = SESSION_INPUTS[code]()
    assert isinstance(outcome, CloseConnection if ERRORS[code].closes else SendError)
    assert outcome.error.code == code
    assert decode_server(outcome.frame) == outcome.error


# Codes whose verdict belongs to the connection actor (authentication, authorisation,
# timers, flow control, the pool); the session turns each verdict into frame and close.
ACTOR_VERDICTS = set(ErrorCode) - set(DECODER_INPUTS) - set(SESSION_INPUTS)


@pytest.mark.parametrize("code", sorted(ACTOR_VERDICTS), ids=str)
def test_actor_verdicts_follow_the_table(code: ErrorCode) -> None:
    outcome = opened().fail(code, "verdict", ref="r1")
    spec = ERRORS[code]
    if spec.closes:
        assert isinstance(outcome, CloseConnection)
        assert (outcome.close_code, outcome.reason) == (spec.close_code, code.value)
    else:
        assert isinstance(outcome, SendError)
    assert decode_server(outcome.frame) == outcome.error
    assert (outcome.error.code, outcome.error.ref) == (code.value, "r1")
    forced = opened().close(code)
    assert forced.close_code == spec.close_code


def test_every_code_is_covered_by_some_input() -> None:
    assert set(DECODER_INPUTS) | set(SESSION_INPUTS) | ACTOR_VERDICTS == set(ErrorCode)
    assert {"auth_failed", "forbidden", "slow_consumer", "pool_full"} <= ACTOR_VERDICTS


def test_close_codes_are_unique_and_in_the_private_range() -> None:
    assert len(CLOSE_CODES) == len(ERRORS)
    assert all(4000 <= close <= 4999 for close in CLOSE_CODES)
    assert all(CLOSE_CODES[spec.close_code] is code for code, spec in ERRORS.items())


def test_the_docs_error_table_is_the_code_table() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| (\d{4}) \| (closes|stays open) \| ([^|]+) \| ([^|]+) \|$",
        DOCS.read_text(encoding="utf-8"),
        re.M,
    )
    documented = {
        code: (int(close), verdict == "closes", meaning.strip(), action.strip())
        for code, close, verdict, meaning, action in rows
    }
    expected = {
        code.value: (spec.close_code, spec.closes, spec.description, spec.client_action)
        for code, spec in ERRORS.items()
    }
    assert documented == expected


def doc_examples() -> list[tuple[bytes, str]]:
    text = DOCS.read_text(encoding="utf-8")
    pairs = re.findall(r"```hex\n(.*?)```\n```json\n(.*?)```", text, re.S)
    return [(bytes.fromhex(hex_text), json_text.strip()) for hex_text, json_text in pairs]


def test_the_docs_show_every_message_in_both_encodings() -> None:
    examples = doc_examples()
    tags = {msgpack.unpackb(frame)["event"] for frame, _ in examples}
    assert tags == set(MESSAGE_TYPES)


@pytest.mark.parametrize("frame,text", doc_examples(), ids=lambda v: "")
def test_docs_examples_are_what_the_codec_reads_and_writes(frame: bytes, text: str) -> None:
    assert msgpack.unpackb(frame) == json.loads(text)
    if json.loads(text)["event"] in CLIENT_MESSAGE_TYPES:
        message = decode(frame)
        assert decode(text, Encoding.JSON) == message
        assert encode_client(message) == frame
        assert encode_client(message, Encoding.JSON).decode("utf-8") == text
    else:
        reply = decode_server(frame)
        assert decode_server(text, Encoding.JSON) == reply
        assert encode(reply) == frame
        assert encode(reply, Encoding.JSON).decode("utf-8") == text
