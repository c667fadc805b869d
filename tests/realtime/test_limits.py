"""Limits (docs/protocol.md sections 1 and 8): the per-user rate limit on client frames, the
connection pool (HTTP 503 past MAX_CONCURRENT_CONNECTIONS), and the upgrade checks: Origin
(403), path (404), subprotocol (400). The node keeps serving everyone else throughout.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from sinal.domain.tokens import mint_token
from sinal.node.wiring import Node
from sinal.protocol import (
    Connect,
    Encoding,
    Error,
    ErrorCode,
    Heartbeat,
    ServerMessage,
    Subscribe,
    Subscribed,
    Welcome,
)
from tests.realtime.edge_support import (
    USER,
    MemoryClosed,
    assert_refused,
    edge_config,
    expect_error,
    memory_session,
    read_until_closed,
    running_node,
    stub_hub,
    upgrade,
    wait_until,
    watching,
)
from tests.realtime.realtime_support import SECRET, Client, client, token_for

BUDGET = 5  # RATE_LIMIT_REQUESTS_PER_MINUTE in these tests


def subscribe(ref: str, topic: str = "quotation_changed") -> Subscribe:
    return Subscribe(events=(topic,), ref=ref)


# --- rate limit over real sockets ----------------------------------------------------------


async def test_rate_limit_drops_answers_once_then_closes_past_twice_the_budget(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    fabio = users["fabio@sinal.dev"]
    async with running_node(db_url, nursery, RATE_LIMIT_REQUESTS_PER_MINUTE=str(BUDGET)) as node, \
            watching(node, users, db_url) as watcher, client(node) as c:
        await c.connect(token_for(fabio))  # connect is not counted
        for i in range(1, BUDGET + 1):  # within the budget: served
            await c.send(subscribe(f"ok{i}"))
            assert (await c.expect(Subscribed)).ref == f"ok{i}"
        await c.send(subscribe("over1"))  # the first frame over the budget
        await expect_error(c, ErrorCode.RATE_LIMITED, "over1")
        # more over-budget frames within the same second: dropped without an answer,
        # up to twice the budget in all; the next one closes the connection
        for i in range(2, BUDGET + 2):
            await c.send(subscribe(f"over{i}"))
        closed = await read_until_closed(c)
        assert_refused(closed, ErrorCode.RATE_LIMITED)  # one error frame: the close's
        assert closed.messages == closed.errors  # none of over2..over5 was answered
        await watcher.still_served()  # another user, unaffected


async def test_rate_limit_counts_every_connection_of_the_user(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    fabio, ana = users["fabio@sinal.dev"], users["ana@sinal.dev"]
    async with running_node(db_url, nursery, RATE_LIMIT_REQUESTS_PER_MINUTE=str(BUDGET)) as node, \
            watching(node, users, db_url) as watcher, \
            client(node) as first, client(node) as second, client(node) as other:
        for c, user in ((first, fabio), (second, fabio), (other, ana)):
            await c.connect(token_for(user))
        for i in range(3):
            await first.send(subscribe(f"a{i}"))
            await first.expect(Subscribed)
        for i in range(BUDGET - 3):
            await second.send(subscribe(f"b{i}"))
            await second.expect(Subscribed)
        await second.send(Heartbeat(timestamp=1, ref="hb"))  # heartbeats count too
        await expect_error(second, ErrorCode.RATE_LIMITED, "hb")
        await first.send(subscribe("a-late"))
        await expect_error(first, ErrorCode.RATE_LIMITED, "a-late")
        # another user has a budget of their own
        for i in range(BUDGET):
            await other.send(subscribe(f"ana{i}", "purchase_request_changed"))
            assert (await other.expect(Subscribed)).ref == f"ana{i}"
        await watcher.still_served()


# --- rate limit in virtual time ----------------------------------------------------------

SLOW_BEATS = edge_config(RATE_LIMIT_REQUESTS_PER_MINUTE=str(BUDGET),
                         WEBSOCKET_HEARTBEAT_INTERVAL="300000",
                         WEBSOCKET_CONNECTION_TIMEOUT="600000")


def answers(got: list[tuple[float, ServerMessage]]) -> list[tuple[float, str, object]]:
    """(time, kind, ref) of every answer: subscribed or error."""
    out: list[tuple[float, str, object]] = []
    for at, message in got:
        if isinstance(message, Subscribed):
            out.append((at, "subscribed", message.ref))
        elif isinstance(message, Error):
            out.append((at, message.code, message.ref))
    return out


async def test_at_most_one_rate_limited_error_per_second(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(SLOW_BEATS)
    with trio.fail_after(1000):
        async with memory_session(hub) as (c, _):
            await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"])))
            _, welcome = await c.receive()
            assert isinstance(welcome, Welcome)
            start = trio.current_time()

            async def send_frames() -> None:
                for i in range(BUDGET):
                    await c.send(subscribe(f"ok{i}", "supplier_changed"))
                for i in range(BUDGET + 1):  # over budget, every 0.4 s: 0, .4, ..., 2.0
                    await c.send(subscribe(f"over{i}", "supplier_changed"))
                    await trio.sleep(0.4)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_frames)
                got, closed = await c.receive_until_closed()  # as they arrive
    served = [(kind, ref) for _, kind, ref in answers(got)]
    assert served[:BUDGET] == [("subscribed", f"ok{i}") for i in range(BUDGET)]
    errors = [(at - start, ref) for at, kind, ref in answers(got) if kind == "rate_limited"]
    # over0 at 0 s and over3 at 1.2 s are answered; over1, over2 (same second) and over4
    # (0.4 s after the last error) are dropped silently; over5 is the 11th frame: close
    assert [ref for _, ref in errors] == ["over0", "over3", None]
    assert [at for at, _ in errors] == pytest.approx([0.0, 1.2, 2.0])
    assert closed.code == 4300 and closed.reason == "rate_limited"


async def test_budget_comes_back_after_a_minute(autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(SLOW_BEATS)
    with trio.fail_after(1000):
        async with memory_session(hub) as (c, _):
            await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"])))
            await c.receive()
            for i in range(BUDGET + 1):
                await c.send(subscribe(f"first{i}", "supplier_changed"))
            await trio.sleep(61)  # the bucket refills at BUDGET per minute
            for i in range(BUDGET + 2):
                await c.send(subscribe(f"again{i}", "supplier_changed"))
            await trio.sleep(1)  # one error per second at most
            await c.send(Heartbeat(timestamp=time.time() * 1000, ref="end"))
            got: list[tuple[float, ServerMessage]] = []
            while len(answers(got)) < 2 * BUDGET + 3:
                got.append(await c.receive())
    kinds = [(kind, ref) for _, kind, ref in answers(got)]
    assert kinds == (
        [("subscribed", f"first{i}") for i in range(BUDGET)] + [("rate_limited", f"first{BUDGET}")]
        + [("subscribed", f"again{i}") for i in range(BUDGET)]
        + [("rate_limited", f"again{BUDGET}"), ("rate_limited", "end")]
    )
    # again6 was dropped silently (same second); four over-budget frames in all: still open
    assert c.closed is None


async def test_invalid_frames_count_against_the_budget(
        autojump_clock: trio.testing.MockClock) -> None:
    hub = stub_hub(SLOW_BEATS)
    with trio.fail_after(1000):
        async with memory_session(hub) as (c, _):
            await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"])))
            await c.receive()
            for i in range(2 * BUDGET + 2):
                await c.send(Subscribe(events=("x" * 200,), ref=f"bad{i}"))  # topic too long
            got: list[tuple[float, ServerMessage]] = []
            with trio.move_on_after(5), contextlib.suppress(MemoryClosed):
                while True:  # whatever the server sends within 5 virtual seconds
                    got.append(await c.receive())
    codes = [kind for _, kind, _ in answers(got)]
    assert codes[:BUDGET] == ["invalid_message"] * BUDGET
    assert codes[BUDGET:] == ["rate_limited", "rate_limited"]  # one answer, then the close
    assert c.closed is not None and c.closed.code == 4300


# --- the connection pool -------------------------------------------------------------------


async def test_pool_full_refuses_the_upgrade_with_503(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    async with running_node(db_url, nursery, MAX_CONCURRENT_CONNECTIONS="2") as node, \
            watching(node, users, db_url) as watcher:
        assert node.hub is not None and node.pool is not None
        async with client(node) as second:
            await second.connect(token_for(users["ana@sinal.dev"]))
            for _ in range(2):
                with pytest.raises(trio_websocket.ConnectionRejected) as refused:
                    async with client(node):
                        pass
                assert refused.value.status_code == 503
                headers = {k.lower(): v for k, v in refused.value.headers}
                assert headers.get(b"retry-after") == b"5"
                assert refused.value.body is not None and b"pool_full" in refused.value.body
            assert node.hub.refused_total == 2
            await watcher.still_served()  # the connections held are served
        await wait_until(lambda: node.pool is not None and node.pool.live < 2)
        async with client(node) as third:  # a slot is free again
            welcome = await third.connect(token_for(users["bruno@sinal.dev"]))
            assert welcome.user_id == users["bruno@sinal.dev"]["id"]
        await watcher.still_served()


# --- the upgrade checks ----------------------------------------------------------------------

REFUSED_UPGRADES: dict[str, tuple[dict[str, Any], int]] = {
    "foreign-origin": ({"origin": "http://evil.example"}, 403),
    "origin-lookalike": ({"origin": "http://localhost:3000.evil.example"}, 403),
    "origin-other-port": ({"origin": "http://localhost:3001"}, 403),
    "wrong-path": ({"path": "/socket.io/"}, 404),
    "path-below": ({"path": "/ws/extra"}, 404),
    "path-case": ({"path": "/WS"}, 404),
    "unknown-subprotocol": ({"subprotocols": ["chat"]}, 400),
    "old-version": ({"subprotocols": ["sinal.msgpack.v0", "sinal.json.v2"]}, 400),
}

ACCEPTED_UPGRADES: dict[str, tuple[dict[str, Any], Encoding]] = {
    "allowed-origin": ({"origin": "http://localhost:3000"}, Encoding.MSGPACK),
    "allowed-origin-slash": ({"origin": "http://localhost:3000/"}, Encoding.MSGPACK),
    "no-subprotocol": ({"subprotocols": []}, Encoding.MSGPACK),
    "first-known-wins": ({"subprotocols": ["chat", "sinal.json.v1", "sinal.msgpack.v1"]},
                         Encoding.JSON),
    "query-string": ({"path": "/ws?client=test"}, Encoding.MSGPACK),
}


async def served(c: Client, user: dict[str, Any]) -> None:
    welcome = await c.connect(token_for(user))
    assert welcome.user_id == user["id"]


async def test_upgrade_checks_refuse_with_http_status(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    assert node.hub is not None
    async with watching(node, users, db_url) as watcher:
        failures: list[str] = []
        for name, (options, status) in REFUSED_UPGRADES.items():
            try:
                async with upgrade(node, **options):
                    failures.append(f"{name}: accepted")
            except trio_websocket.ConnectionRejected as refused:
                if refused.status_code != status:
                    failures.append(f"{name}: {refused.status_code}, expected {status}")
            await watcher.still_served()
        for name, (options, encoding) in ACCEPTED_UPGRADES.items():
            async with upgrade(node, **options) as c:
                if c.encoding is not encoding:
                    failures.append(f"{name}: {c.encoding}, expected {encoding}")
                await served(c, users["ana@sinal.dev"])
        assert not failures, failures
        assert node.hub.refused_total == 0  # only a full pool counts as refused
        await watcher.still_served()


async def test_a_refused_upgrade_does_not_touch_open_sessions(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    """A browser on a foreign page is refused while the same user's app stays connected."""
    ana = users["ana@sinal.dev"]
    async with watching(node, users, db_url) as watcher, client(node) as app:
        await served(app, ana)
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with upgrade(node, origin="https://phishing.example"):
                pass
        await app.send(Subscribe(events=("quotation_changed",), ref="q"))
        await expect_error(app, ErrorCode.FORBIDDEN, "q")  # answered: the session is alive
        await watcher.still_served()
