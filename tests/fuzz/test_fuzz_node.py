"""Fuzzing a live node over real sockets (issue #10: "No input can hurt a node").

Batches of fuzz frames (tests/fuzz/frames.py, drawn by hypothesis) go to a node over
several WebSockets at once, before login (one frame per connection) and after it. Every
answer is a documented error (never internal_error) and every close a documented code;
after each batch the node answers /health/live at once and a write made then reaches a
well-behaved subscriber (the watcher). The HTTP port gets malformed requests and never
answers 5xx.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from sinal.node.wiring import Node
from sinal.protocol import Encoding, ErrorCode
from tests.fuzz.frames import FAMILIES, LIMIT
from tests.fuzz.node_support import (
    Outcome,
    drawn_frames,
    get,
    http_status,
    live_status,
    post,
    send_after_login,
    send_one_each,
)
from tests.realtime.edge_support import (
    assert_refused,
    read_until_closed,
    running_node,
    wait_until,
    watching,
)
from tests.realtime.realtime_support import client, token_for, users_of

HEALTH_GUARD = 1.0  # seconds: /health/live must answer within this, even mid-batch
BATCHES = 3
PER_SOCKET = 12  # frames per socket and batch


@pytest.fixture
def users(db_url: str) -> dict[str, dict[str, Any]]:
    return users_of(db_url)


async def healthy(node: Node) -> None:
    with trio.fail_after(HEALTH_GUARD):
        assert await live_status(node) == 200


async def all_closed_but_the_watcher(node: Node) -> None:
    pool, hub = node.pool, node.hub
    assert pool is not None and hub is not None
    await wait_until(lambda: pool.live == 1 and hub.active_connections == 1)


async def test_fuzz_frames_over_real_sockets(db_url: str, users: dict[str, Any],
                                             nursery: trio.Nursery) -> None:
    # frames are counted against the rate limit only after they are decoded; a high
    # limit lets every fuzz frame reach the decoder instead of the rate limiter's close
    async with running_node(db_url, nursery, RATE_LIMIT_REQUESTS_PER_MINUTE="1000000") as node, \
            watching(node, users, db_url) as watcher:
        tokens = [token_for(users["admin@sinal.dev"]), token_for(users["ana@sinal.dev"])]
        outcome = Outcome()
        for batch in range(BATCHES):
            async with trio.open_nursery() as sockets:
                for encoding in Encoding:
                    frames = drawn_frames(encoding, 3 * PER_SOCKET, batch)
                    sockets.start_soon(send_one_each, node, encoding,
                                       frames[:PER_SOCKET], outcome)
                    for index, token in enumerate(tokens, start=1):
                        sockets.start_soon(send_after_login, node, encoding, token,
                                           frames[index * PER_SOCKET:(index + 1) * PER_SOCKET],
                                           outcome)
                sockets.start_soon(healthy, node)  # while the batch is in flight
            await healthy(node)
            await watcher.still_served()
            outcome.check()
        assert outcome.close_codes and outcome.errors  # the fuzz reached the decoder
        await all_closed_but_the_watcher(node)


async def test_adversarial_shapes_at_the_limit_over_real_sockets(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    """Every family's first variants, just under 64 KiB, each on its own connection
    before login and all on one connection after it."""
    async with running_node(db_url, nursery, RATE_LIMIT_REQUESTS_PER_MINUTE="1000000") as node, \
            watching(node, users, db_url) as watcher:
        token = token_for(users["admin@sinal.dev"])
        outcome = Outcome()
        async with trio.open_nursery() as sockets:
            for encoding in Encoding:
                frames = [family.build(LIMIT - 128, knob) for family in FAMILIES
                          if family.encoding is encoding for knob in range(3)]
                sendable = [f for f in frames if not isinstance(f, str) or _unicode(f)]
                sockets.start_soon(send_one_each, node, encoding, sendable, outcome)
                sockets.start_soon(send_after_login, node, encoding, token, sendable, outcome)
            sockets.start_soon(healthy, node)
        await healthy(node)
        await watcher.still_served()
        outcome.check()
        await all_closed_but_the_watcher(node)


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


ISSUE_10_FRAME = "{" * 9 + '"' + '\\"' * 32_700  # 65,410 bytes


@pytest.mark.parametrize("login", [False, True], ids=["before-login", "after-login"])
async def test_issue_10_frame_does_not_stall_the_node(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery, login: bool) -> None:
    """The frame that froze a node for 12.4 s, on four sockets at once: each is closed
    with too_deep, /health/live answers within a second of the frames being sent, and
    the watcher gets its data_update."""
    assert len(ISSUE_10_FRAME.encode()) == 65_410
    async with running_node(db_url, nursery) as node, watching(node, users, db_url) as watcher:
        token = token_for(users["fabio@sinal.dev"])
        async with client(node, Encoding.JSON) as a, client(node, Encoding.JSON) as b, \
                client(node, Encoding.JSON) as c, client(node, Encoding.JSON) as d:
            attackers = [a, b, c, d]
            if login:
                for attacker in attackers:
                    await attacker.connect(token)
            sent = trio.current_time()
            for attacker in attackers:
                await attacker.send_raw(ISSUE_10_FRAME)
            status = await live_status(node)
            answered = trio.current_time() - sent
            for attacker in attackers:
                assert_refused(await read_until_closed(attacker), ErrorCode.TOO_DEEP)
        assert status == 200
        assert answered < HEALTH_GUARD, answered
        await watcher.still_served()


async def test_the_http_port_never_answers_5xx_to_malformed_requests(
        node_with_users: tuple[Node, dict[str, Any]]) -> None:
    node, users = node_with_users
    bearer = f"Authorization: Bearer {token_for(users['admin@sinal.dev'])}"
    requests = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
        b"GET /\x00\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        get("/api/purchase-requests?since=abc&limit=-1&fields=%00", bearer),
        get("/api/purchase-requests?etag=" + "x" * 5000, bearer),
        get("/api/purchase-requests/not-a-uuid", bearer),
        get("/api/purchase-requests", "Authorization: Bearer " + "A" * 9000),
        get("/api/purchase-requests", "Authorization: Basic Og=="),
        post("/api/purchase-requests", ISSUE_10_FRAME.encode(), bearer),
        post("/api/purchase-requests", b"[" * 50_000, bearer),
        post("/api/purchase-requests", b'{"title":"\\ud800","amount":1e999}', bearer),
        post("/api/purchase-requests", b'{"title":"a","title":"b","amount":' + b"9" * 5000 + b"}",
             bearer),
        post("/api/purchase-requests", b"\xff\xfe not utf-8", bearer),
    ]
    for request in requests:
        status = await http_status(node, request)
        assert status is None or status < 500, (status, request[:60])
    short_body = (b"POST /api/purchase-requests HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                  + bearer.encode() + b"\r\n\r\n{")  # then the client stops sending
    status = await http_status(node, short_body, then_close=True)
    assert status is None or status < 500, status
    await healthy(node)


@pytest.fixture
async def node_with_users(db_url: str, users: dict[str, Any], nursery: trio.Nursery
                          ) -> Any:
    async with running_node(db_url, nursery) as node:
        yield node, users
