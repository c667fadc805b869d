"""Fuzzing the sans-IO decoder (issue #10): any frame, in either encoding, gets a message
or its documented error and nothing else, the answer the rules of docs/protocol.md
section 2 call for (``reference.judge``), and costs CPU time linear in its size.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinal.protocol import (
    ERRORS,
    CloseConnection,
    Connect,
    Decoder,
    Encoding,
    ErrorCode,
    ProtocolError,
    ServerSession,
    decode,
)
from tests.fuzz.cost import decode_ratio, size_of
from tests.fuzz.frames import (
    FAMILIES,
    KNOBS,
    LIMIT,
    Family,
    Frame,
    adversarial_frames,
    any_frames,
)
from tests.fuzz.reference import DECODER_CODES, judge

ENCODINGS = pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name.lower())
MAX_RATIO = 25.0
"""Decoding may cost at most this many times a plain parse of the same size (tests/fuzz/
cost.py). Linear checks measure under 6 here; a quadratic one is in the thousands."""

SESSION_CODES = DECODER_CODES | {ErrorCode.NOT_AUTHENTICATED}


def check_decoding(frame: Frame, encoding: Encoding) -> None:
    """decode's answer is the reference's; the session and the stream decoder agree."""
    verdict = judge(frame, encoding)
    try:
        message = decode(frame, encoding)
    except ProtocolError as error:
        outcome: object = (error.code, error.ref)
        assert error.code in DECODER_CODES, error
        assert verdict.codes, f"refused a frame the rules accept: {error!r}"
        if verdict.error is not None:  # codec rules kept: exactly from_wire's answer
            assert outcome == (verdict.error.code, verdict.error.ref), (error, verdict)
        else:
            assert error.code in verdict.codes, (error, verdict.codes)
            assert error.ref in (None, verdict.ref), (error, verdict.ref)
    else:
        outcome = message
        assert not verdict.codes, f"accepted a frame the rules refuse: {verdict.codes}"
        assert message == verdict.message
    check_session(frame, encoding)
    check_stream(frame, encoding, outcome)


def check_session(frame: Frame, encoding: Encoding) -> None:
    received = ServerSession(encoding).receive(frame)
    if isinstance(received, CloseConnection):
        code = ErrorCode(received.error.code)
        assert code in SESSION_CODES, received.error
        assert received.close_code == ERRORS[code].close_code  # before welcome all close
    else:
        assert isinstance(received, Connect), received


def check_stream(frame: Frame, encoding: Encoding, outcome: object) -> None:
    """The stream decoder on the frame's bytes: only protocol errors; and decode's answer
    when the frame is one whole line (JSON) or a whole valid message (MessagePack)."""
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    try:
        got: object = Decoder(encoding).feed(data + b"\n" if encoding is Encoding.JSON else data)
    except ProtocolError as error:
        got = (error.code, error.ref)
    if encoding is Encoding.JSON:
        whole_line = (isinstance(frame, str) and frame.strip() and "\n" not in frame
                      and "\r" not in frame and frame.encode("utf-8", "replace") == data)
        if whole_line:
            assert got == (outcome if isinstance(outcome, tuple) else [outcome]), (got, outcome)
    elif not isinstance(outcome, tuple):  # one whole MessagePack value
        assert got == [outcome], (got, outcome)


@ENCODINGS
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_frame_gets_a_message_or_its_documented_error(
        encoding: Encoding, data: st.DataObject) -> None:
    check_decoding(data.draw(any_frames(encoding)), encoding)


@ENCODINGS
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_adversarial_frames_cost_linear_time(encoding: Encoding, data: st.DataObject) -> None:
    frame = data.draw(adversarial_frames(encoding, min_size=4096))
    check_decoding(frame, encoding)
    ratio = decode_ratio(frame, encoding)
    assert ratio <= MAX_RATIO, (ratio, size_of(frame), frame[:80])


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_every_adversarial_shape_at_the_frame_limit(family: Family) -> None:
    """Each family's variants just under the limit get the reference's answer and cost
    linear time."""
    worst = 0.0
    for knob in range(KNOBS):
        frame = family.build(LIMIT - 128, knob)
        check_decoding(frame, family.encoding)
        worst = max(worst, decode_ratio(frame, family.encoding))
    assert worst <= MAX_RATIO, worst


def test_issue_10_frame_is_refused_at_once() -> None:
    """The frame that froze a node for 12.4 s: nine braces, a quote, 32,700 escaped
    quotes (65,410 bytes). It is too deep, and decoding it costs no more than a plain
    parse of a valid frame of its size."""
    frame = "{" * 9 + '"' + '\\"' * 32_700
    assert len(frame.encode("utf-8")) == 65_410
    with pytest.raises(ProtocolError) as caught:
        decode(frame, Encoding.JSON)
    assert caught.value.code is ErrorCode.TOO_DEEP
    assert decode_ratio(frame, Encoding.JSON) <= MAX_RATIO
    # unclosed, without the braces: the parser's verdict, just as fast
    for unclosed in ('"' + '\\"' * 32_700, '["' + '\\"' * 32_700, '{"a":"' + "\\\\" * 32_700):
        with pytest.raises(ProtocolError) as caught:
            decode(unclosed, Encoding.JSON)
        assert caught.value.code is ErrorCode.BAD_FRAME
        assert decode_ratio(unclosed, Encoding.JSON) <= MAX_RATIO
