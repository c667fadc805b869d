"""AuditWriter actor: security events into `audit_logs`, in batches (domain/audit.py says
which events). `record` only appends to a bounded buffer; the writer flushes it every
`interval` seconds, or at once when `max_batch` events wait. Never a write per event, and
never on the fan-out path. When the database is away the events wait for the next flush;
past `max_pending` the oldest are dropped and counted (`dropped`)."""

from __future__ import annotations

import logging
from collections import deque
from functools import partial

import psycopg

from sinal.actors.batching import BatchWriter
from sinal.domain.audit import AuditEvent, insert_audit
from sinal.domain.db import Database
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.audit")


class AuditWriter(BatchWriter):
    kind = "audit_writer"

    def __init__(self, db: Database, *, interval: float = 1.0, max_batch: int = 500,
                 max_pending: int = 20_000, registry: Registry | None = None) -> None:
        super().__init__("audit", interval, max_batch=max_batch, registry=registry)
        self.db = db
        self.max_pending = max_pending
        self._pending: deque[AuditEvent] = deque()
        self.written = 0
        self.dropped = 0

    def record(self, event: AuditEvent) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(event)
        self.poke()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft()
                     for _ in range(min(self.max_batch, len(self._pending)))]
            try:
                self.written += await self.db.run(partial(insert_audit, events=batch))
            except psycopg.OperationalError:
                self._pending.extendleft(reversed(batch))  # the database is away: keep them
                raise
            except psycopg.Error as exc:  # a batch the database refuses: never retried
                self.dropped += len(batch)
                log.error("audit batch of %d events refused: %s", len(batch), exc)
