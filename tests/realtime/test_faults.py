"""Database faults mid-stream: the listener's connection killed, PostgreSQL restarted.
Nothing lost, nothing repeated."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.changes import read_changes, sequence_changes
from sinal.node.embedded import EmbeddedPostgres, free_port
from sinal.node.migrate import apply_migrations
from sinal.node.wiring import Node
from tests.realtime.realtime_support import client, node_config, token_for, users_of

TOPIC = "supplier_changed"


def insert_suppliers(db_url: str, names: list[str]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for name in names:
            conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (name,))


def logged_names(db_url: str, after: int) -> list[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        sequence_changes(conn)
        return [c.row["name"] for c in read_changes(conn, after, 1_000_000, [TOPIC])]


@pytest.mark.slow
async def test_listener_connection_killed_mid_stream(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    listener = node.listener
    assert listener is not None
    names = [f"k{i}" for i in range(600)]
    async with client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        start = (await c.subscribe(TOPIC)).offsets[TOPIC]
        writer = threading.Thread(target=insert_suppliers, args=(db_url, names))
        writer.start()
        with psycopg.connect(db_url, autocommit=True) as admin:
            for kill in range(3):
                await listener.wait_runs(kill + 1)
                conn = listener.listen_conn
                assert conn is not None
                pid = conn.info.backend_pid
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await trio.to_thread.run_sync(writer.join)
        got = await c.updates(len(names), timeout=60)
        with trio.fail_after(30):
            await listener.wait_runs(4)  # cut off three times, and back each time
    assert [u.data["name"] for u in got] == names
    assert [c.row["name"] for c in read_after(db_url, start)] == names


def read_after(db_url: str, start: int) -> list[Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        sequence_changes(conn)
        return read_changes(conn, start, 1_000_000, [TOPIC])


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL this test may restart (never the shared one)."""
    folder = Path(tempfile.mkdtemp(prefix="sinal-restart-"))
    os.chmod(folder, 0o755)
    server = EmbeddedPostgres(folder / "pg", free_port())
    server.start()
    apply_migrations(server.url)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def restartable_node(own_postgres: EmbeddedPostgres,
                           nursery: trio.Nursery) -> AsyncIterator[tuple[Node, dict[str, Any]]]:
    users = users_of(own_postgres.url)
    node = Node(node_config(own_postgres.url), own_postgres.url)
    running: Node = await nursery.start(node.run)
    yield running, users


@pytest.mark.slow
async def test_postgres_restart_loses_and_repeats_nothing(
        restartable_node: tuple[Node, dict[str, Any]], own_postgres: EmbeddedPostgres) -> None:
    node, users = restartable_node
    url = own_postgres.url
    listener = node.listener
    assert listener is not None
    before = [f"before{i}" for i in range(50)]
    after = [f"after{i}" for i in range(50)]
    async with client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        await c.subscribe(TOPIC)
        await trio.to_thread.run_sync(insert_suppliers, url, before)
        first = await c.updates(len(before))
        runs = listener.runs
        await trio.to_thread.run_sync(own_postgres.restart)
        await trio.to_thread.run_sync(insert_suppliers, url, after)
        await listener.wait_runs(runs + 1)  # it noticed, reconnected, caught up
        second = await c.updates(len(after), timeout=60)
    got = [u.data["name"] for u in first + second]
    assert got == before + after
    offsets = [u.offset for u in first + second]
    assert offsets == sorted(set(offsets))
