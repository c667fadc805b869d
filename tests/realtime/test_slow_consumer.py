"""A client that stops reading: the others still receive everything, the server holds no
more than the outbox bound for it, and the slow one is told to resync -- after which it
resumes with `since` and has lost nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio
from trio_websocket import open_websocket_url

from sinal.node.wiring import Node
from sinal.protocol import DataUpdate, Encoding, Notification, Resync
from sinal.websocket import ConnectionLimits
from tests.realtime.realtime_support import Client, client, node_config, token_for

TOPIC = "supplier_changed"
OUTBOX = 64 * 1024
ROWS = 1500
PAD = "x" * 8000  # 8 KB rows: 12 MB in all, more than the outbox and the socket buffers


@pytest.fixture
async def small_outbox_node(db_url: str, users: dict[str, Any],
                            nursery: trio.Nursery) -> AsyncIterator[Node]:
    node = Node(node_config(db_url), db_url, ws_limits=ConnectionLimits(outbox_limit=OUTBOX))
    yield await nursery.start(node.run)


def write_rows(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(ROWS):
            conn.execute("INSERT INTO suppliers (name, email) VALUES (%s, %s)", (f"r{i}", PAD))


@pytest.mark.slow
async def test_slow_consumer_is_resynced_and_loses_nothing(
        small_outbox_node: Node, users: dict[str, Any], db_url: str) -> None:
    node = small_outbox_node
    assert node.hub is not None
    admin = users["admin@sinal.dev"]
    url = node.websocket_url
    async with client(node) as fast, open_websocket_url(
            url, subprotocols=[Encoding.MSGPACK.subprotocol], message_queue_size=0) as raw:
        slow = Client(raw, Encoding.MSGPACK)
        await fast.connect(token_for(admin))
        await slow.connect(token_for(admin))
        await fast.subscribe(TOPIC)
        start = (await slow.subscribe(TOPIC)).offsets[TOPIC]
        # from here on the slow client reads nothing until the writes are over
        await trio.to_thread.run_sync(write_rows, db_url)
        got_fast = await fast.updates(ROWS, timeout=60)
        assert [u.data["name"] for u in got_fast] == [f"r{i}" for i in range(ROWS)]

        topic = node.hub.topics[TOPIC]
        assert topic.lagged_total >= 1  # the slow subscription was ended, not waited for
        slow_actor = next(a for a in node.hub.connections_by_user[admin["id"]]
                          if a.subscriptions.get(TOPIC) is None)
        assert slow_actor.ws.outbox_bytes <= OUTBOX + 9000  # bound + one frame

        # the slow client reads again: a prefix of the rows, then resync
        received: list[DataUpdate] = []
        with trio.fail_after(30):
            while True:
                message = await slow.recv(30)
                if isinstance(message, Notification):
                    continue
                if isinstance(message, Resync):
                    resync = message
                    break
                assert isinstance(message, DataUpdate)
                received.append(message)
        assert resync.topic == TOPIC and resync.reason == "slow_consumer"
        assert len(received) < ROWS
        last = received[-1].offset if received else start
        assert resync.offset == last
        # resume from there: the rest, exactly once
        await slow.subscribe(TOPIC, since={TOPIC: resync.offset})
        rest = await slow.updates(ROWS - len(received), timeout=60)
    names = [u.data["name"] for u in received + rest]
    assert names == [f"r{i}" for i in range(ROWS)]
