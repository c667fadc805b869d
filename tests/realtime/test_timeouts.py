"""Heartbeats and timeouts of a connection, in virtual time (docs/protocol.md section 7).

A ConnectionActor serves a memory stream (edge_support.memory_session) with a real Hub and a
stand-in database, so `autojump_clock` can run minutes of protocol time in milliseconds.
The settings are not the defaults, to show the actor reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio
import trio.testing

from sinal.domain.tokens import mint_token
from sinal.protocol import (
    ClientMessage,
    Connect,
    Encoding,
    Error,
    ErrorCode,
    Heartbeat,
    ServerMessage,
    Unsubscribe,
    Welcome,
)
from tests.realtime.edge_support import (
    USER,
    MemoryClient,
    edge_config,
    memory_session,
    stub_hub,
)
from tests.realtime.realtime_support import SECRET

INTERVAL = 5.0  # WEBSOCKET_HEARTBEAT_INTERVAL, seconds
TIMEOUT = 12.0  # WEBSOCKET_CONNECTION_TIMEOUT, seconds
LOGIN = 3.0  # WEBSOCKET_LOGIN_TIMEOUT, seconds
GUARD = 1000.0  # virtual seconds: far beyond anything a test waits for

CONFIG = edge_config(WEBSOCKET_HEARTBEAT_INTERVAL=str(int(INTERVAL * 1000)),
                     WEBSOCKET_CONNECTION_TIMEOUT=str(int(TIMEOUT * 1000)),
                     WEBSOCKET_LOGIN_TIMEOUT=str(int(LOGIN * 1000)))


def heartbeat() -> ClientMessage:
    return Heartbeat(timestamp=int(time.time() * 1000))


async def connect(c: MemoryClient) -> float:
    """Send connect, read welcome; return the virtual time the server got the frame."""
    sent_at = trio.current_time()
    await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"]), ref="c"))
    _, welcome = await c.receive()
    assert isinstance(welcome, Welcome), welcome
    assert welcome.heartbeat_interval == INTERVAL * 1000
    assert welcome.connection_timeout == TIMEOUT * 1000
    return sent_at


def heartbeat_times(got: list[tuple[float, ServerMessage]]) -> list[float]:
    return [at for at, message in got if isinstance(message, Heartbeat)]


def timeout_error(got: list[tuple[float, ServerMessage]]) -> tuple[float, Error]:
    errors = [(at, m) for at, m in got if isinstance(m, Error)]
    assert len(errors) == 1, got
    at, error = errors[0]
    assert error.code == ErrorCode.HEARTBEAT_TIMEOUT.value and error.ref is None
    return at, error


async def test_silent_connection_is_closed_after_the_connection_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(CONFIG)
    with trio.fail_after(GUARD):
        async with memory_session(hub) as (c, _):
            t0 = await connect(c)
            assert hub.active_connections == 1
            got, closed = await c.receive_until_closed()
    assert closed.code == 4302 and closed.reason == "heartbeat_timeout"
    assert closed.at == pytest.approx(t0 + TIMEOUT)
    error_at, _ = timeout_error(got)
    assert error_at == pytest.approx(t0 + TIMEOUT)  # the error frame, then the close
    # the server kept beating while it waited: at 5 s and 10 s, not after the close
    assert heartbeat_times(got) == pytest.approx([t0 + INTERVAL, t0 + 2 * INTERVAL])
    assert hub.active_connections == 0
    assert hub.closed_by_code == {4302: 1}


@pytest.mark.parametrize("keepalive", [heartbeat, lambda: Unsubscribe(events=("metrics",))],
                         ids=["heartbeat", "any-frame"])
async def test_client_that_keeps_sending_stays_until_it_falls_silent(
        autojump_clock: trio.testing.MockClock, keepalive: Callable[[], ClientMessage]) -> None:
    hub = stub_hub(CONFIG)
    beats = 30  # 150 s of protocol time, many times the timeout
    last_sent = 0.0
    with trio.fail_after(GUARD):
        async with memory_session(hub) as (c, _):
            t0 = await connect(c)

            async def keep_alive() -> None:
                nonlocal last_sent
                for _ in range(beats):
                    await trio.sleep(INTERVAL)
                    await c.send(keepalive())
                    last_sent = trio.current_time()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_alive)
                got, closed = await c.receive_until_closed()
    assert last_sent == pytest.approx(t0 + beats * INTERVAL)
    # open for the whole time it sent, closed one timeout after its last frame
    assert closed.code == 4302
    assert closed.at == pytest.approx(last_sent + TIMEOUT)
    timeout_error(got)


async def test_server_sends_heartbeats_every_interval(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(CONFIG)
    with trio.fail_after(GUARD):
        async with memory_session(hub, Encoding.JSON) as (c, _):
            t0 = await connect(c)
            beats: list[tuple[float, Heartbeat]] = []
            while len(beats) < 6:
                at, message = await c.receive()
                assert isinstance(message, Heartbeat), message
                beats.append((at, message))
                await c.send(heartbeat())  # answer, so the connection stays
    times = [at for at, _ in beats]
    assert times == pytest.approx([t0 + INTERVAL * k for k in range(1, 7)])
    wall_ms = time.time() * 1000
    for _, beat in beats:  # the timestamp is the server's wall clock, in ms
        assert isinstance(beat.timestamp, int) and abs(beat.timestamp - wall_ms) < 60_000


async def test_connection_without_connect_is_closed_after_the_login_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(CONFIG)
    db = hub.db
    with trio.fail_after(GUARD):
        async with memory_session(hub) as (c, _):
            opened = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()
            assert hub.pending == 1  # counted among the sockets waiting to log in
            got, closed = await c.receive_until_closed()
    assert closed.code == 4302 and closed.reason == "heartbeat_timeout"
    assert closed.at == pytest.approx(opened + LOGIN)
    error_at, _ = timeout_error(got)
    assert [m for _, m in got if not isinstance(m, Error)] == []  # no heartbeat before connect
    assert error_at == pytest.approx(opened + LOGIN)
    assert hub.connections_total == 0 and db.queries == 0
    assert hub.pending == 0 and hub.pending_by_address == {}


async def test_late_connect_is_accepted_and_silence_counts_from_it(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(CONFIG)
    with trio.fail_after(GUARD):
        async with memory_session(hub) as (c, _):
            await trio.sleep(LOGIN - 1)  # just in time
            t0 = await connect(c)
            got, closed = await c.receive_until_closed()
    assert closed.code == 4302
    assert closed.at == pytest.approx(t0 + TIMEOUT)
    assert len(heartbeat_times(got)) == 2


async def test_websocket_pings_do_not_count_as_activity(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(CONFIG)
    with trio.fail_after(GUARD):
        async with memory_session(hub) as (c, _):
            t0 = await connect(c)

            async def ping_forever() -> None:
                while c.closed is None:
                    await trio.sleep(INTERVAL / 2)
                    if c.closed is None:
                        await c.ping()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping_forever)
                got, closed = await c.receive_until_closed()
                nursery.cancel_scope.cancel()
    assert closed.code == 4302
    assert closed.at == pytest.approx(t0 + TIMEOUT)
    assert c.pongs >= 3  # the pings were read and answered, and still did not count
    timeout_error(got)
