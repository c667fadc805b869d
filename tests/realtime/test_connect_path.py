"""The connect path: one database round trip per connect (the user read afresh, the kept
notifications and the change log's head in one statement), and a closed connection
released at once."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio

from sinal.node.wiring import Node
from sinal.protocol import Notification, Subscribe, Subscribed
from tests.realtime.realtime_support import client, token_for


def keep_notification(db_url: str, user_id: str, message: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO notifications (user_id, kind, message, push) "
                     "VALUES (%s, 'order_issued', %s, false)", (user_id, message))


async def test_a_connect_is_one_round_trip(node: Node, users: dict[str, Any],
                                           db_url: str) -> None:
    assert node.db is not None and node.authenticator is not None
    people = [users[e] for e in ("ana@sinal.dev", "carla@sinal.dev", "bruno@sinal.dev")]
    for person in people:
        await trio.to_thread.run_sync(keep_notification, db_url, person["id"], "kept for you")
    before = node.db.queries_by_scope["websocket"]
    lookups = node.authenticator.lookups
    for k, person in enumerate(people, start=1):
        async with client(node) as c:
            welcome = await c.connect(token_for(person))
            assert welcome.user_id == person["id"]
            note = await c.expect(Notification)
            assert note.message == "kept for you" and note.offset is None
            await c.send(Subscribe(events=("purchase_request_changed",), ref="s"))
            assert isinstance(await c.recv(), Subscribed)
        assert node.db.queries_by_scope["websocket"] - before == k
    assert node.authenticator.lookups - lookups == len(people)
    with psycopg.connect(db_url) as conn:
        left = conn.execute("SELECT count(*) FROM notifications "
                            "WHERE delivered_at IS NULL").fetchone()
    assert left == (0,)


async def test_a_session_starts_from_the_database_not_from_memory(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    """Memory that claims to be current (a users version that never moves) still does not
    decide a WebSocket session: the connect reads the user afresh."""
    auth = node.authenticator
    assert auth is not None
    ana = users["ana@sinal.dev"]
    auth.users_version = lambda: 0
    async with client(node) as c:
        assert (await c.connect(token_for(ana))).role == "requester"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'buyer' WHERE id = %s", (ana["id"],))
    async with client(node) as c:
        assert (await c.connect(token_for(ana))).role == "buyer"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET is_active = false WHERE id = %s", (ana["id"],))
    async with client(node) as c:
        from sinal.protocol import Connect, Error

        await c.send(Connect(token=token_for(ana)))
        refused = await c.expect(Error)
        assert refused.code == "auth_failed"


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """Only reference counting frees objects: what is freed is freed at once."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_connection_is_released_at_once(
        node: Node, users: dict[str, Any], no_cycle_collector: None) -> None:
    assert node.hub is not None and node.pool is not None
    ana = users["ana@sinal.dev"]
    gone = trio.Event()
    async with client(node) as c:
        await c.connect(token_for(ana))
        await c.subscribe("purchase_request_changed")
        (actor,) = node.hub.connections_by_user[ana["id"]]
        released = weakref.ref(actor, lambda _: gone.set())
        del actor
    # the node's part of the close (its close frame answered, the task ends), then nothing
    # may hold the actor: no topic, no heartbeat entry, no registry, no cycle
    with trio.fail_after(10):
        await gone.wait()
    assert released() is None
    assert node.hub.active_connections == 0
    assert all(t.subscribers == 0 for t in node.hub.topics.values())


def test_the_listener_does_not_read_again_for_heads_it_has_read() -> None:
    """A positions announcement at or below the listener's position (its own sequencer's
    echo) is no reason to read the log; a later head, or a writer's change, is."""
    from dataclasses import dataclass
    from typing import cast

    from sinal.actors.listener import DatabaseListener
    from sinal.domain.changes import CHANGES_CHANNEL, POSITIONS_CHANNEL
    from sinal.domain.db import Database

    @dataclass
    class Note:
        channel: str
        payload: str

    class Conn:
        closed = broken = False

        def __init__(self, notes: list[Note]) -> None:
            self.notes = notes

        def notifies(self, timeout: float) -> list[Note]:
            return self.notes

    listener = DatabaseListener(cast(Database, None), ["supplier_changed"])
    listener.position = 10
    echo = [Note(POSITIONS_CHANNEL, "9"), Note(POSITIONS_CHANNEL, "10")]
    assert listener._drain(cast(Any, Conn(echo))) == (0, 2)
    assert listener._drain(cast(Any, Conn([*echo, Note(POSITIONS_CHANNEL, "11")]))) == (1, 2)
    assert listener._drain(cast(Any, Conn([Note(CHANGES_CHANNEL, "supplier_changed")]))) \
        == (1, 0)


async def test_connects_of_one_round_share_one_statement() -> None:
    """Session starts that arrive in the same scheduler round make one statement for all."""
    from typing import cast

    from sinal.domain.db import Database
    from sinal.domain.principals import Authenticator
    from sinal.domain.tokens import Claims

    calls: list[list[str]] = []

    class Db:
        async def run(self, work: Any) -> Any:
            class Conn:
                def execute(self, sql: str, params: Any) -> Any:
                    calls.append(list(params["users"]))
                    rows = [{"user_id": u, "role": "requester", "is_active": True,
                             "dept": None, "head": 7,
                             "id": 1 if u.endswith("1") else None, "kind": "k",
                             "message": "m", "action": None, "sound": True,
                             "created_at": None} for u in params["users"]]

                    class Cursor:
                        def fetchall(self) -> list[dict[str, Any]]:
                            return rows

                    return Cursor()

            await trio.lowlevel.checkpoint()
            return work(Conn())

    auth = Authenticator(cast(Database, Db()), "s" * 40, lambda: 0)
    ids = [f"00000000-0000-4000-8000-00000000000{k}" for k in range(1, 6)]
    starts: list[Any] = []

    async def start(user: str) -> None:
        claims = Claims(user_id=user, role="requester", expires_at=2_000_000_000)
        starts.append(await auth.start_session(claims))

    async with trio.open_nursery() as nursery:
        for user in [*ids, ids[0]]:  # the first user connects twice
            nursery.start_soon(start, user)
    assert len(calls) == 1 and sorted(set(calls[0])) == ids
    assert auth.lookups == 1 and auth.batched == 6
    assert sorted(s.principal.user_id for s in starts) == sorted([*ids, ids[0]])
    assert sum(len(s.kept) for s in starts) == 1  # the kept one reaches one socket
    assert {s.head for s in starts} == {7}


async def test_concurrent_connects_each_get_their_own_session(
        node: Node, users: dict[str, Any], db_url: str) -> None:
    people = [users[e] for e in ("ana@sinal.dev", "carla@sinal.dev", "bruno@sinal.dev",
                                 "diego@sinal.dev", "elisa@sinal.dev")]
    for person in people:
        await trio.to_thread.run_sync(keep_notification, db_url, person["id"],
                                      f"for {person['id']}")
    notes: dict[str, list[str]] = {}

    async def session(person: dict[str, Any]) -> None:
        async with client(node) as c:
            welcome = await c.connect(token_for(person))
            assert welcome.user_id == person["id"]
            await c.send(Subscribe(events=("notifications",), ref="s"))
            while not isinstance(message := await c.recv(), Subscribed):
                assert isinstance(message, Notification)
                notes.setdefault(person["id"], []).append(message.message)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for person in [*people, people[0]]:  # ana twice, at once
                nursery.start_soon(session, person)
    assert notes == {p["id"]: [f"for {p['id']}"] for p in people}
