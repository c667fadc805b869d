"""DatabaseListener actor: one LISTEN connection per node, lossless catch-up.

It LISTENs on `sinal_changes` (writers' triggers) and `sinal_positions` (the sequencer of
any node). On every wake-up, and on a poll tick when nothing wakes it, it runs the
sequencer and reads the change log after its last position (the reader rule of
sql/003_change_capture.sql), then sends each topic its part of the batch and the
actors that follow every change (the notification producer, the session guard, the
aggregates behind the dashboard), through their inboxes (found by name in the node's
registry when the listener starts). Its own inbox takes `CatchUpNow`: read the log now.

Waiting is Trio-native (docs/architecture.md, "Trio-native LISTEN"): a sync psycopg
connection in autocommit, `trio.lowlevel.wait_readable(fd)`, then `conn.notifies(timeout=0)`
-- never `pgconn.notifies()`, which would lose notifications psycopg moved to its backlog.
Queries run on the pool in worker threads.

On connection loss the actor fails; its supervisor restarts it with backoff, and since the
position lives on the object, the new run catches up from exactly where the old one was.
The first run starts at the log's head (history is served by replay from the table) and
tells every topic so with an empty batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import trio
from psycopg import pq
from psycopg.adapt import Transformer

from sinal.actors.topic import TopicBatch
from sinal.domain.changes import (
    CHANGES_CHANNEL,
    POSITIONS_CHANNEL,
    Change,
    changes_of,
    head_position,
    sequence_and_read,
    sequence_and_read_sql,
    sequence_changes,
)
from sinal.domain.db import Database
from sinal.engine.actor import Actor, ActorRef
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.listener")

READ_LIMIT = 2000
LISTENER_NAME = "database_listener"


@dataclass(frozen=True, slots=True)
class CatchUpNow:
    """Read the log now instead of at the next notification or poll tick."""


class DatabaseListener(Actor[CatchUpNow]):
    kind = "database_listener"

    def __init__(self, db: Database, topics: Sequence[str], *, registry: Registry | None = None,
                 poll_interval: float = 1.0, start_position: int | None = None,
                 changes_to: Sequence[str] = ()) -> None:
        super().__init__(LISTENER_NAME, capacity=4, registry=registry)
        self.db = db
        self.topic_names = tuple(topics)
        self.changes_to = tuple(changes_to)  # actors that get every change (notifications,
        # the session guard, the aggregates), by registered name
        self.poll_interval = poll_interval
        self.position = start_position if start_position is not None else -1
        self.head_seen = 0  # the sequencer's head at the last read
        self.last_read_at = 0.0
        self.changes_read = 0
        self.wakeups = 0
        self.echoes = 0  # announcements of heads already read: no read for them
        self.listen_conn: psycopg.Connection[Any] | None = None
        self.runs = 0  # completed starts (first one and every restart)
        self._topics: dict[str, ActorRef[Any]] = {}
        self._consumers: list[ActorRef[Any]] = []
        self._runs_lot = trio.lowlevel.ParkingLot()
        self._wait: trio.CancelScope | None = None

    @property
    def lag(self) -> int:
        """Changes known to the sequencer but not yet handed to topics."""
        return max(0, self.head_seen - self.position)

    async def wait_runs(self, count: int) -> None:
        """Return once the listener has started (listening and caught up) `count` times."""
        while self.runs < count:
            await self._runs_lot.park()

    async def initial_position(self) -> int:
        """Start from the log's current head: history is served by replay from the table."""
        def work(conn: psycopg.Connection[Any]) -> int:
            sequence_changes(conn)
            return head_position(conn)

        return await self.db.run(work)

    # --- the actor -------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Find the consumers, connect, LISTEN, and catch up before reporting ready."""
        self._topics = {name: self.registry.require(f"topic:{name}")
                        for name in self.topic_names}
        self._consumers = [self.registry.require(name) for name in self.changes_to]
        if self.position < 0:
            self.position = await self.initial_position()
            await self.dispatch([], up_to=self.position)  # tells the topics where they start
        conn = await trio.to_thread.run_sync(self._connect)
        self.listen_conn = conn
        try:
            await self.catch_up()  # whatever committed while we were not listening
        except BaseException:
            await self._disconnect()
            raise
        self.runs += 1
        self._runs_lot.unpark_all()

    async def main(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow)
                async for _ in self.messages():
                    if self._wait is not None:
                        self._wait.cancel()  # wake the follower: it reads at once
                nursery.cancel_scope.cancel()  # stop requested
        finally:
            await self._disconnect()

    async def _follow(self) -> None:
        conn = self.listen_conn
        assert conn is not None
        while True:
            with trio.move_on_after(self.poll_interval) as self._wait:
                await trio.lowlevel.wait_readable(conn.pgconn.socket)
            ticked = self._wait.cancelled_caught  # the poll interval passed, or CatchUpNow
            self._wait = None
            self.wakeups += 1
            # Drain here: with timeout=0 psycopg only reads what the socket already holds,
            # so no thread hop on the hot path. It raises OperationalError when the server
            # went away.
            fresh, echoes = self._drain(conn)
            if not fresh and echoes and not ticked:
                # only announcements of heads already read (our own sequencer's among
                # them): reading now would cost a round trip for nothing, and a change
                # that commits meanwhile would wait behind it
                self.echoes += echoes
                continue
            if not fresh and not echoes:
                # a poll tick: prove the connection alive (a dead peer is silent)
                await trio.to_thread.run_sync(self._ping, conn)
            await self.catch_up()

    async def _disconnect(self) -> None:
        conn, self.listen_conn = self.listen_conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.db.url, autocommit=True, connect_timeout=10)
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        conn.execute(f"LISTEN {POSITIONS_CHANNEL}")
        return conn

    async def _read_here(self, conn: psycopg.Connection[Any], after: int
                         ) -> tuple[int, list[Change], int]:
        """`sequence_and_read` on the listen connection itself, waiting on its socket in
        this task: one round trip and no thread hop (a worker thread and the GIL handed
        back and forth cost more CPU than the read). Returns (head, changes, fresh): the
        notifications that arrived meanwhile are taken from libpq's queue here (the
        socket will not wake `_follow` for them) and `fresh` counts those that may
        announce something not read yet (a writer's change, a later head). A failed
        statement fails the listener; its supervisor restarts it on a fresh connection."""
        pgconn = conn.pgconn
        fd = pgconn.socket
        pgconn.send_query(sequence_and_read_sql(after, READ_LIMIT))
        while pgconn.flush():
            await trio.lowlevel.wait_writable(fd)
        results: list[pq.abc.PGresult] = []
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    head, changes = self._decode(conn, results)
                    return head, changes, self._queued_notifications(pgconn, head)
                if result.status != pq.ExecStatus.TUPLES_OK:
                    message = (result.error_message or b"").decode(errors="replace")
                    raise psycopg.OperationalError(f"change log read failed: {message}")
                results.append(result)
            await trio.lowlevel.wait_readable(fd)

    @staticmethod
    def _queued_notifications(pgconn: pq.abc.PGconn, head: int) -> int:
        fresh = 0
        while (note := pgconn.notifies()) is not None:
            payload = note.extra.decode(errors="replace")
            channel = note.relname.decode(errors="replace")
            if channel != POSITIONS_CHANNEL or not payload.isdigit() or int(payload) > head:
                fresh += 1
        return fresh

    @staticmethod
    def _decode(conn: psycopg.Connection[Any], results: list[pq.abc.PGresult]
                ) -> tuple[int, list[Change]]:
        if len(results) != 2:
            raise psycopg.OperationalError(f"change log read: {len(results)} results, not 2")
        rows: list[list[tuple[Any, ...]]] = []
        for result in results:
            loader = Transformer(conn)
            loader.set_pgresult(result)
            rows.append(loader.load_rows(0, result.ntuples, tuple))
        return int(rows[0][0][0]), changes_of(rows[1])

    def _drain(self, conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """Read the notifications the socket holds: (fresh, echoes), where an echo is a
        `POSITIONS_CHANNEL` announcement of a head this listener has already read."""
        fresh = echoes = 0
        for note in conn.notifies(timeout=0):
            if note.channel == POSITIONS_CHANNEL and note.payload.isdigit() \
                    and int(note.payload) <= self.position:
                echoes += 1
            else:
                fresh += 1
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("listen connection lost")
        return fresh, echoes

    @staticmethod
    def _ping(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1")

    async def catch_up(self) -> None:
        """Sequence and read until the log has nothing after our position."""
        while True:
            after = self.position
            fresh = 0
            if self.listen_conn is not None:
                head, changes, fresh = await self._read_here(self.listen_conn, after)
            else:
                def work(conn: psycopg.Connection[Any], after: int = after
                         ) -> tuple[int, list[Change]]:
                    return sequence_and_read(conn, after, READ_LIMIT)  # one round trip

                head, changes = await self.db.run(work)
            self.head_seen = head
            self.last_read_at = time.monotonic()
            if changes:
                await self.dispatch(changes)
            elif head > self.position:
                await self.dispatch([], up_to=head)
            if len(changes) < READ_LIMIT and not fresh:
                return

    async def dispatch(self, changes: list[Change], up_to: int | None = None) -> None:
        """Send every topic its part of (position, end], and the consumer every change."""
        end = changes[-1].position if changes else (up_to if up_to is not None
                                                    else self.position)
        by_topic: dict[str, list[Change]] = {}
        for change in changes:
            by_topic.setdefault(change.topic, []).append(change)
        since = self.position
        for name, ref in self._topics.items():
            await ref.send(TopicBatch(tuple(by_topic.get(name, ())), since, end))
        if changes:
            for consumer in self._consumers:
                await consumer.send(changes)
        self.changes_read += len(changes)
        self.position = end

    def describe(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "head": self.head_seen,
            "lag": self.lag,
            "changesRead": self.changes_read,
            "wakeups": self.wakeups,
            "reconnects": max(0, self.runs - 1),
            "lastReadAgoMs": round((time.monotonic() - self.last_read_at) * 1000)
            if self.last_read_at else None,
        }
