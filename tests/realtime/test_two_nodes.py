"""Two nodes on one database: one offset space, the same changes on both, and
notifications raised once although both nodes derive them."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request
from sinal.node.wiring import Node
from sinal.protocol import Notification
from tests.realtime.realtime_support import client, node_config, token_for


@pytest.mark.slow
async def test_both_nodes_deliver_the_same_sequence(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    one: Node = await nursery.start(Node(node_config(db_url, SINAL_NODE_ID="one"), db_url).run)
    two: Node = await nursery.start(Node(node_config(db_url, SINAL_NODE_ID="two"), db_url).run)
    admin, ana, carla = users["admin@sinal.dev"], users["ana@sinal.dev"], users["carla@sinal.dev"]
    topic = "purchase_request_changed"

    def write(n: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(n):
                create_request(conn, Principal(ana["id"], "requester", ana["department_id"]),
                               title=f"r{i}", amount=i, submit=True)

    async with client(one) as c1, client(two) as c2, client(two) as approver:
        await c1.connect(token_for(admin))
        await c2.connect(token_for(admin))
        await approver.connect(token_for(carla))
        start = (await c1.subscribe(topic)).offsets[topic]
        await c2.subscribe(topic, since={topic: start})
        writers = [threading.Thread(target=write, args=(100,)) for _ in range(4)]

        def run_writers() -> None:
            for t in writers:
                t.start()
            for t in writers:
                t.join()

        await trio.to_thread.run_sync(run_writers)
        got1 = await c1.updates(400, timeout=60)
        got2 = await c2.updates(400, timeout=60)
        notes: list[Notification] = []
        with trio.fail_after(60):
            while len(notes) < 400:
                message = await approver.recv(60)
                if isinstance(message, Notification):
                    notes.append(message)
    assert [u.offset for u in got1] == [u.offset for u in got2]
    assert [u.offset for u in got1] == sorted({u.offset for u in got1})
    assert len({n.id for n in notes}) == 400  # one per request, not one per node
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM notifications WHERE user_id = %s",
                           (carla["id"],)).fetchone()
    assert row == (400,)
