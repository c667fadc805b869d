"""A commit reaches the subscribers allowed to see it, as data_update, with delta and offset."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request, decide
from sinal.node.wiring import Node
from sinal.protocol import DataUpdate, Encoding, Error, Resync
from tests.realtime.realtime_support import client, token_for


def actor(user: dict[str, Any]) -> Principal:
    return Principal(user["id"], user["role"], user["department_id"])


async def test_commit_reaches_subscriber_with_delta_and_offset(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    ana, carla, bruno = users["ana@sinal.dev"], users["carla@sinal.dev"], users["bruno@sinal.dev"]
    async with client(node) as c_ana, client(node) as c_carla, client(node) as c_bruno:
        await c_ana.connect(token_for(ana))
        await c_carla.connect(token_for(carla))
        await c_bruno.connect(token_for(bruno))
        sub = await c_ana.subscribe("purchase_request_changed")
        await c_carla.subscribe("purchase_request_changed")
        await c_bruno.subscribe("purchase_request_changed")

        def write() -> str:
            with psycopg.connect(db_url, autocommit=True) as conn:
                req = create_request(conn, actor(ana), title="Monitor", amount=1500,
                                     submit=True)
                decide(conn, actor(carla), str(req["id"]), "approved")
                return str(req["id"])

        request_id = await trio.to_thread.run_sync(write)
        insert, update = await c_ana.updates(2)
        assert insert.op == "insert" and insert.id == request_id
        assert insert.data["status"] == "pending_a1" and insert.delta == {}
        assert update.op == "update" and update.delta["status"] == "pending_a2"
        assert sub.offsets["purchase_request_changed"] < insert.offset < update.offset
        # the level-1 approver sees the card arrive and leave (old row matched)
        seen = await c_carla.updates(2)
        assert [u.offset for u in seen] == [insert.offset, update.offset]
        # bruno: other department, not his request -> nothing. Prove it with a later
        # change he may see: it must be the first thing he receives.
        def bruno_writes() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                create_request(conn, actor(bruno), title="Cadeira", amount=10)

        await trio.to_thread.run_sync(bruno_writes)
        (first,) = await c_bruno.updates(1)
        assert first.data["title"] == "Cadeira"


async def test_json_subprotocol_carries_the_same_messages(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    admin = users["admin@sinal.dev"]
    async with client(node, Encoding.JSON) as c:
        welcome = await c.connect(token_for(admin))
        assert welcome.role == "admin"
        await c.subscribe("supplier_changed")

        def write() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("INSERT INTO suppliers (name) VALUES ('Nova')")

        await trio.to_thread.run_sync(write)
        update = await c.expect(DataUpdate)
        assert update.topic == "supplier_changed" and update.data["name"] == "Nova"


async def test_forbidden_topic_is_refused_and_connection_stays(
        node: Node, users: dict[str, Any]) -> None:
    async with client(node) as c:
        await c.connect(token_for(users["ana@sinal.dev"]))
        from sinal.protocol import Subscribe

        await c.send(Subscribe(events=("quotation_changed",), ref="q"))
        error = await c.expect(Error)
        assert error.code == "forbidden" and error.ref == "q"
        await c.send(Subscribe(events=("nope",), ref="n"))
        assert (await c.expect(Error)).code == "unknown_topic"
        await c.subscribe("purchase_request_changed")  # still served


async def test_resume_with_since_replays_without_gap_or_duplicate(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    admin = users["admin@sinal.dev"]

    def write(n: int, tag: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(n):
                conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (f"{tag}{i}",))

    async with client(node) as c:
        await c.connect(token_for(admin))
        await c.subscribe("supplier_changed")
        await trio.to_thread.run_sync(write, 5, "a")
        first = await c.updates(5)
    last = first[2].offset  # the client processed 3 of 5 before it dropped
    await trio.to_thread.run_sync(write, 4, "b")  # while it is away
    async with client(node) as c:
        await c.connect(token_for(admin))
        await c.subscribe("supplier_changed", since={"supplier_changed": last})
        await trio.to_thread.run_sync(write, 2, "c")
        again = await c.updates(2 + 4 + 2)
    names = [u.data["name"] for u in again]
    assert names == ["a3", "a4", "b0", "b1", "b2", "b3", "c0", "c1"]
    offsets = [u.offset for u in again]
    assert offsets == sorted(offsets) and offsets[0] > last


async def test_resume_from_before_the_ring_reads_the_table(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    topic = node.hub.topics["supplier_changed"]
    topic.ring = type(topic.ring)(maxlen=4)  # a tiny ring: most history is in the table

    def write(n: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(n):
                conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (f"s{i}",))

    start = topic.head
    await trio.to_thread.run_sync(write, 30)
    with trio.fail_after(10):
        await topic.wait_head(start + 30)
    assert topic.ring_floor > start  # the ring no longer reaches back to `start`
    async with client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        await c.subscribe("supplier_changed", since={"supplier_changed": start})
        got = await c.updates(30)
    assert [u.data["name"] for u in got] == [f"s{i}" for i in range(30)]


async def test_resume_past_retention_gets_resync(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    def write_and_trim() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(5):
                conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (f"t{i}",))
            conn.execute("SELECT sinal_sequence_changes()")
            conn.execute("DELETE FROM change_log WHERE position <= "
                         "(SELECT max(position) - 2 FROM change_log)")

    topic = node.hub.topics["supplier_changed"]
    topic.ring = type(topic.ring)(maxlen=1)
    await trio.to_thread.run_sync(write_and_trim)
    with trio.fail_after(10):
        await topic.wait_head(5)
        assert topic.ring_floor > 0
    async with client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        await c.subscribe("supplier_changed", since={"supplier_changed": 0})
        resync = await c.expect(Resync)
    assert resync.topic == "supplier_changed" and resync.reason == "retention"
    assert resync.offset == topic.head
