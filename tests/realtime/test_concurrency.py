"""8 concurrent writers, thousands of commits, several subscribers with different rights:
each receives every change it may see exactly once, in offset order, and nothing else."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.changes import read_changes, sequence_changes
from sinal.node.wiring import Node
from sinal.protocol import DataUpdate, Notification
from tests.realtime.realtime_support import Client, client, token_for

WRITERS = 8
COMMITS = 300
STATUSES = ["draft", "pending_a1", "pending_a2", "pending_a3", "approved", "rejected"]


def writer(db_url: str, seed: int, users: dict[str, Any]) -> None:
    rnd = random.Random(seed)
    requesters = [users["ana@sinal.dev"], users["bruno@sinal.dev"]]
    mine: list[str] = []
    with psycopg.connect(db_url) as conn:
        for _ in range(COMMITS):
            for _ in range(rnd.randint(1, 3)):
                if not mine or rnd.random() < 0.4:
                    who = rnd.choice(requesters)
                    row = conn.execute(
                        "INSERT INTO purchase_requests (title, requester_id, department_id,"
                        " amount, status) VALUES (%s, %s, %s, %s, %s) RETURNING id::text",
                        (f"w{seed}", who["id"], who["department_id"], rnd.randint(1, 9999),
                         rnd.choice(STATUSES)),
                    ).fetchone()
                    assert row is not None
                    mine.append(row[0])
                elif rnd.random() < 0.9:
                    conn.execute("UPDATE purchase_requests SET status = %s WHERE id = %s",
                                 (rnd.choice(STATUSES), rnd.choice(mine)))
                else:
                    conn.execute("DELETE FROM purchase_requests WHERE id = %s",
                                 (mine.pop(rnd.randrange(len(mine))),))
            if rnd.random() < 0.1:
                conn.rollback()
                mine = [m for m in mine if conn.execute(
                    "SELECT 1 FROM purchase_requests WHERE id = %s", (m,)).fetchone()]
                conn.rollback()
            else:
                conn.commit()


def visible(change: Any, rule: Any) -> bool:
    rows = [r for r in (change.new_row, change.old_row) if r]
    if change.op == "update":
        rows = [change.new_row, {**change.new_row, **change.old_row}]
    return any(rule(r) for r in rows)


async def collect(c: Client, count: int, out: list[DataUpdate]) -> None:
    with trio.fail_after(60):
        while len(out) < count:
            message = await c.recv(60)
            if isinstance(message, Notification):
                continue  # approvers get notified too; tests/realtime/test_notifications.py
            assert isinstance(message, DataUpdate), message
            out.append(message)


@pytest.mark.slow
async def test_every_subscriber_gets_exactly_what_it_may_see(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    admin, carla, ana = users["admin@sinal.dev"], users["carla@sinal.dev"], users["ana@sinal.dev"]
    topic = "purchase_request_changed"
    rules = {
        "admin": lambda r: True,
        "carla": lambda r: r.get("status") == "pending_a1",
        "ana": lambda r: r.get("requester_id") == ana["id"]
        or r.get("department_id") == ana["department_id"],
        # a client filter on top of admin rights: only pending_a2 and pending_a3
        "admin_filtered": lambda r: r.get("status") in ("pending_a2", "pending_a3"),
    }
    async with client(node) as c_admin, client(node) as c_carla, client(node) as c_ana, \
            client(node) as c_filtered:
        await c_admin.connect(token_for(admin))
        await c_carla.connect(token_for(carla))
        await c_ana.connect(token_for(ana))
        await c_filtered.connect(token_for(admin))
        start = (await c_admin.subscribe(topic)).offsets[topic]
        await c_carla.subscribe(topic)
        await c_ana.subscribe(topic)
        await c_filtered.subscribe(topic, filters={"status": ["pending_a2", "pending_a3"]})

        threads = [threading.Thread(target=writer, args=(db_url, n, users))
                   for n in range(WRITERS)]

        def write_all() -> None:
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        await trio.to_thread.run_sync(write_all)

        def truth() -> list[Any]:
            with psycopg.connect(db_url, autocommit=True) as conn:
                sequence_changes(conn)
                return [c for c in read_changes(conn, start, 1_000_000, [topic])]

        changes = await trio.to_thread.run_sync(truth)
        assert len(changes) > 2000
        expected = {name: [c.position for c in changes if visible(c, rule)]
                    for name, rule in rules.items()}
        got: dict[str, list[DataUpdate]] = {name: [] for name in rules}
        async with trio.open_nursery() as nursery:
            for name, c in (("admin", c_admin), ("carla", c_carla), ("ana", c_ana),
                            ("admin_filtered", c_filtered)):
                nursery.start_soon(collect, c, len(expected[name]), got[name])
    for name in rules:
        offsets = [u.offset for u in got[name]]
        assert offsets == expected[name], name  # exactly once, in order, nothing more
    assert 0 < len(expected["carla"]) < len(expected["admin"])
    assert 0 < len(expected["ana"]) < len(expected["admin"])
    # the deliveries carry the rows as committed
    by_position = {c.position: c for c in changes}
    for update in got["admin"][:200]:
        change = by_position[update.offset]
        assert update.op == change.op and update.data == change.row
