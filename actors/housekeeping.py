"""Housekeeping actor: keeps the tables that only grow from growing forever.

At start and every `interval` seconds (hourly by default) it deletes, in batches of `batch` rows:
- change_log rows older than SINAL_RETENTION_HOURS (only sequenced ones: a row still
  waiting for its position is never touched). A client resuming from before the oldest
  kept position gets `resync` (WebSocket) or 410 (REST), as documented;
- delivered notifications older than the retention (undelivered ones wait for their user);
- performance_metrics rows older than the retention;
- websocket_connections rows closed before the retention.
SINAL_RETENTION_HOURS=0 keeps everything. Every node may run it: deleting twice is a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from sinal.domain.db import Database
from sinal.engine.periodic import PeriodicActor
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.housekeeping")

# (table, condition) -- each deleted in batches by ctid
_TARGETS = (
    ("change_log", "position IS NOT NULL AND changed_at < now() - %(keep)s"),
    ("notifications", "delivered_at IS NOT NULL AND delivered_at < now() - %(keep)s"),
    ("performance_metrics", "recorded_at < now() - %(keep)s"),
    ("websocket_connections", "disconnected_at < now() - %(keep)s"),
)


class Housekeeping(PeriodicActor):
    kind = "housekeeping"

    def __init__(self, db: Database, retention_hours: int, *, interval: float = 3600.0,
                 batch: int = 10_000, registry: Registry | None = None) -> None:
        super().__init__("housekeeping", interval, first_after=0, registry=registry)
        self.db = db
        self.retention_hours = retention_hours
        self.batch = batch
        self.deleted: dict[str, int] = {}

    def _sweep(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        from datetime import timedelta

        keep = timedelta(hours=self.retention_hours)
        counts: dict[str, int] = {}
        for table, condition in _TARGETS:
            total = 0
            while True:
                cur = conn.execute(
                    f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} "
                    f"WHERE {condition} LIMIT %(batch)s)", {"keep": keep, "batch": self.batch})
                total += cur.rowcount
                if cur.rowcount < self.batch:
                    break
            counts[table] = total
        return counts

    async def sweep_once(self) -> dict[str, int]:
        if self.retention_hours <= 0:
            return {}
        counts = await self.db.run(self._sweep)
        for table, n in counts.items():
            self.deleted[table] = self.deleted.get(table, 0) + n
        if any(counts.values()):
            log.info("housekeeping deleted %s", counts)
        return counts

    async def tick(self) -> None:
        await self.sweep_once()
