"""The server session's state machine: order of messages and the error policy."""

from __future__ import annotations

import pytest

from sinal.protocol import (
    ClientMessage,
    CloseConnection,
    Connect,
    Encoding,
    ErrorCode,
    Heartbeat,
    SendError,
    ServerSession,
    SessionState,
    SessionUsageError,
    Subscribe,
    Subscribed,
    Welcome,
    decode_server,
    encode_client,
)

WELCOME = Welcome("s-1", 1_705_314_600_000, 30_000, 60_000, "u-1", "requester")
ENCODINGS = pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)


def state_of(session: ServerSession) -> SessionState:
    return session.state  # a call, so that type checkers do not pin the state


def message(client_message: ClientMessage, encoding: Encoding = Encoding.MSGPACK) -> bytes | str:
    """The WebSocket message a client sends: binary for MessagePack, text for JSON."""
    frame = encode_client(client_message, encoding)
    return frame if encoding.binary else frame.decode("utf-8")


def opened(encoding: Encoding = Encoding.MSGPACK) -> ServerSession:
    session = ServerSession(encoding)
    assert session.receive(message(Connect("tok"), encoding)) == Connect("tok")
    assert session.connect_pending
    frame = session.accept(WELCOME)
    assert decode_server(frame, encoding) == WELCOME
    assert session.state is SessionState.OPEN
    return session


@ENCODINGS
def test_connect_then_welcome_opens_the_session(encoding: Encoding) -> None:
    session = opened(encoding)
    subscribe = Subscribe(("quotation_changed",), ref=3)
    assert session.receive(message(subscribe, encoding)) == subscribe
    frame = session.send(Subscribed(("quotation_changed",), {"quotation_changed": 10}, ref=3))
    assert decode_server(frame, encoding) == Subscribed(
        ("quotation_changed",), {"quotation_changed": 10}, ref=3
    )


def test_anything_before_connect_closes_with_not_authenticated() -> None:
    session = ServerSession()
    outcome = session.receive(encode_client(Subscribe(("a",), ref="early")))
    assert isinstance(outcome, CloseConnection)
    assert (outcome.error.code, outcome.close_code, outcome.reason) == (
        "not_authenticated",
        4100,
        "not_authenticated",
    )
    assert outcome.error.ref == "early"
    assert decode_server(outcome.frame) == outcome.error
    assert session.state is SessionState.CLOSING
    assert session.receive(encode_client(Connect("tok"))) is None  # late frames dropped
    session.closed()
    assert state_of(session) is SessionState.CLOSED
    assert session.receive(b"\xc1") is None


def test_a_bad_frame_before_connect_closes_even_if_it_would_not_later() -> None:
    session = ServerSession()
    outcome = session.receive(encode_client(Heartbeat(True)))  # bool timestamp: invalid
    assert isinstance(outcome, CloseConnection)
    assert (outcome.error.code, outcome.close_code) == ("invalid_message", 4004)


def test_second_connect_is_refused_but_keeps_the_session() -> None:
    session = opened()
    outcome = session.receive(encode_client(Connect("again", ref="c2")))
    assert isinstance(outcome, SendError)
    assert (outcome.error.code, outcome.error.ref) == ("already_authenticated", "c2")
    assert session.state is SessionState.OPEN


def test_a_connect_while_one_is_being_authenticated_closes() -> None:
    session = ServerSession()
    assert session.receive(encode_client(Connect("one"))) == Connect("one")
    outcome = session.receive(encode_client(Connect("two")))
    assert isinstance(outcome, CloseConnection)  # before welcome every error closes
    assert (outcome.error.code, outcome.close_code) == ("already_authenticated", 4101)
    assert session.state is SessionState.CLOSING
    with pytest.raises(SessionUsageError):
        session.accept(WELCOME)


def test_frames_pipelined_after_connect_are_fine_once_accepted() -> None:
    session = ServerSession()
    stream = [encode_client(Connect("tok")), encode_client(Subscribe(("a",), ref=1))]
    assert session.receive(stream[0]) == Connect("tok")
    session.accept(WELCOME)  # the actor answers connect before reading the next frame
    assert session.receive(stream[1]) == Subscribe(("a",), ref=1)


def test_open_session_keeps_going_after_message_errors_and_closes_on_frame_errors() -> None:
    session = opened()
    outcome = session.receive(b"\x81\xa5event\xa4nope")
    assert isinstance(outcome, SendError)
    assert outcome.error.code == "unknown_event"
    assert session.state is SessionState.OPEN
    outcome = session.receive(b"\xc1")
    assert isinstance(outcome, CloseConnection)
    assert (outcome.error.code, outcome.close_code) == ("bad_frame", 4000)
    assert state_of(session) is SessionState.CLOSING


def test_failed_authentication_closes() -> None:
    session = ServerSession()
    session.receive(encode_client(Connect("forged", ref=9)))
    outcome = session.fail(ErrorCode.AUTH_FAILED, "invalid token signature", ref=9)
    assert isinstance(outcome, CloseConnection)
    assert (outcome.close_code, outcome.error.ref) == (4102, 9)
    with pytest.raises(SessionUsageError):
        session.accept(WELCOME)


def test_authorisation_errors_keep_the_session_open() -> None:
    session = opened()
    for code in ("forbidden", "unknown_topic", "invalid_filter", "rate_limited"):
        outcome = session.fail(code, "no", ref="r")
        assert isinstance(outcome, SendError), code
        assert decode_server(outcome.frame).code == code  # type: ignore[attr-defined]
    assert session.state is SessionState.OPEN


def test_close_forces_a_close_whatever_the_table_says() -> None:
    session = opened(Encoding.JSON)
    outcome = session.close("rate_limited")
    assert outcome.close_code == 4300
    assert outcome.frame.startswith(b'{"event":"error","code":"rate_limited"')
    with pytest.raises(SessionUsageError):
        session.close("server_shutdown")
    with pytest.raises(SessionUsageError):
        session.send(Heartbeat(1))


def test_local_misuse_is_a_usage_error() -> None:
    session = ServerSession()
    with pytest.raises(SessionUsageError):
        session.accept(WELCOME)  # no connect yet
    with pytest.raises(SessionUsageError):
        session.send(Heartbeat(1))  # not open
    session = opened()
    with pytest.raises(SessionUsageError):
        session.send(WELCOME)
    with pytest.raises(ValueError):
        session.fail("no_such_code", "x")


@ENCODINGS
def test_a_message_of_the_other_websocket_type_is_a_bad_frame(encoding: Encoding) -> None:
    """MessagePack frames are binary messages, JSON frames text messages (docs/protocol.md
    section 1); the other type closes with bad_frame (4000), before and after welcome."""
    other: bytes | str
    for session in (ServerSession(encoding), opened(encoding)):
        frame = encode_client(Heartbeat(1, ref="h"), encoding)
        other = frame.decode("utf-8", "replace") if encoding.binary else frame
        outcome = session.receive(other)
        assert isinstance(outcome, CloseConnection)
        assert (outcome.error.code, outcome.close_code) == ("bad_frame", 4000)
        assert session.state is SessionState.CLOSING
    assert opened(encoding).receive(message(Heartbeat(1, ref="h"), encoding)) == Heartbeat(
        1, ref="h"
    )
