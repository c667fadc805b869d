"""DatabaseListener actor: one LISTEN connection per node, lossless catch-up.

It LISTENs on `sinal_changes` (writers' triggers) and `sinal_positions` (the sequencer of
any node). On every wake-up, and on a poll tick when nothing wakes it, it runs the
sequencer and reads the change log after its last position (the reader rule of
sql/003_change_capture.sql), then hands each topic its part of the batch.

Waiting is Trio-native (DESIGN.md decision 3): a sync psycopg connection in autocommit,
`trio.lowlevel.wait_readable(fd)`, then `conn.notifies(timeout=0)` -- never
`pgconn.notifies()`, which would lose notifications psycopg moved to its backlog.
Queries run on the pool in worker threads.

On connection loss `run` raises; its supervisor restarts it with backoff, and since the
position lives on the object, the new run catches up from exactly where the old one was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
import trio

from sinal.actors.topic import Topic, TopicBatch
from sinal.domain.changes import (
    CHANGES_CHANNEL,
    POSITIONS_CHANNEL,
    Change,
    head_position,
    read_changes,
    sequence_changes,
)
from sinal.domain.db import Database

log = logging.getLogger("sinal.listener")

READ_LIMIT = 2000


class DatabaseListener:
    kind = "database_listener"

    def __init__(self, db: Database, topics: Mapping[str, Topic], *,
                 poll_interval: float = 1.0, start_position: int | None = None,
                 on_changes: Callable[[list[Change]], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.topics = topics
        self.poll_interval = poll_interval
        self.position = start_position if start_position is not None else -1
        self.on_changes = on_changes
        self.head_seen = 0  # the sequencer's head at the last read
        self.last_read_at = 0.0
        self.changes_read = 0
        self.wakeups = 0
        self.listen_conn: psycopg.Connection[Any] | None = None
        self.runs = 0  # completed starts (first one and every restart)
        self._runs_lot = trio.lowlevel.ParkingLot()

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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        if self.position < 0:
            self.position = await self.initial_position()
            for topic in self.topics.values():
                topic.head = max(topic.head, self.position)
                topic.ring_floor = max(topic.ring_floor, self.position)
        conn = await trio.to_thread.run_sync(self._connect)
        self.listen_conn = conn
        try:
            await self.catch_up()  # whatever committed while we were not listening
            task_status.started()
            self.runs += 1
            self._runs_lot.unpark_all()
            while True:
                with trio.move_on_after(self.poll_interval):
                    await trio.lowlevel.wait_readable(conn.pgconn.socket)
                self.wakeups += 1
                # Drain here: with timeout=0 psycopg only reads what the socket already
                # holds, so no thread hop on the hot path. It raises OperationalError when
                # the server went away.
                if self._drain(conn) == 0:
                    # a poll tick: prove the connection is alive (a dead peer is silent)
                    await trio.to_thread.run_sync(self._ping, conn)
                await self.catch_up()
        finally:
            self.listen_conn = None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.db.url, autocommit=True, connect_timeout=10)
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        conn.execute(f"LISTEN {POSITIONS_CHANNEL}")
        return conn

    @staticmethod
    def _drain(conn: psycopg.Connection[Any]) -> int:
        count = 0
        for _ in conn.notifies(timeout=0):
            count += 1
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("listen connection lost")
        return count

    @staticmethod
    def _ping(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1")

    async def catch_up(self) -> None:
        """Sequence and read until the log has nothing after our position."""
        while True:
            after = self.position

            def work(conn: psycopg.Connection[Any], after: int = after
                     ) -> tuple[int, list[Change]]:
                head = sequence_changes(conn)
                return head, read_changes(conn, after, READ_LIMIT)

            head, changes = await self.db.run(work)
            self.head_seen = head
            self.last_read_at = time.monotonic()
            if changes:
                await self.dispatch(changes)
            elif head > self.position:
                await self.dispatch([], up_to=head)
            if len(changes) < READ_LIMIT:
                return

    async def dispatch(self, changes: list[Change], up_to: int | None = None) -> None:
        end = changes[-1].position if changes else (up_to or self.position)
        by_topic: dict[str, list[Change]] = {}
        for change in changes:
            by_topic.setdefault(change.topic, []).append(change)
        for name, topic in self.topics.items():
            await topic.send_channel.send(TopicBatch(tuple(by_topic.get(name, ())), end))
        if self.on_changes is not None and changes:
            await self.on_changes(changes)
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
