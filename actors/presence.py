"""PresenceWriter actor: websocket_connections rows and notification deliveries, in batches.

Connection actors record connects, heartbeats, disconnects and delivered notifications
with non-blocking calls; the writer flushes them every `interval` seconds (or sooner when
`max_batch` events wait) in one transaction: one INSERT for the connects, one UPDATE for
the heartbeats, one for the disconnects, one for deliveries. Never a write per heartbeat.
At start it closes the rows this node left open (a crash, a restart).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import psycopg

from sinal.actors.batching import BatchWriter
from sinal.domain.db import Database
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.presence")


class PresenceWriter(BatchWriter):
    """Connection actors call `connected`, `heartbeat`, `disconnected` and `delivered`
    directly: each only records an id in a set (no message per event, no await), and the
    writer's tick flushes them. A full batch asks for an early flush through the inbox."""

    kind = "presence_writer"

    def __init__(self, db: Database, node_id: str, *, interval: float = 5.0,
                 max_batch: int = 2000, registry: Registry | None = None) -> None:
        super().__init__("presence", interval, max_batch=max_batch, registry=registry)
        self.db = db
        self.node_id = node_id
        self._connects: dict[str, tuple[str, str | None, str | None]] = {}
        self._beats: set[str] = set()
        self._gone: set[str] = set()
        self._delivered: set[int] = set()
        self.flushes = 0
        self.rows_written = 0

    # --- called by connection actors (never block) ---------------------------------------

    def connected(self, session_id: str, user_id: str, user_agent: str | None,
                  remote: str | None) -> None:
        ip = None
        if remote:
            try:
                ip = str(ipaddress.ip_address(remote.rsplit(":", 1)[0].strip("[]")))
            except ValueError:
                ip = None
        self._connects[session_id] = (user_id, user_agent, ip)
        self.poke()

    def heartbeat(self, session_id: str) -> None:
        self._beats.add(session_id)

    def disconnected(self, session_id: str) -> None:
        if self._connects.pop(session_id, None) is None:
            self._gone.add(session_id)
        self._beats.discard(session_id)
        self.poke()

    def delivered(self, notification_id: int) -> None:
        self._delivered.add(notification_id)
        self.poke()

    @property
    def pending(self) -> int:
        return len(self._connects) + len(self._beats) + len(self._gone) + len(self._delivered)

    # --- the actor ---------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.db.run(self._close_stale)  # fails the start if the database is away

    def _close_stale(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE websocket_connections SET disconnected_at = now() "
                     "WHERE node_id = %s AND disconnected_at IS NULL", (self.node_id,))

    async def flush(self) -> None:
        if not self.pending:
            return
        connects, self._connects = self._connects, {}
        beats, self._beats = self._beats, set()
        gone, self._gone = self._gone, set()
        delivered, self._delivered = self._delivered, set()
        node = self.node_id

        def work(conn: psycopg.Connection[Any]) -> int:
            written = 0
            with conn.transaction(), conn.cursor() as cur:
                if connects:
                    cur.executemany(
                        "INSERT INTO websocket_connections (user_id, socket_id, user_agent, "
                        "ip_address, node_id) VALUES (%s, %s, %s, %s::inet, %s)",
                        [(u, sid, ua, ip, node) for sid, (u, ua, ip) in connects.items()],
                    )
                    written += len(connects)
                if beats:
                    cur.execute("UPDATE websocket_connections SET last_heartbeat = now() "
                                "WHERE socket_id = ANY(%s) AND disconnected_at IS NULL",
                                (list(beats),))
                    written += cur.rowcount
                if gone:
                    cur.execute("UPDATE websocket_connections SET disconnected_at = now() "
                                "WHERE socket_id = ANY(%s) AND disconnected_at IS NULL",
                                (list(gone),))
                    written += cur.rowcount
                if delivered:
                    cur.execute("UPDATE notifications SET delivered_at = now() "
                                "WHERE id = ANY(%s) AND delivered_at IS NULL",
                                (list(delivered),))
                    written += cur.rowcount
            return written

        try:
            self.rows_written += await self.db.run(work)
            self.flushes += 1
        except psycopg.Error:
            # keep the events for the next flush (the database may be restarting)
            for sid, value in connects.items():
                self._connects.setdefault(sid, value)
            self._beats |= beats
            self._gone |= gone
            self._delivered |= delivered
            raise
