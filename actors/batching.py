"""BatchWriter: the shape shared by the actors that write what other actors record, in
batches (the audit writer, the presence writer).

Recording is a non-blocking call that only buffers; the writer flushes every `interval`
seconds, or at once when `max_batch` records wait (`poke` asks through the inbox, once).
A flush that fails because the database is away keeps what it could not write for the
next one and counts the failure; stopping flushes one last time (shielded, at most
`FINAL_FLUSH` seconds). Subclasses say what is pending and how to flush it.
"""

from __future__ import annotations

import logging

import psycopg
import trio

from sinal.engine.periodic import PeriodicActor, RunNow
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.batching")

FINAL_FLUSH = 5.0


class BatchWriter(PeriodicActor):
    def __init__(self, name: str, interval: float, *, max_batch: int,
                 registry: Registry | None = None) -> None:
        super().__init__(name, interval, registry=registry)
        self.max_batch = max_batch
        self.failures = 0
        self._flush_asked = False

    @property
    def pending(self) -> int:
        """Records waiting for the next flush."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Write everything pending; raise psycopg.OperationalError (keeping what was not
        written) when the database is away."""
        raise NotImplementedError

    def poke(self) -> None:
        """A full batch waits: ask for a flush now (at most one request in the inbox)."""
        if self.pending >= self.max_batch and not self._flush_asked:
            self._flush_asked = self.ref.try_send(RunNow())

    async def tick(self) -> None:
        self._flush_asked = False
        try:
            await self.flush()
        except psycopg.OperationalError as exc:
            self.failures += 1
            log.warning("%s flush failed (kept for the next one): %s", self.name, exc)

    async def main(self) -> None:
        try:
            await super().main()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH):
                try:
                    await self.flush()
                except psycopg.Error:
                    log.warning("final %s flush failed; %d records lost", self.name,
                                self.pending)
