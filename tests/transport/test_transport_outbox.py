"""The outbox: non-blocking offer, writer fallback, bounds, slow consumers, clean ends."""

from __future__ import annotations

import socket as stdlib_socket
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

from sinal.websocket import (
    ConnectionClosed,
    ConnectionLimits,
    WebSocketConnection,
    accept_websocket,
    listener_port,
    serve_websockets,
)
from sinal.websocket.frames import SLOW_CONSUMER, build_frame
from tests.transport.ws_test_support import raw_client, running_connection


def numbered(i: int, size: int = 100) -> bytes:
    return build_frame(i.to_bytes(4, "big") * (size // 4))


# ------------------------------------------------------------------ memory streams


async def test_without_a_socket_every_frame_goes_through_the_writer_in_order() -> None:
    async with running_connection() as (ws, client):
        for i in range(500):
            assert ws.offer(numbered(i))
        await ws.send_message(b"after")
        assert ws.deferred_frames == 501
        for i in range(500):
            assert await client.next_message() == i.to_bytes(4, "big") * 25
        assert await client.next_message() == b"after"
        assert ws.outbox_bytes == 0


async def test_bound_is_kept_and_overflow_makes_the_connection_slow() -> None:
    """A peer that does not read: offer() says no past the bound; nothing else blocks."""
    limit = 10_000
    frame_size = len(numbered(0, 1000))
    async with running_connection(ConnectionLimits(outbox_limit=limit), lockstep=True) as (
        ws,
        client,
    ):
        accepted = 0
        while ws.offer(numbered(accepted, 1000)):
            accepted += 1
            assert ws.outbox_bytes <= limit + frame_size
            await trio.lowlevel.checkpoint()  # let the writer run; it blocks on the peer
        assert ws.is_slow
        assert 5 <= accepted <= limit // frame_size + 1
        assert not ws.offer(numbered(0, 10))  # sticky: no gap can open silently
        await ws.wait_slow()  # returns at once

        # The owner's policy, variant 1: tell the client to resync, then resume.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.send_message, b"resync")  # waits for room
            got = [await client.next_message() for _ in range(accepted)]
            assert got == [i.to_bytes(4, "big") * 250 for i in range(accepted)]
            assert await client.next_message() == b"resync"
        ws.clear_slow()
        assert ws.offer(numbered(99))
        assert await client.next_message() == (99).to_bytes(4, "big") * 25


async def test_slow_consumer_close_drops_the_backlog() -> None:
    async with running_connection(ConnectionLimits(outbox_limit=5_000), lockstep=True) as (
        ws,
        client,
    ):
        sent = 0
        while ws.offer(numbered(sent, 1000)):
            sent += 1
            await trio.lowlevel.checkpoint()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(ws.close, SLOW_CONSUMER, "slow consumer", discard_pending=True)
            )
            messages = 0
            while True:
                event = await client.next_event()
                if isinstance(event, CloseConnection):
                    break
                assert isinstance(event, BytesMessage)
                messages += event.message_finished
            assert event.code == SLOW_CONSUMER
            assert messages < sent  # the queued frames were dropped, not sent
            await client.send(event.response())
        assert ws.closed


async def test_send_frame_after_close_raises() -> None:
    async with running_connection(ConnectionLimits(close_timeout=0)) as (ws, _client):
        await ws.close()
        with pytest.raises(ConnectionClosed):
            await ws.send_message("x")
        assert not ws.offer(build_frame(b"x"))


async def test_writer_and_handler_tasks_end_after_close() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server_stream, limits=ConnectionLimits(close_timeout=0))
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(ws.run)
            assert len(nursery.child_tasks) == 1
            await ws.close()
        # leaving the nursery proves ws.run returned by itself
    assert ws.closed


# ------------------------------------------------------------------ real sockets


class Server:
    """serve_websockets on 127.0.0.1:0, collecting accepted connections."""

    def __init__(self) -> None:
        self.connections: list[WebSocketConnection] = []
        self.changed = trio.Event()

    async def handler(self, ws: WebSocketConnection) -> None:
        self.connections.append(ws)
        self.changed.set()
        while True:
            await ws.receive()

    async def wait_for(self, count: int) -> None:
        while len(self.connections) < count:
            self.changed = trio.Event()
            await self.changed.wait()


async def test_fast_path_writes_without_the_writer_task() -> None:
    """offer() on an idle socket reaches the client although no writer runs."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener_port(listeners)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client_box: list[trio_websocket.WebSocketConnection] = []

            async def connect() -> None:
                async with trio_websocket.open_websocket(
                    "127.0.0.1", port, "/", use_ssl=False
                ) as client:
                    client_box.append(client)
                    assert await client.get_message() == b"direct"
                    assert await client.get_message() == b"second"

            nursery.start_soon(connect)
            stream = await listeners[0].accept()
            ws = await accept_websocket(stream)
            assert ws.offer(build_frame(b"direct"))
            assert ws.offer(build_frame(b"second"))
            assert ws.deferred_frames == 0 and ws.outbox_bytes == 0
            async with trio.open_nursery() as inner:  # now let it close properly
                await inner.start(ws.run)
                with pytest.raises(ConnectionClosed):
                    await ws.receive()
        await listeners[0].aclose()


async def test_many_frames_arrive_complete_and_in_order() -> None:
    server = Server()
    count = 5000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            limits = ConnectionLimits(outbox_limit=count * 300)  # this test is about order
            port = listener_port(
                await nursery.start(partial(serve_websockets, server.handler, limits=limits))
            )
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, message_queue_size=count
            ) as client:
                await server.wait_for(1)
                ws = server.connections[0]
                for i in range(count):
                    assert ws.offer(numbered(i, 224))
                    if i % 200 == 0:
                        await trio.lowlevel.checkpoint()
                for i in range(count):
                    assert await client.get_message() == i.to_bytes(4, "big") * 56
                assert ws.outbox_bytes == 0
            nursery.cancel_scope.cancel()


async def test_stalled_reader_is_bounded_and_others_still_get_frames_promptly() -> None:
    limit = 64 * 1024
    server = Server()
    limits = ConnectionLimits(outbox_limit=limit, close_timeout=5)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = listener_port(
                await nursery.start(partial(serve_websockets, server.handler, limits=limits))
            )
            stalled = await raw_client(port, rcvbuf=4096)  # never reads until told
            await server.wait_for(1)
            slow_ws = server.connections[0]
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, message_queue_size=100_000
            ) as healthy:
                await server.wait_for(2)
                fast_ws = server.connections[1]
                frame_size = len(numbered(0, 1000))
                offered = 0
                while slow_ws.offer(numbered(offered, 1000)):
                    offered += 1
                    assert slow_ws.outbox_bytes <= limit + frame_size
                    assert fast_ws.offer(numbered(offered, 1000))
                    if offered % 16 == 0:
                        await trio.lowlevel.checkpoint()
                assert slow_ws.is_slow and not fast_ws.is_slow
                assert slow_ws.outbox_bytes <= limit + frame_size
                # the healthy client got everything, in order, while the other stalls
                for i in range(1, offered + 1):
                    assert await healthy.get_message() == i.to_bytes(4, "big") * 250
                assert fast_ws.offer(build_frame(b"still fine"))
                assert await healthy.get_message() == b"still fine"

                # Policy variant 2: close the slow one, dropping its backlog. Its
                # client then reads whole frames in order, and the close frame.
                async with trio.open_nursery() as closing:
                    closing.start_soon(
                        partial(slow_ws.close, SLOW_CONSUMER, "slow consumer", discard_pending=True)
                    )
                    peer = Connection(ConnectionType.CLIENT)
                    seen: list[int] = []
                    close_code = None
                    while close_code is None:
                        data = await stalled.receive_some(65536)
                        assert data, "closed before the close frame"
                        peer.receive_data(data)
                        for event in peer.events():
                            if isinstance(event, BytesMessage) and event.message_finished:
                                seen.append(int.from_bytes(event.data[:4], "big"))
                            elif isinstance(event, CloseConnection):
                                close_code = event.code
                                await stalled.send_all(peer.send(event.response()))
                    assert close_code == SLOW_CONSUMER
                    assert seen == list(range(len(seen)))  # no gap, no torn frame
                    assert 0 < len(seen) < offered
                assert slow_ws.closed
                await stalled.aclose()
            nursery.cancel_scope.cancel()


async def test_broken_peer_is_noticed_by_offer() -> None:
    server = Server()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = listener_port(await nursery.start(serve_websockets, server.handler))
            client = await raw_client(port)
            await server.wait_for(1)
            ws = server.connections[0]
            # reset the connection (SO_LINGER 0) so that writes fail
            client.socket.setsockopt(
                stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
            )
            await client.aclose()
            while ws.offer(build_frame(b"x" * 1000)):
                await trio.lowlevel.checkpoint()
            with pytest.raises(ConnectionClosed):
                await ws.send_message(b"x")
            nursery.cancel_scope.cancel()


async def test_no_connection_task_survives_its_client() -> None:
    server = Server()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as handlers:
                port = listener_port(
                    await nursery.start(
                        partial(serve_websockets, server.handler, handler_nursery=handlers)
                    )
                )
                for _ in range(3):
                    async with trio_websocket.open_websocket(
                        "127.0.0.1", port, "/", use_ssl=False
                    ) as client:
                        await client.send_message("hi")
                await server.wait_for(3)
                while handlers.child_tasks:
                    await trio.lowlevel.checkpoint()
                assert all(ws.closed for ws in server.connections)
                assert [ws.close_code for ws in server.connections] == [1000] * 3
                nursery.cancel_scope.cancel()


async def test_failing_handler_closes_1011_and_server_keeps_serving() -> None:
    async def handler(ws: WebSocketConnection) -> None:
        message = await ws.receive()
        if message == "boom":
            raise RuntimeError("handler bug")
        await ws.send_message(message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = listener_port(await nursery.start(serve_websockets, handler))
            async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as c1:
                await c1.send_message("boom")
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await c1.get_message()
                assert info.value.reason is not None and info.value.reason.code == 1011
            async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as c2:
                await c2.send_message("echo")
                assert await c2.get_message() == "echo"
            nursery.cancel_scope.cancel()
