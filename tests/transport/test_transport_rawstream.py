"""RawSocketStream (websocket/rawstream.py) keeps trio's Stream contract: trio's own
conformance checks for half-closeable streams, over real socket pairs."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from sinal.websocket.rawstream import RawSocketStream


async def pair() -> tuple[RawSocketStream, RawSocketStream]:
    left, right = socket.socketpair()
    return RawSocketStream(left), RawSocketStream(right)


async def clogged_pair() -> tuple[RawSocketStream, RawSocketStream]:
    left, right = await pair()
    for stream in (left, right):  # fill both kernel buffers: a send_all has to wait
        try:
            while True:
                stream.socket.send(b"x" * 65536)
        except BlockingIOError:
            pass
    return left, right


async def test_trio_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(pair, clogged_pair)


async def test_a_peer_that_resets_is_a_broken_resource() -> None:
    left, right = await pair()
    await right.aclose()
    with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
        for _ in range(100):  # a unix socket pair reports EPIPE once the peer is gone
            await left.send_all(b"y" * 65536)
    assert await left.receive_some(10) == b""
    await left.aclose()


async def test_a_receive_that_succeeds_at_once_still_yields() -> None:
    left, right = await pair()
    await right.send_all(b"data")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await left.receive_some(10)  # cancelled before reading: the bytes stay
    assert await left.receive_some(10) == b"data"
    for stream in (left, right):
        await stream.aclose()
