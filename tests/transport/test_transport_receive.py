"""Receiving: reassembly, ping/pong, close handshakes, limits and bad input."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from sinal.websocket import ConnectionClosed, ConnectionLimits
from sinal.websocket.frames import build_frame
from tests.transport.ws_test_support import running_connection


async def test_whole_messages_binary_and_text() -> None:
    async with running_connection() as (ws, client):
        await client.send(BytesMessage(data=b"\x00\x01binary"))
        await client.send(TextMessage(data="texto com acentuação"))
        await client.send(BytesMessage(data=b""))
        assert await ws.receive() == b"\x00\x01binary"
        assert await ws.receive() == "texto com acentuação"
        assert await ws.receive() == b""


async def test_fragmented_message_with_a_ping_in_the_middle() -> None:
    async with running_connection() as (ws, client):
        await client.send(TextMessage(data="part one, ", message_finished=False))
        await client.send(Ping(payload=b"are you there"))
        await client.send(TextMessage(data="part two, ", message_finished=False))
        await client.send(TextMessage(data="end", message_finished=True))
        await client.send(BytesMessage(data=b"a", message_finished=False))
        await client.send(BytesMessage(data=b"b", message_finished=True))
        assert await ws.receive() == "part one, part two, end"
        assert await ws.receive() == b"ab"
        assert await client.next_event() == Pong(payload=b"are you there")


async def test_peer_initiated_close_handshake() -> None:
    async with running_connection() as (ws, client):
        await client.send(CloseConnection(code=1000, reason="bye"))
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (1000, "bye")
        reply = await client.next_close()
        assert reply.code == 1000  # the close frame is echoed
        assert await client.next_event() is None  # then the server hangs up
        assert ws.closed and ws.close_code == 1000
        assert not ws.offer(build_frame(b"late"))
        with pytest.raises(ConnectionClosed):
            await ws.receive()


async def test_local_close_waits_for_the_peers_close_frame() -> None:
    async with running_connection() as (ws, client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.close, 4000, "going")
            got = await client.next_close()
            assert (got.code, got.reason) == (4000, "going")
            assert not ws.closed  # still waiting for the reply
            await client.send(got.response())
        assert ws.closed and ws.close_code == 4000
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 4000


async def test_local_close_while_another_task_receives() -> None:
    async with running_connection() as (ws, client):
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 1001

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ws.close, 1001, "")
            got = await client.next_close()
            await client.send(got.response())
        assert ws.closed


async def test_close_completes_when_the_receiving_task_stops_receiving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message that crosses our close frame is still delivered; close() then reads on."""
    async with running_connection(ConnectionLimits(close_timeout=30)) as (ws, client):
        got: list[bytes | str] = []
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def read_once() -> None:
                got.append(await ws.receive())

            nursery.start_soon(read_once)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ws.close, 1000, "")
            closing = await client.next_close()
            # our client's wsproto will not send after a close; a fresh one will
            crossed = Connection(ConnectionType.CLIENT).send(TextMessage(data="crossed"))
            await client.stream.send_all(crossed)
            await trio.testing.wait_all_tasks_blocked()
            await client.send(closing.response())
        assert got == ["crossed"]
        assert ws.closed
        assert trio.current_time() - start < 1  # no wait for close_timeout


async def test_local_close_gives_up_on_a_silent_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_connection(ConnectionLimits(close_timeout=3)) as (ws, client):
        start = trio.current_time()
        await ws.close()
        assert trio.current_time() - start == pytest.approx(3)
        assert ws.closed
        assert (await client.next_close()).code == 1000


async def test_oversize_message_closes_1009() -> None:
    limits = ConnectionLimits(max_message_size=1000)
    async with running_connection(limits) as (ws, client):
        await client.send(BytesMessage(data=b"x" * 1000))
        assert await ws.receive() == b"x" * 1000  # exactly the limit is fine
        await client.send(BytesMessage(data=b"y" * 600, message_finished=False))
        await client.send(BytesMessage(data=b"y" * 600, message_finished=True))
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
        assert (await client.next_close()).code == 1009
        assert ws.closed


async def test_one_huge_frame_is_cut_off_without_buffering_it() -> None:
    limits = ConnectionLimits(max_message_size=4096, receive_chunk=1024)
    async with running_connection(limits) as (ws, client):
        # Only the header and a little payload of a 1 GiB frame: refused at 4 KiB.
        header = bytes([0x82, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"\0\0\0\0"
        await client.stream.send_all(header + b"z" * 8192)
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1009


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\xff" * 16, 1002),  # reserved bits and opcode
        (build_frame(b"not masked"), 1002),  # clients must mask
        (bytes([0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28]), 1007),  # invalid UTF-8 text
        (bytes([0x89 & 0x7F, 0x80, 0, 0, 0, 0]), 1002),  # fragmented ping
    ],
    ids=["reserved-bits", "unmasked", "bad-utf8", "fragmented-ping"],
)
async def test_bad_input_fails_the_connection(garbage: bytes, code: int) -> None:
    async with running_connection() as (ws, client):
        await client.stream.send_all(garbage)
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == code
        assert (await client.next_close()).code == code
        assert ws.closed


async def test_peer_vanishing_is_1006() -> None:
    async with running_connection() as (ws, client):
        await client.stream.aclose()
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1006
        assert ws.closed


async def test_two_receivers_is_an_error() -> None:
    async with running_connection() as (ws, client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await ws.receive()
            await client.send(BytesMessage(data=b"done"))
